"""From ``[incentives]`` to the run's contribution observer (called by ``privfl.plan``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from privfl.errors import ConfigError
from privfl.incentives.config import IncentivesConfig
from privfl.incentives.observer import ContributionObserver
from privfl.pipeline import Contribution
from privfl.seeding import numpy_rng

if TYPE_CHECKING:
    from privfl.config import Config
    from privfl.pipeline import RunSetup


def validation_split(
    cfg: IncentivesConfig, setup: RunSetup, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The server's validation examples: ``validation_size`` of the test split, drawn
    uniformly from the stream ``(seed, "incentives", "validation")``. The model never trains
    on them and the contributions never change training, so test accuracy stays unbiased.

    Raises:
        ConfigError: more validation examples than the test split holds.
    """
    test = setup.data.bundle.test
    if cfg.validation_size > len(test.y):
        raise ConfigError(
            f"incentives.validation_size = {cfg.validation_size} exceeds the test split "
            f"({len(test.y)} examples)"
        )
    ids = numpy_rng(seed, "incentives", "validation").choice(
        len(test.y), cfg.validation_size, replace=False
    )
    idx = torch.from_numpy(np.sort(ids))
    return test.x[idx], test.y[idx]


def incentives_stages(
    cfg: IncentivesConfig, config: Config, setup: RunSetup, *, malicious: frozenset[int]
) -> Contribution:
    """The contribution observer and the finisher that writes ``contributions.json``.

    Args:
        malicious: the poisoning attack's clients (ground truth for the records only).
    """
    observer = ContributionObserver(
        cfg,
        validation=validation_split(cfg, setup, config.seed),
        make_model=setup.make_model,
        spec=setup.spec,
        num_clients=setup.data.num_clients,
        malicious=malicious,
        seed=config.seed,
    )
    return Contribution(observers=(observer,), finishers=(observer.finish,))


__all__ = ["incentives_stages", "validation_split"]
