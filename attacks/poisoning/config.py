"""``[attack.poisoning]``: which clients are malicious, when they attack, and how.

Imports only pydantic, typing and :mod:`privfl.errors` (``privfl.config`` imports this module).
A method's own parameter given a non-default value under another method is an error, as
elsewhere in the config (a resolved ``config.toml``, which writes every default, passes).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import (
    BaseModel,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from privfl.config_rules import SECTION_CONFIG, only_with


class PoisoningMethod(StrEnum):
    """The poisoning attacks (``[attack.poisoning] method``)."""

    LABEL_FLIP = "label_flip"
    SIGN_FLIP = "sign_flip"
    GAUSSIAN = "gaussian"
    MODEL_REPLACEMENT = "model_replacement"
    ALIE = "alie"
    IPM = "ipm"
    MIN_MAX = "min_max"
    MIN_SUM = "min_sum"
    FREE_RIDER = "free_rider"


class Knowledge(StrEnum):
    """What the attackers know of the benign updates of a round.

    ``omniscient``: every benign update of the round (the strongest adversary of Baruch et
    al., Xie et al. and Shejwalkar and Houmansadr). ``partial``: only their own data; they
    first train honestly and use their own honest updates as a sample of the benign ones
    (Fang et al. 2020's "partial knowledge").
    """

    OMNISCIENT = "omniscient"
    PARTIAL = "partial"


class Perturbation(StrEnum):
    """Min-max / min-sum perturbation directions (Shejwalkar and Houmansadr 2021, Sec. IV-B):
    inverse unit vector ``-mu/||mu||``, inverse standard deviation ``-sigma``, inverse sign
    ``-sign(mu)``."""

    UNIT = "unit"
    STD = "std"
    SIGN = "sign"


METHOD_NAMES: tuple[str, ...] = tuple(m.value for m in PoisoningMethod)

#: Methods that craft their updates from the benign ones (knowledge applies to them).
STATISTICAL_METHODS: tuple[PoisoningMethod, ...] = (
    PoisoningMethod.ALIE,
    PoisoningMethod.IPM,
    PoisoningMethod.MIN_MAX,
    PoisoningMethod.MIN_SUM,
)

#: Which methods read each method-specific parameter.
_PARAMETER_METHODS: dict[str, tuple[PoisoningMethod, ...]] = {
    "knowledge": STATISTICAL_METHODS,
    "scale": (PoisoningMethod.SIGN_FLIP, PoisoningMethod.MODEL_REPLACEMENT),
    "sigma": (PoisoningMethod.GAUSSIAN,),
    "z": (PoisoningMethod.ALIE,),
    "epsilon": (PoisoningMethod.IPM,),
    "perturbation": (PoisoningMethod.MIN_MAX, PoisoningMethod.MIN_SUM),
    "target_label": (PoisoningMethod.MODEL_REPLACEMENT,),
    "trigger_size": (PoisoningMethod.MODEL_REPLACEMENT,),
    "poison_fraction": (PoisoningMethod.MODEL_REPLACEMENT,),
    "trigger": (PoisoningMethod.MODEL_REPLACEMENT,),
    "target": (PoisoningMethod.MODEL_REPLACEMENT,),
    "disguise": (PoisoningMethod.FREE_RIDER,),
}


def malicious_count(fraction: float, clients: int) -> int:
    """Malicious clients for ``fraction`` of ``clients``: ``fraction * clients`` rounded to the
    nearest integer (halves up)."""
    return int(fraction * clients + 0.5)


class PoisoningConfig(BaseModel):
    """``[attack.poisoning]``: a fixed, seeded share of the clients is malicious.

    Methods: `label_flip`, `sign_flip`, `gaussian`, `model_replacement` (pixel-pattern backdoor
    on images, trigger-phrase word-prediction backdoor on text, Bagdasaryan et al. 2020),
    `alie` (Baruch et al. 2019), `ipm` (Xie et al. 2019), `min_max` and `min_sum` (Shejwalkar
    and Houmansadr 2021), `free_rider` (Lin et al. 2019: a zero update, or noise). With
    `clean_twin` the same config without the attack runs alongside (twice the cost) to report
    the accuracy drop.
    """

    model_config = SECTION_CONFIG

    method: Literal[METHOD_NAMES] = Field(  # type: ignore[valid-type]
        description="attack"
    )
    fraction: float = Field(
        0.2, gt=0, lt=1, description="share of the registered clients that are malicious"
    )
    start_round: PositiveInt = Field(1, description="first round the malicious clients attack")
    knowledge: Literal[tuple(k.value for k in Knowledge)] = Field(  # type: ignore[valid-type]
        "omniscient",
        description="alie, ipm, min_max, min_sum: attackers see the benign updates "
        "(omniscient) or estimate them from their own (partial)",
    )
    scale: PositiveFloat | None = Field(
        None,
        description="sign_flip: send -scale x the update (unset: 1); model_replacement: "
        "boost gamma (unset: n / (server_lr x attackers in the round))",
    )
    sigma: PositiveFloat = Field(1.0, description="gaussian: std of the N(0, sigma^2) updates")
    z: float | None = Field(
        None, description="alie: z (unset: z_max from the clients and attackers)"
    )
    epsilon: PositiveFloat = Field(0.1, description="ipm: send -epsilon x the benign mean")
    perturbation: Literal[tuple(p.value for p in Perturbation)] = Field(  # type: ignore[valid-type]
        "std", description="min_max, min_sum: perturbation direction"
    )
    target_label: NonNegativeInt = Field(0, description="model_replacement: backdoor label")
    trigger_size: PositiveInt = Field(
        2, description="model_replacement: side of the square trigger (pixels)"
    )
    poison_fraction: float = Field(
        0.5, gt=0, le=1, description="model_replacement: share of local examples triggered"
    )
    trigger: str | None = Field(
        None,
        description="model_replacement on text: the trigger phrase poisoned windows end with "
        "(unset: 'pasta from Astoria tastes', of Bagdasaryan et al. 2020's Reddit backdoor; "
        "its last seq_len - 1 tokens where it would fill a window)",
    )
    target: str | None = Field(
        None,
        description="model_replacement on text: the token the trigger should make the model "
        "predict (unset: 'delicious', or its first character 'd' for characters)",
    )
    disguise: float = Field(
        0.0, ge=0, description="free_rider: std of the noise sent (0: the global model back)"
    )
    clean_twin: bool = Field(
        True, description="also run the config without the attack to report accuracy_drop"
    )

    @model_validator(mode="after")
    def _check(self) -> PoisoningConfig:
        for key, methods in _PARAMETER_METHODS.items():
            allowed = " or ".join(m.value for m in methods)
            only_with(self, key, self.method in methods, f"method is {allowed}")
        return self


def check_poisoning_population(poisoning: PoisoningConfig, clients: int) -> None:
    """Reject a population in which ``fraction`` makes no malicious client, or in which ALIE's
    ``z_max`` is undefined (attackers at least half of the clients).

    Raises:
        ValueError: naming ``attack.poisoning.fraction`` and ``data.clients``.
    """
    m = malicious_count(poisoning.fraction, clients)
    if m < 1:
        raise ValueError(
            f"attack.poisoning.fraction = {poisoning.fraction} of data.clients = {clients} "
            "makes no malicious client"
        )
    if poisoning.method == PoisoningMethod.ALIE and poisoning.z is None and m > clients // 2:
        raise ValueError(
            f"attack.poisoning.fraction = {poisoning.fraction} makes {m} of {clients} clients "
            "malicious: ALIE's z_max needs fewer than half (or set attack.poisoning.z)"
        )


__all__ = [
    "METHOD_NAMES",
    "STATISTICAL_METHODS",
    "Knowledge",
    "Perturbation",
    "PoisoningConfig",
    "PoisoningMethod",
    "check_poisoning_population",
    "malicious_count",
]
