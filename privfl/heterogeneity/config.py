"""``[federation.heterogeneity]``: unequal local work, device speeds, a round deadline and
FedNova (imports only pydantic, typing and the standard library, so privfl.config can import
it without cycles)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, PositiveFloat, PositiveInt, field_validator

from privfl.config_rules import SECTION_CONFIG

_UNIFORM = re.compile(r"^\s*uniform\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*$")


@dataclass(frozen=True)
class StepsDistribution:
    """Local SGD steps of a client in a round: an integer drawn uniformly from
    ``low..high`` (both included)."""

    low: int
    high: int

    def draw(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))


def parse_steps(spec: int | str) -> StepsDistribution:
    """``5`` -> always 5 steps; ``"uniform(1, 20)"`` -> 1..20 uniformly.

    Raises:
        ValueError: naming the accepted forms.
    """
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"local_steps must be >= 1, got {spec}")
        return StepsDistribution(spec, spec)
    m = _UNIFORM.match(spec)
    if m is None:
        raise ValueError(
            f"local_steps must be a positive integer or 'uniform(a, b)' with integers "
            f"1 <= a <= b, got {spec!r}"
        )
    low, high = int(m.group(1)), int(m.group(2))
    if not 1 <= low <= high:
        raise ValueError(f"local_steps 'uniform(a, b)' needs 1 <= a <= b, got {spec!r}")
    return StepsDistribution(low, high)


class HeterogeneityConfig(BaseModel):
    """``[federation.heterogeneity]``: clients do unequal local work at unequal speeds; a
    deadline drops the stragglers; FedNova (Wang et al. 2020) normalizes the rest."""

    model_config = SECTION_CONFIG

    local_steps: PositiveInt | str | None = Field(
        None,
        description="local SGD steps per client and round: an integer or 'uniform(a, b)' "
        "(drawn per client and round); unset: federation's local_epochs/local_steps",
    )
    speeds: list[PositiveFloat] | None = Field(
        None,
        description="device speeds in steps per simulated second; client c has "
        "speeds[c % len(speeds)] (unset: 1 for all)",
    )
    deadline: PositiveFloat | None = Field(
        None, description="simulated seconds a round waits; slower clients are dropped"
    )
    normalization: Literal["none", "fednova"] = Field(
        "none", description="'fednova': normalize each update by its local steps (Wang et al. 2020)"
    )

    @field_validator("local_steps")
    @classmethod
    def _steps(cls, v: Any) -> Any:
        if isinstance(v, str):
            parse_steps(v)
        return v

    @property
    def fednova(self) -> bool:
        return self.normalization == "fednova"

    def steps_distribution(self) -> StepsDistribution | None:
        return None if self.local_steps is None else parse_steps(self.local_steps)

    def speed_of(self, client: int) -> float:
        """Client ``client``'s speed (steps per simulated second)."""
        return 1.0 if not self.speeds else float(self.speeds[client % len(self.speeds)])


__all__ = ["HeterogeneityConfig", "StepsDistribution", "parse_steps"]
