"""From ``[attack.membership]`` to the run's end attack (called by ``privfl.plan``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from privfl.attacks.membership.attack import Population, run_membership
from privfl.attacks.membership.client import ClientMembershipObserver
from privfl.attacks.membership.config import MembershipConfig
from privfl.attacks.membership.metrics import Roc
from privfl.attacks.membership.plot import plot_roc
from privfl.attacks.membership.threat import MembershipThreat
from privfl.data.federated import federated_subset
from privfl.errors import ConfigError
from privfl.pipeline import Contribution, RunEnd
from privfl.seeding import derive_seed

if TYPE_CHECKING:
    from collections.abc import Callable

    from privfl.client import LocalTrainer
    from privfl.config import Config
    from privfl.pipeline import RunSetup

#: ``status`` of a client-target record whose round the run never reached.
NOT_REACHED = "not reached"

#: Why central DP does not hide a client's update from the server that adds the noise.
CENTRAL_DP_NOTE = (
    "central DP adds its noise on the server, after the server has received the updates: it "
    "protects the released model, not a client's update from this server"
)

logger = logging.getLogger(__name__)


def shadow_config(config: Config) -> Config:
    """The recipe a shadow federation trains with: the run's config without its attacks,
    audit and secure channels (:meth:`~privfl.config.DefenseConfig.without_secure_channels`),
    evaluated only at its last round, on the vectorized engine (the same
    training, the cohort as one batch; it hands models it cannot batch to the sequential
    loop)."""
    rounds = config.federation.rounds
    return config.model_copy(
        update={
            "federation": config.federation.model_copy(
                update={"engine": "vectorized", "ray": None}
            ),
            "attack": type(config.attack)(),
            "audit": None,
            "incentives": None,
            "defense": config.defense.without_secure_channels(),
            "evaluation": config.evaluation.model_copy(
                update={"every": rounds, "federated_every": 0}
            ),
        }
    )


def membership_stages(
    cfg: MembershipConfig,
    config: Config,
    setup: RunSetup,
    *,
    honest_trainer: Callable[[], LocalTrainer],
) -> Contribution:
    """The membership attack: on the released model once the training ends (``target =
    "global"``), or on one client's update in each attacked round (``"client"``); its records
    join ``attacks.json`` and their ROC curves ``plots/membership_roc.png``.

    Args:
        honest_trainer: builds the honest clients' trainer (what a client target's shadows
            replay).
    """
    threat = MembershipThreat(
        cfg.method, 0 if cfg.method == "loss" else cfg.shadow_models, target=cfg.target
    )
    if cfg.target == "client":
        rounds = cfg.rounds or [config.federation.rounds]
        late = [r for r in rounds if r > config.federation.rounds]
        if late:
            raise ConfigError(
                f"attack.membership.rounds {late} lie after the last round "
                f"({config.federation.rounds})"
            )
        dp = config.defense.dp
        observer = ClientMembershipObserver(
            cfg,
            rounds=frozenset(rounds),
            data=setup.data,
            trainer=honest_trainer,
            spec=setup.spec,
            make_model=setup.make_model,
            seed=derive_seed(config.seed, "membership"),
            notes=(CENTRAL_DP_NOTE,) if dp is not None and dp.mode == "central" else (),
        )

        def unreached(end: RunEnd) -> list[dict[str, Any]]:
            # rounds a budget stop (defense.dp.max_epsilon) or a shorter run never reached
            ran = int(end.metrics[-1]["round"]) if end.metrics else 0
            return [
                {
                    "attack": f"membership-{cfg.method}",
                    "target": "client",
                    "round": r,
                    "client": None,
                    "status": NOT_REACHED,
                    "auc": None,
                    "note": f"the run ended after round {ran}, before round {r}",
                }
                for r in sorted(rounds)
                if r > ran
            ]

        return Contribution(
            observers=(observer,),
            end_attacks=(unreached,),
            finishers=(plot_membership,),
            threat=threat,
        )
    data = setup.data
    bundle = data.bundle
    held = np.concatenate([np.asarray(i, dtype=np.int64) for i in data.partition.indices])
    pop = Population.of(bundle.train.x, bundle.train.y, bundle.test.x, bundle.test.y, held)
    shadow = {"recipe": shadow_config(config)}

    def train_shadow(ids: np.ndarray, seed: int):
        if setup.spawn is None:
            raise RuntimeError("membership shadows need RunSetup.spawn")
        shadow_data = federated_subset(config.data, pop.x[ids], pop.y[ids], bundle, seed)
        runner = setup.spawn(shadow["recipe"].model_copy(update={"seed": seed}), shadow_data)
        if getattr(getattr(runner, "engine", None), "falls_back", False):
            # the vectorized engine said why, once; the other shadows go straight to the loop
            fed = shadow["recipe"].federation.model_copy(update={"engine": "sequential"})
            shadow["recipe"] = shadow["recipe"].model_copy(update={"federation": fed})
        while not runner.done:  # its rounds, or until its own budget (max_epsilon) is spent
            runner.run_round()
        return setup.model_with(runner.params)

    def attack(end: RunEnd) -> list[dict[str, Any]]:
        shadows = None if cfg.method == "loss" else train_shadow
        if shadows is not None:
            logger.info("membership: training %d shadow federations", cfg.shadow_models)
        result = run_membership(
            cfg, setup.model_with(end.params), pop, shadows, derive_seed(config.seed, "membership")
        )
        return result.records

    return Contribution(end_attacks=(attack,), finishers=(plot_membership,), threat=threat)


def plot_membership(end: RunEnd) -> None:
    """``plots/membership_roc.png``: the log-log ROC of every membership record of the run
    (one per attacked round for a client target), read back from ``attacks.json``'s records."""
    if end.folder is None:
        return
    curves: dict[str, Roc] = {}
    for r in end.attacks:
        if not str(r.get("attack", "")).startswith("membership-") or r.get("auc") is None:
            continue
        label = r["attack"].removeprefix("membership-")
        if "offline" in r.get("variant", ""):
            label += " (offline)"
        if r.get("target") == "client":
            label += f", round {r['round']}, client {r['client']}"
        curves[label] = Roc.from_record(r)
    if curves:
        plot_roc(curves, end.folder.plot_path("membership_roc"), end.config.name)
