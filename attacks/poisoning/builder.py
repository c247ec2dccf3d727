"""From ``[attack.poisoning]`` to the stages an attack adds to a run."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from privfl.attacks.poisoning.a_little_is_enough import ALittleIsEnough
from privfl.attacks.poisoning.base import PoisonedTrainer, PoisoningAttack
from privfl.attacks.poisoning.clean_twin import CleanTwin
from privfl.attacks.poisoning.config import Knowledge, PoisoningConfig, PoisoningMethod
from privfl.attacks.poisoning.detection import DetectionScorer
from privfl.attacks.poisoning.free_rider import FreeRider
from privfl.attacks.poisoning.gaussian_noise import GaussianNoise
from privfl.attacks.poisoning.inner_product_manipulation import InnerProductManipulation
from privfl.attacks.poisoning.label_flipping import LabelFlipping
from privfl.attacks.poisoning.min_max import MinMax
from privfl.attacks.poisoning.min_sum import MinSum
from privfl.attacks.poisoning.model_replacement import ModelReplacement
from privfl.attacks.poisoning.sign_flipping import SignFlipping
from privfl.attacks.poisoning.threat import PoisoningThreat, choose_malicious
from privfl.pipeline import Contribution, Slot
from privfl.registry import Registry

if TYPE_CHECKING:
    from privfl.client import LocalTrainer
    from privfl.pipeline import RunSetup
    from privfl.stages import Aggregator, Scorer

log = logging.getLogger(__name__)


#: Every ``[attack.poisoning] method``; the key is each class's ``method`` attribute.
POISONING_ATTACKS: Registry[PoisoningMethod, type[PoisoningAttack]] = Registry.by_attribute(
    "attack.poisoning method",
    "method",
    (
        LabelFlipping,
        SignFlipping,
        GaussianNoise,
        ModelReplacement,
        ALittleIsEnough,
        InnerProductManipulation,
        MinMax,
        MinSum,
        FreeRider,
    ),
)


def threat_model(config: PoisoningConfig, setup: RunSetup) -> PoisoningThreat:
    """The run's adversary: ``fraction`` of the registered clients, drawn from the stream
    ``(seed, "poisoning", "malicious")``."""
    n = setup.data.num_clients
    return PoisoningThreat(
        malicious=choose_malicious(setup.config.seed, n, config.fraction),
        num_clients=n,
        start_round=config.start_round,
        knowledge=Knowledge(config.knowledge),
    )


def poisoning_stages(
    config: PoisoningConfig, setup: RunSetup, *, aggregator: Aggregator
) -> Contribution:
    """The stages of the attack of ``config``: the trainer wrapped for data-level attacks, the
    update-level transform in the ``POISON`` slot (last: attackers send what they like), the
    attack's evaluators, and the scorers (true attackers and detection figures against
    ``aggregator``, the run's rule; the clean twin when ``clean_twin``)."""
    threat = threat_model(config, setup)
    log.info("poisoning: %s by clients %s", config.method, threat.malicious.tolist())
    parts = POISONING_ATTACKS[PoisoningMethod(config.method)].build(config, threat, setup)
    wrap = None
    if parts.data is not None:
        data, seed = parts.data, setup.config.seed

        def wrap(trainer: LocalTrainer) -> LocalTrainer:
            return PoisonedTrainer(trainer, threat, data, seed)

    flags = bool(getattr(aggregator, "flags_clients", False))
    scorers: list[Scorer] = [DetectionScorer(threat, flags)]
    if config.clean_twin:
        scorers.append(CleanTwin(setup))
    transforms = () if parts.transform is None else ((Slot.POISON, parts.transform),)
    return Contribution(
        wrap_trainer=wrap,
        client_transforms=transforms,
        evaluators=tuple(parts.evaluators),
        scorers=tuple(scorers),
        threat=threat,
    )


__all__ = ["POISONING_ATTACKS", "poisoning_stages", "threat_model"]
