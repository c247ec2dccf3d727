"""From ``[attack.inversion]`` to an :class:`InversionObserver` (called by ``privfl.plan``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from privfl.attacks.inversion.config import InversionConfig, InversionMethod
from privfl.attacks.inversion.labels import find_final_layer
from privfl.attacks.inversion.observer import AttackSettings, InversionObserver
from privfl.attacks.inversion.text import (
    TokenAttackSettings,
    TokenLeakObserver,
    check_text_options,
    find_embedding,
)
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
    train = getattr(bundle, "train", None)  # text: int64 token inputs (the text contract)
    method = _resolve_method(cfg, config, train is not None and train.x.dtype == torch.int64)
    if method == InversionMethod.TOKENS:
        return _token_observer(cfg, config, setup, training)
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


def _resolve_method(cfg: InversionConfig, config: Config, text: bool) -> InversionMethod:
    """``method``, with ``auto`` resolved by the data (``tokens`` on int64 token inputs,
    ``idlg`` on images), checked against the data's kind.

    Raises:
        ConfigError: an image attack on text, the token attack (or its ``token_fpr``) on
            images, or an image-only option on text.
    """
    method = InversionMethod(cfg.method)
    name = config.data.name
    if method == InversionMethod.AUTO:
        method = InversionMethod.TOKENS if text else InversionMethod.IDLG
    if text and method != InversionMethod.TOKENS:
        raise ConfigError(
            f"attack.inversion.method = '{method.value}' reconstructs images by optimizing "
            f"continuous inputs; {name} is text (int64 tokens): use method = 'tokens' (or "
            "leave method unset)"
        )
    if not text and method == InversionMethod.TOKENS:
        raise ConfigError(
            f"attack.inversion.method = 'tokens' reads a token embedding's update; {name} is "
            "not text (float inputs): use dlg, idlg or ig"
        )
    if not text and "token_fpr" in cfg.model_fields_set and cfg.token_fpr != 0.05:
        raise ConfigError(
            f"attack.inversion.token_fpr applies only to the token attack on text; {name} is "
            "not text"
        )
    if text:
        check_text_options(cfg, name)
    return method


def _token_observer(
    cfg: InversionConfig, config: Config, setup: RunSetup, training: LocalTraining
) -> InversionObserver:
    """The embedding-gradient token attack (:mod:`privfl.attacks.inversion.text`) for a run
    on text data; the server knows from the protocol whether the updates carry noise."""
    bundle = setup.data.bundle
    try:
        find_embedding(setup.make_model())
    except PrivflError as e:
        raise ConfigError(f"attack.inversion.method = 'tokens': {e}") from None
    dp = config.defense.model_dump().get("dp")
    mode = dp.get("mode") if isinstance(dp, dict) else None
    vocab = getattr(bundle, "vocab", None)
    return TokenLeakObserver(
        rounds=frozenset(cfg.rounds),
        max_targets=cfg.max_targets,
        threat=InversionThreat(
            training=training,
            input_shape=bundle.input_shape,
            num_classes=bundle.num_classes,
            input_range=(0.0, float(bundle.num_classes - 1)),  # token ids (vocabulary size)
        ),
        seed=config.seed,
        token=TokenAttackSettings(
            noisy=mode in ("sample", "local", "distributed") or cfg.noise != "none",
            fpr=cfg.token_fpr,
            schedule_known=mode != "sample",
        ),
        decode=None if vocab is None else vocab.decode,
        notes=_view_notes(config),
        noise=cfg.noise,
        noise_variance=cfg.noise_variance,
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
