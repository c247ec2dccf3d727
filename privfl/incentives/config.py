"""``[incentives]``: how the server measures each client's contribution (imports only pydantic,
typing and :mod:`privfl.config_rules`, so :mod:`privfl.config` can use it without cycles)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, PositiveInt, confloat, model_validator

from privfl.config_rules import SECTION_CONFIG, OptionalRounds, only_with


class IncentivesConfig(BaseModel):
    """``[incentives]``: contribution measurement from the updates the server already has.

    Every method values a set S of a round's clients by the accuracy, on a server-held
    validation split, of a model reconstructed from S's updates (no retraining; see
    ``reconstruction``), and sums a client's per-round values over the rounds it took part in:

    - ``loo``: leave-one-out, ``v(N) - v(N \\ {i})``;
    - ``gtg_shapley``: GTG-Shapley (Liu et al., ACM TIST 2022): guided, truncated Monte Carlo
      Shapley values within each round, rounds with little gain skipped;
    - ``mr``: multi-round reconstruction (Song, Tong and Wei, IEEE BigData 2019): exact
      Shapley values within each round over all subsets of its clients.
    """

    model_config = SECTION_CONFIG

    method: Literal["loo", "gtg_shapley", "mr"] = Field(
        description="loo: leave-one-out; gtg_shapley: Liu et al. 2022; mr: Song et al. 2019"
    )
    reconstruction: Literal["share", "subset_mean"] = Field(
        "share",
        description="share: S's part of the round's actual step (sum_S p_i Delta_i / sum_N p_i; "
        "a zero update is a null player); subset_mean: FedAvg of S alone (the papers')",
    )
    validation_size: PositiveInt = Field(
        200, description="server-held validation examples, drawn from the test split"
    )
    rounds: OptionalRounds = Field(None, description="the rounds measured (default: every round)")
    round_threshold: confloat(ge=0.0) = Field(  # type: ignore[valid-type]
        0.001,
        description="gtg_shapley, mr: a round whose whole cohort moves the utility by at most "
        "this much scores 0 for everyone (between-round truncation)",
    )
    eps: confloat(ge=0.0) = Field(  # type: ignore[valid-type]
        0.001,
        description="gtg_shapley: stop a permutation once its prefix is within eps of the "
        "whole cohort's utility (within-round truncation)",
    )
    min_permutations: PositiveInt = Field(
        30, description="gtg_shapley: permutations before convergence is checked (at least n)"
    )
    max_permutations: PositiveInt = Field(
        500, description="gtg_shapley: permutations per round at most"
    )
    tolerance: confloat(gt=0.0) = Field(  # type: ignore[valid-type]
        0.05,
        description="gtg_shapley: converged when the running means of the last 10 "
        "permutations differ from the latest by at most this relative error",
    )
    max_exact_clients: PositiveInt = Field(
        14, description="mr: the largest cohort valued exactly (2^n subsets)"
    )

    @model_validator(mode="after")
    def _check(self) -> IncentivesConfig:
        gtg = self.method == "gtg_shapley"
        for key in ("eps", "min_permutations", "max_permutations", "tolerance"):
            only_with(self, key, gtg, "method = 'gtg_shapley'")
        only_with(self, "round_threshold", self.method != "loo", "method is gtg_shapley or mr")
        only_with(self, "max_exact_clients", self.method == "mr", "method = 'mr'")
        if self.min_permutations > self.max_permutations:
            raise ValueError(
                f"min_permutations ({self.min_permutations}) exceeds max_permutations "
                f"({self.max_permutations})"
            )
        return self


__all__ = ["IncentivesConfig"]
