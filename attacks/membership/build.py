"""From ``[attack.membership]`` to the run's end attack (called by ``privfl.plan``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from privfl.attacks.membership.attack import Population, run_membership
from privfl.attacks.membership.config import MembershipConfig
from privfl.attacks.membership.plot import plot_roc
from privfl.attacks.membership.threat import MembershipThreat
from privfl.data.federated import federated_subset
from privfl.pipeline import Contribution, RunEnd
from privfl.seeding import derive_seed

if TYPE_CHECKING:
    from privfl.config import Config
    from privfl.pipeline import RunSetup

logger = logging.getLogger(__name__)


def shadow_config(config: Config) -> Config:
    """The recipe a shadow federation trains with: the run's config without its attacks and
    audit, without secure aggregation or HE (they change who sees the updates, not the model
    they sum to), evaluated only at its last round."""
    rounds = config.federation.rounds
    return config.model_copy(
        update={
            "attack": type(config.attack)(),
            "audit": None,
            "defense": config.defense.model_copy(update={"secagg": None, "he": None}),
            "evaluation": config.evaluation.model_copy(
                update={"every": rounds, "federated_every": 0}
            ),
        }
    )


def membership_stages(cfg: MembershipConfig, config: Config, setup: RunSetup) -> Contribution:
    """The membership attack on the released model, run once the training ends; its record
    joins ``attacks.json``."""
    data = setup.data
    bundle = data.bundle
    held = np.concatenate([np.asarray(i, dtype=np.int64) for i in data.partition.indices])
    pop = Population.of(bundle.train.x, bundle.train.y, bundle.test.x, bundle.test.y, held)
    recipe = shadow_config(config)
    rounds = config.federation.rounds

    def train_shadow(ids: np.ndarray, seed: int):
        if setup.spawn is None:
            raise RuntimeError("membership shadows need RunSetup.spawn")
        shadow_data = federated_subset(config.data, pop.x[ids], pop.y[ids], bundle, seed)
        runner = setup.spawn(recipe.model_copy(update={"seed": seed}), shadow_data)
        while runner.round < rounds:
            runner.run_round()
        return setup.model_with(runner.params)

    def attack(end: RunEnd) -> list[dict[str, Any]]:
        shadows = None if cfg.method == "loss" else train_shadow
        if shadows is not None:
            logger.info("membership: training %d shadow federations", cfg.shadow_models)
        result = run_membership(
            cfg, setup.model_with(end.params), pop, shadows, derive_seed(config.seed, "membership")
        )
        if end.folder is not None:
            label = cfg.method + (" (offline)" if cfg.method == "lira" and not cfg.online else "")
            plot_roc({label: result.roc}, end.folder.plot_path("membership_roc"), config.name)
        return [result.record]

    threat = MembershipThreat(cfg.method, 0 if cfg.method == "loss" else cfg.shadow_models)
    return Contribution(end_attacks=(attack,), threat=threat)
