"""From ``[attack.inversion]`` to an :class:`InversionObserver` (called by ``privfl.plan``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfl.attacks.inversion.config import InversionConfig, InversionMethod
from privfl.attacks.inversion.labels import find_final_layer
from privfl.attacks.inversion.observer import AttackSettings, InversionObserver
from privfl.attacks.inversion.threat import InversionThreat
from privfl.errors import ConfigError, PrivflError

if TYPE_CHECKING:
    from privfl.client import LocalTraining
    from privfl.config import Config
    from privfl.pipeline import RunSetup

#: Added to every record when the run uses central DP (the ``[defense.dp]`` hook).
CENTRAL_DP_NOTE = (
    "central DP adds its noise on the server, after the server has received the updates: it "
    "protects the released model from third parties, not the clients' updates from this "
    "server, so this attack is expected to succeed"
)


def create_inversion_observer(
    cfg: InversionConfig, config: Config, setup: RunSetup, training: LocalTraining
) -> InversionObserver:
    """The observer ``cfg`` asks for, checked against the run it will watch.

    Args:
        cfg: the ``[attack.inversion]`` section.
        config: the whole run config (rounds, defenses).
        setup: the run's data and model factory.
        training: the local training every client runs (known to the server).

    Raises:
        ConfigError: a listed round never happens, or the model cannot be attacked with the
            chosen method (label recovery without a final linear layer).
    """
    late = [r for r in cfg.rounds if r > config.federation.rounds]
    if late:
        raise ConfigError(
            f"attack.inversion.rounds lists {late}, after the run's last round "
            f"(federation.rounds = {config.federation.rounds})"
        )
    bundle = setup.data.bundle
    method = InversionMethod(cfg.method)
    if method in (InversionMethod.IDLG, InversionMethod.IG):
        try:
            find_final_layer(setup.make_model(), bundle.num_classes)
        except PrivflError as e:
            raise ConfigError(f"attack.inversion.method = '{method.value}': {e}") from None
    if method == InversionMethod.IG and cfg.tv > 0 and len(bundle.input_shape) != 3:
        raise ConfigError(
            f"attack.inversion.tv: the total-variation prior needs images (C, H, W); "
            f"{config.data.name} has inputs {bundle.input_shape}; set tv = 0"
        )
    threat = InversionThreat(
        training=training, input_shape=bundle.input_shape, num_classes=bundle.num_classes
    )
    return InversionObserver(
        method=method,
        settings=AttackSettings(
            iterations=cfg.resolved_iterations,
            lr=cfg.resolved_lr,
            restarts=cfg.restarts,
            tv=cfg.tv,
            threads=cfg.threads,
            replay=cfg.replay,
        ),
        rounds=frozenset(cfg.rounds),
        max_targets=cfg.max_targets,
        threat=threat,
        seed=config.seed,
        notes=_view_notes(config),
        noise=cfg.noise,
        noise_variance=cfg.noise_variance,
        images=cfg.images,
    )


def _view_notes(config: Config) -> tuple[str, ...]:
    """Sentences explaining what the run's defenses do to the server's view.

    ``[defense.dp]`` is added by the DP issue; until it is merged the section does not exist
    and this returns nothing. With ``mode = "central"`` the noise is added after the view.
    """
    dp = config.defense.model_dump().get("dp")
    if isinstance(dp, dict) and dp.get("mode") == "central":
        return (CENTRAL_DP_NOTE,)
    return ()


__all__ = ["CENTRAL_DP_NOTE", "create_inversion_observer"]
