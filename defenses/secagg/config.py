"""``[defense.secagg]``: the configuration of secure aggregation (pydantic; imports nothing
from privfl.config, which imports this)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, PositiveFloat, PositiveInt, model_validator

from privfl.config_rules import SECTION_CONFIG, only_with
from privfl.defenses.quantize import MAX_MODULUS_BITS
from privfl.defenses.secagg.graph import secaggplus_parameters

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
        description="fraction of clients assumed to collude with the server (SecAgg+: "
        "neighbours = 'auto' or an even k; the smallest safe k is computed from it)",
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
    allow_insecure: bool = Field(
        False,
        description="research switch (explicit neighbours = k only): accept a k below the "
        "smallest safe degree and let rounds whose survivors' masking graph is split "
        "complete, so that the server learns each part's sum; the report says so",
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
        explicit = isinstance(self.neighbours, int)
        only_with(self, "threshold", not auto, "neighbours is not 'auto' (auto derives t)")
        only_with(
            self, "corruption", auto or explicit, "neighbours is 'auto' or an even k (SecAgg+)"
        )
        only_with(
            self,
            "allow_insecure",
            explicit,
            "neighbours is an even k (only an explicit k can be below the safe degree)",
        )
        return self


def check_secagg_degree(secagg: SecAggConfig, cohort: int) -> None:
    """Refuse an explicit SecAgg+ degree below the smallest safe one for ``cohort`` clients
    a round (``federation.clients_per_round``); see :func:`secagg_degree_problem`.

    Raises:
        ValueError: one line naming the smallest safe ``k`` and the two ways out.
    """
    problem = secagg_degree_problem(secagg, cohort)
    if problem is not None:
        raise ValueError(problem)


def secagg_degree_problem(secagg: SecAggConfig, cohort: int) -> str | None:
    """Why an explicit SecAgg+ degree ``k`` is refused, or None: ``k`` is below the smallest
    safe one for ``cohort`` clients a round (``federation.clients_per_round``; under Poisson
    sampling, the expected cohort), the ``k`` that ``neighbours = "auto"`` computes for the
    same cohort, dropout and corruption (:func:`secaggplus_parameters`, after Bell et al.,
    CCS 2020; the complete graph when no smaller degree meets the bounds).

    Below it, dropouts split the survivors' masking graph far more often (each round that
    splits then aborts) and the share-holder neighbourhoods are too small for the privacy and
    correctness bounds. Nothing is checked when ``allow_insecure`` is set, when ``neighbours``
    is ``"all"`` or ``"auto"``, or when ``k >= cohort - 1`` (the complete graph).

    Returns:
        None, or one line naming the smallest safe ``k`` and the two ways out.
    """
    k = secagg.neighbours
    if secagg.allow_insecure or not isinstance(k, int) or cohort < 2 or k >= cohort - 1:
        return None
    safe = secaggplus_parameters(cohort, dropout=secagg.dropout, corruption=secagg.corruption)
    if k >= safe.k:
        return None
    complete = safe.k >= cohort - 1
    fix = "neighbours = 'all'" if complete else f"neighbours = 'auto' or an even k >= {safe.k}"
    return (
        f"defense.secagg.neighbours = {k} is below the smallest safe degree k = {safe.k}"
        f"{' (the complete graph)' if complete else ''} for a cohort of {cohort} at dropout "
        f"{secagg.dropout:g} and corruption {secagg.corruption:g} (Bell et al. 2020): too few "
        "share-holders for the collusion and dropout bounds, and dropouts would often split "
        f"the survivors' masking graph; use {fix}, or set defense.secagg.allow_insecure = "
        "true to study the leak"
    )


__all__ = ["MIN_BITS", "SecAggConfig", "check_secagg_degree", "secagg_degree_problem"]
