"""``[defense.dp]``: differential privacy (imports only pydantic, typing and privfl.errors, so
that ``privfl.config`` can import it without cycles or heavy dependencies)."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, PositiveFloat, field_validator, model_validator

from privfl.config_rules import SECTION_CONFIG, only_with

#: Conditional rounding's default beta, exp(-1/2) (the reference code's DEFAULT_BETA;
#: repeated here because this module imports nothing heavy).
DDG_DEFAULT_BETA = math.exp(-0.5)


class DPMode(StrEnum):
    """Where the noise is added, and so what is protected."""

    SAMPLE = "sample"  # DP-SGD inside every client: protects each training example
    CENTRAL = "central"  # DP-FedAvg at the server: protects each user in the released models
    LOCAL = "local"  # each client noises its own update: protects each user, even from the server
    DISTRIBUTED = "distributed"  # discrete Gaussian shares summed inside secure aggregation
    FTRL = "ftrl"  # DP-FTRL: tree-aggregation noise, no sampling (Kairouz et al. 2021)


class DPConfig(BaseModel):
    """``[defense.dp]``: differential privacy, where the noise is added (`mode`) and how much
    (`noise_multiplier`, or `target_epsilon` to calibrate it at `delta`).

    `mode = "sample"`: DP-SGD inside every client (Opacus; per-example clipping to `clip`,
    Poisson lots). `mode = "central"`: DP-FedAvg (McMahan et al. 2018): clients are
    Poisson-sampled at q = clients_per_round / clients, each update clipped to `clip`, Gaussian
    noise on the sum, fixed denominator q*N; `adaptive` clipping follows Andrew et al. 2021.
    `mode = "local"`: each client clips and noises its own update before it leaves. A target
    epsilon is calibrated over the most steps a party takes in the run. `mode = "ftrl"`: DP-FTRL
    (Kairouz et al. 2021): no sampling, tree-aggregation noise on the prefix sums of the
    clipped updates, accounted on the run's participation pattern.

    `secure_rng = false` (the default) draws the noise from streams seeded by the config's
    `seed`: reproducible, so anyone holding `config.toml` can regenerate the noise and subtract
    it; `true` draws the noise, central DP's Poisson cohorts and DP-SGD's lots from the
    operating system's secure generator (fresh on every draw; runs no longer repeat).
    """

    model_config = SECTION_CONFIG

    mode: Literal["sample", "central", "local", "distributed", "ftrl"] = Field(
        description="sample: DP-SGD per example; central: DP-FedAvg per user; local: per user, "
        "noised on the client; distributed: per user, discrete Gaussian shares inside secure "
        "aggregation; ftrl: per user, tree-aggregation noise without sampling"
    )
    noise_multiplier: float | None = Field(
        None, description="sigma: noise std / clip (>= 0; 0 voids the guarantee)"
    )
    target_epsilon: PositiveFloat | None = Field(
        None, description="calibrate sigma to this epsilon at `delta` (instead of sigma)"
    )
    clip: PositiveFloat = Field(
        1.0, description="L2 bound: per-example gradient (sample) or per-client update"
    )
    delta: float = Field(1e-5, description="target delta, in (0, 1)")
    max_epsilon: PositiveFloat | None = Field(
        None,
        description="stop at this budget: no round spends past it (sample, local: each client "
        "retires at its own budget)",
    )
    accountant: Literal["rdp", "prv", "gdp"] = Field(
        "rdp", description="headline accountant (Opacus); gdp is an approximation"
    )
    adaptive: bool = Field(
        False, description="central: adaptive clipping to a quantile (Andrew et al. 2021)"
    )
    target_quantile: float = Field(
        0.5, gt=0, lt=1, description="adaptive: share of updates left unclipped"
    )
    clip_lr: PositiveFloat = Field(0.2, description="adaptive: geometric step eta_C of the clip")
    count_noise_multiplier: PositiveFloat | None = Field(
        None, description="adaptive: sigma_b of the clipped count (default clients_per_round/20)"
    )
    secure_rng: bool = Field(
        False,
        description="true: noise, central DP's cohorts and DP-SGD's lots from the OS's secure "
        "generator (not reproducible); false: seeded by `seed`, so anyone holding config.toml "
        "can regenerate and subtract the noise (research only)",
    )
    # DP-FTRL (mode = "ftrl"): tree aggregation without sampling (Kairouz et al. 2021)
    min_separation: int = Field(
        1,
        ge=1,
        description="ftrl: a client takes part at most once every this many rounds (1: any "
        "cohorts; more: a client of the last min_separation - 1 rounds is swapped for another)",
    )
    restart_every: int | None = Field(
        None, ge=1, description="ftrl: rounds per tree (restart the tree); none: one tree"
    )
    grad_sample_mode: Literal["ew", "hooks", "functorch"] = Field(
        "ew",
        description="sample: Opacus' per-example gradients: ExpandedWeights (fastest here), "
        "module hooks, or torch.func",
    )
    # Distributed DP (mode = "distributed"): the distributed discrete Gaussian inside secure
    # aggregation (Kairouz, Liu and Steinke 2021)
    bits: int | None = Field(
        None,
        ge=8,
        le=53,
        description="distributed: clients' vectors live in Z_{2^bits} (<= defense.secagg.bits; "
        "unset: the secagg ring's bits)",
    )
    beta: float = Field(
        DDG_DEFAULT_BETA,
        ge=0,
        lt=1,
        description="distributed: conditional randomized rounding's beta (0: unconditional); "
        "default exp(-1/2)",
    )
    modular_clip_probability: float = Field(
        1e-4,
        gt=0,
        lt=1,
        description="distributed: per-coordinate probability that the noisy sum wraps around "
        "modulo 2^bits, which sets the scale (k = sqrt(2 ln(2/p)) standard deviations)",
    )

    @field_validator("noise_multiplier")
    @classmethod
    def _sigma(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v < 0):
            raise ValueError(
                f"must be >= 0 (the noise std divided by the clip norm), got {v}; use e.g. 1.0, "
                "or set target_epsilon instead"
            )
        return v

    @field_validator("delta")
    @classmethod
    def _delta(cls, v: float) -> float:
        if not (math.isfinite(v) and 0 < v < 1):
            raise ValueError(
                f"must lie in (0, 1), got {v}; choose it well below 1 / (protected units), "
                "e.g. 1e-5"
            )
        return v

    @model_validator(mode="after")
    def _check(self) -> DPConfig:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(
                "give exactly one of noise_multiplier and target_epsilon (the other is derived)"
            )
        central = self.mode == DPMode.CENTRAL
        for key in ("adaptive", "target_quantile", "clip_lr", "count_noise_multiplier"):
            only_with(self, key, central, "mode = 'central'")
        for key in ("target_quantile", "clip_lr", "count_noise_multiplier"):
            only_with(self, key, self.adaptive, "adaptive = true")
        only_with(self, "grad_sample_mode", self.mode == DPMode.SAMPLE, "mode = 'sample'")
        distributed = self.mode == DPMode.DISTRIBUTED
        for key in ("bits", "beta", "modular_clip_probability"):
            only_with(self, key, distributed, "mode = 'distributed'")
        if distributed and self.accountant != "rdp":
            raise ValueError(
                f"accountant = '{self.accountant}' does not bound mode = 'distributed': its "
                "rounds enter the ledger as a Gaussian whose RDP dominates theirs, which only "
                "the RDP accountant turns into a bound; use accountant = 'rdp'"
            )
        for key in ("min_separation", "restart_every"):
            only_with(self, key, self.mode == DPMode.FTRL, "mode = 'ftrl'")
        return self


__all__ = ["DPConfig", "DPMode"]
