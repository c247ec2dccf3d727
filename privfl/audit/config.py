"""``[audit]``: the empirical privacy audit with canary clients (imports only pydantic, so
``privfl.config`` can import it)."""

from __future__ import annotations

from pydantic import BaseModel, Field, PositiveFloat, PositiveInt

from privfl.config_rules import SECTION_CONFIG


class AuditConfig(BaseModel):
    """``[audit]``: one-shot empirical privacy estimation (Andrew et al. 2023): `canaries` random
    canary clients join the population, each sending its own fixed random direction whenever
    it is sampled; at the end the cosine of the final model delta with each inserted canary is
    compared with as many unseen canaries, and an empirical epsilon is reported next to the
    accountant's bound. It measures user-level privacy, so it does not apply to
    `defense.dp.mode = "sample"`."""

    model_config = SECTION_CONFIG

    canaries: PositiveInt = Field(100, description="canary clients inserted (and as many unseen)")
    norm: PositiveFloat | None = Field(
        None,
        description="L2 norm of a canary update (default: the DP clip norm; without DP, the "
        "median norm of the round's real updates)",
    )


__all__ = ["AuditConfig"]
