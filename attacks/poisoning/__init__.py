"""Model poisoning: a fixed, seeded share of the clients is malicious.

Update-level attacks are client transforms that rewrite the malicious rows of a round's
``(n, d)`` batch; data-level attacks wrap the local trainer. ``poisoning_stages`` wires an
``[attack.poisoning]`` section into a run's stages.
"""

from privfl.attacks.poisoning.a_little_is_enough import ALittleIsEnough, a_little_is_enough
from privfl.attacks.poisoning.backdoor import AttackSuccessRate, PixelPatternBackdoor
from privfl.attacks.poisoning.base import (
    DataPoisoning,
    PoisonedTrainer,
    PoisoningParts,
    UpdatePoisoning,
)
from privfl.attacks.poisoning.builder import POISONING_ATTACKS, poisoning_stages, threat_model
from privfl.attacks.poisoning.clean_twin import CleanTwin
from privfl.attacks.poisoning.config import Knowledge, PoisoningConfig, PoisoningMethod
from privfl.attacks.poisoning.detection import DetectionScorer, detection_scores
from privfl.attacks.poisoning.gaussian_noise import GaussianNoise, gaussian_noise
from privfl.attacks.poisoning.inner_product_manipulation import (
    InnerProductManipulation,
    inner_product_manipulation,
)
from privfl.attacks.poisoning.label_flipping import LabelFlipping, flip_labels
from privfl.attacks.poisoning.min_max import MinMax, min_max
from privfl.attacks.poisoning.min_sum import MinSum, min_sum
from privfl.attacks.poisoning.model_replacement import ModelReplacement, replacement_boost
from privfl.attacks.poisoning.sign_flipping import SignFlipping, sign_flipping
from privfl.attacks.poisoning.threat import PoisoningThreat, choose_malicious

__all__ = [
    "POISONING_ATTACKS",
    "ALittleIsEnough",
    "AttackSuccessRate",
    "CleanTwin",
    "DataPoisoning",
    "DetectionScorer",
    "GaussianNoise",
    "InnerProductManipulation",
    "Knowledge",
    "LabelFlipping",
    "MinMax",
    "MinSum",
    "ModelReplacement",
    "PixelPatternBackdoor",
    "PoisonedTrainer",
    "PoisoningConfig",
    "PoisoningMethod",
    "PoisoningParts",
    "PoisoningThreat",
    "SignFlipping",
    "UpdatePoisoning",
    "a_little_is_enough",
    "poisoning_stages",
    "choose_malicious",
    "detection_scores",
    "flip_labels",
    "gaussian_noise",
    "inner_product_manipulation",
    "min_max",
    "min_sum",
    "replacement_boost",
    "sign_flipping",
    "threat_model",
]
