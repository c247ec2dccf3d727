"""``[defense.secagg]``: the configuration of secure aggregation (pydantic; imports nothing
from privfl.config, which imports this)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, PositiveFloat, PositiveInt, model_validator

from privfl.config_rules import SECTION_CONFIG, only_with
from privfl.defenses.quantize import MAX_MODULUS_BITS

MIN_BITS = 16


class SecAggConfig(BaseModel):
    """``[defense.secagg]``: secure aggregation with pairwise masks (Bonawitz et al. 2017),
    optionally on a SecAgg+ k-regular graph (Bell et al. 2020).

    The server sees only masked vectors and the weighted mean of the survivors' updates.
    Each client clips its update to ``[-clip, clip]``, scales it by ``weight / max_weight``,
    encodes it in ``Z_{2^bits}`` with room for the cohort's sum, and sends the scaled weight
    as one more slot.
    """

    model_config = SECTION_CONFIG

    threshold: float = Field(
        0.6,
        description="fraction of a client's share-holders (its neighbours and itself) needed "
        "to rebuild its secrets: t = ceil(threshold x holders), in (0.5, 1]",
    )
    neighbours: Literal["all", "auto"] | PositiveInt = Field(
        "all",
        description="'all': every pair masks (Bonawitz et al.); an even k: SecAgg+ random "
        "k-regular Harary graph; 'auto': k and t derived from the cohort size, dropout and "
        "corruption (Bell et al. 2020)",
    )
    corruption: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="fraction of clients assumed to collude with the server (neighbours = "
        "'auto' only)",
    )
    clip: PositiveFloat = Field(1.0, description="each update value is clipped to [-clip, clip]")
    bits: int = Field(
        32,
        ge=MIN_BITS,
        le=MAX_MODULUS_BITS,
        description="the ring Z_{2^bits} the masked vectors live in",
    )
    rounding: Literal["nearest", "stochastic"] = Field(
        "nearest", description="fixed-point rounding; 'stochastic' is unbiased"
    )
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="fraction of each round's clients that vanish, each at a random stage "
        "of the protocol (simulated)",
    )
    max_weight: PositiveFloat | None = Field(
        None,
        description="the largest client weight; weights are scaled by 1 / max_weight "
        "(unset: the largest client's example count)",
    )

    @model_validator(mode="after")
    def _check(self) -> SecAggConfig:
        if not 0.5 < self.threshold <= 1:
            raise ValueError(
                f"threshold must be in (0.5, 1], got {self.threshold}: with t at most half "
                "of the share-holders, a server that lies about who dropped can collect "
                "shares of both of a client's secrets from disjoint halves and unmask it"
            )
        if isinstance(self.neighbours, int) and self.neighbours % 2:
            raise ValueError(
                f"neighbours must be 'all', 'auto' or an even number (the degree of a "
                f"Harary graph), got {self.neighbours}"
            )
        auto = self.neighbours == "auto"
        only_with(self, "threshold", not auto, "neighbours is not 'auto' (auto derives t)")
        only_with(self, "corruption", auto, "neighbours = 'auto'")
        return self


__all__ = ["MIN_BITS", "SecAggConfig"]
