"""``[defense.robust]``: which robust aggregation rule replaces the weighted mean, and its
parameters.

Imports only pydantic, typing and :mod:`privfl.errors` (``privfl.config`` imports this module).
A rule's own parameter given a non-default value under another rule is an error, as elsewhere
in the config (a resolved ``config.toml``, which writes every default, passes).
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


class RobustRule(StrEnum):
    """The robust aggregation rules (``[defense.robust] rule``)."""

    KRUM = "krum"
    MULTI_KRUM = "multi_krum"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed_mean"
    BULYAN = "bulyan"
    NORM_BOUND = "norm_bound"
    CENTERED_CLIP = "centered_clip"
    FLTRUST = "fltrust"


RULE_NAMES: tuple[str, ...] = tuple(r.value for r in RobustRule)

#: Which rules read each rule-specific parameter.
_PARAMETER_RULES: dict[str, tuple[RobustRule, ...]] = {
    "f": (RobustRule.KRUM, RobustRule.MULTI_KRUM, RobustRule.BULYAN),
    "m": (RobustRule.MULTI_KRUM,),
    "trim": (RobustRule.TRIMMED_MEAN,),
    "norm": (RobustRule.NORM_BOUND,),
    "tau": (RobustRule.CENTERED_CLIP,),
    "iterations": (RobustRule.CENTERED_CLIP,),
    "root_size": (RobustRule.FLTRUST,),
}


def min_cohort(rule: RobustRule | str, f: int) -> int:
    """The fewest updates a round must deliver for ``rule`` to tolerate ``f`` Byzantine ones:
    ``2f + 3`` for Krum and Multi-Krum (Blanchard et al. 2017 need ``n > 2f + 2``),
    ``4f + 3`` for Bulyan (El Mhamdi et al. 2018), 1 otherwise."""
    rule = RobustRule(rule)
    if rule in (RobustRule.KRUM, RobustRule.MULTI_KRUM):
        return 2 * f + 3
    if rule is RobustRule.BULYAN:
        return 4 * f + 3
    return 1


class RobustConfig(BaseModel):
    """``[defense.robust]``: a robust rule replaces the weighted mean (FedAvg).

    Rules: `krum`, `multi_krum` (Blanchard et al. 2017), `median`, `trimmed_mean` (Yin et al.
    2018), `bulyan` (El Mhamdi et al. 2018), `norm_bound` (Sun et al. 2019), `centered_clip`
    (Karimireddy et al. 2021), `fltrust` (Cao et al. 2021). They need every client's update in
    plaintext, so they cannot be combined with secure aggregation or HE.
    """

    model_config = SECTION_CONFIG

    rule: Literal[RULE_NAMES] = Field(  # type: ignore[valid-type]
        description="aggregation rule"
    )
    f: NonNegativeInt = Field(
        1, description="krum, multi_krum, bulyan: Byzantine updates tolerated per round"
    )
    m: PositiveInt | None = Field(
        None, description="multi_krum: updates averaged (unset: n - f of the round)"
    )
    trim: float = Field(
        0.2, ge=0, lt=0.5, description="trimmed_mean: share cut from each end per coordinate"
    )
    norm: PositiveFloat = Field(1.0, description="norm_bound: largest L2 norm M of an update")
    tau: PositiveFloat = Field(1.0, description="centered_clip: clipping radius tau")
    iterations: PositiveInt = Field(1, description="centered_clip: clipping iterations L")
    root_size: PositiveInt = Field(
        100, description="fltrust: server root examples, drawn from the train split"
    )

    @model_validator(mode="after")
    def _check(self) -> RobustConfig:
        for key, rules in _PARAMETER_RULES.items():
            allowed = " or ".join(r.value for r in rules)
            only_with(self, key, self.rule in rules, f"rule is {allowed}")
        return self


def check_robust_cohort(robust: RobustConfig, clients_per_round: int) -> None:
    """Reject a cohort too small for the rule's ``f`` (a config-time check; rounds that lose
    clients are checked again when aggregated).

    Raises:
        ValueError: naming ``defense.robust.f`` and ``federation.clients_per_round``.
    """
    need = min_cohort(robust.rule, robust.f)
    if clients_per_round < need:
        raise ValueError(
            f"defense.robust.f = {robust.f} with rule = '{robust.rule}' needs at least {need} "
            f"clients a round, got federation.clients_per_round = {clients_per_round}"
        )
    if robust.m is not None and robust.m > clients_per_round:
        raise ValueError(
            f"defense.robust.m = {robust.m} exceeds federation.clients_per_round = "
            f"{clients_per_round}"
        )


__all__ = [
    "RULE_NAMES",
    "RobustConfig",
    "RobustRule",
    "check_robust_cohort",
    "min_cohort",
]
