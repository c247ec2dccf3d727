"""``[attack.membership]``: which membership-inference attack runs, on which target, with how
many shadow models and candidates.

Imports only pydantic, typing and the standard library, so :mod:`privfl.config` can use it
without an import cycle.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, PositiveInt, confloat, model_validator

from privfl.config_rules import SECTION_CONFIG, OptionalRounds, only_with


class MembershipConfig(BaseModel):
    """``[attack.membership]``: membership inference against the run's model.

    ``candidates`` examples are drawn, half from the clients' training data (members) and half
    from the held-out test split (non-members), each uniformly; the attack scores every
    candidate and the record reports AUC and the TPR at 0.1% and 1% FPR. ``lira`` and ``rmia``
    train ``shadow_models`` shadow federations with the run's own recipe on the population
    (training and test splits): each shadow trains on exactly half of the candidates (in
    complementary pairs) plus other population examples, as many as the run's training set.
    """

    model_config = SECTION_CONFIG

    method: Literal["loss", "lira", "rmia"] = Field(
        "lira", description="loss (Yeom et al. 2018), lira (Carlini et al. 2022), rmia (2024)"
    )
    target: Literal["global", "client"] = Field(
        "global",
        description="global: the released model; client: one client's update, as the server "
        "sees it",
    )
    rounds: OptionalRounds = Field(
        None, description="client: the rounds in which the server attacks (default: the last)"
    )
    candidates: PositiveInt = Field(
        200, description="candidate examples, half members and half non-members (even)"
    )
    shadow_models: PositiveInt = Field(
        8, description="lira/rmia: shadow federations (even: complementary pairs)"
    )
    online: bool = Field(True, description="lira: use IN and OUT shadows (false: offline)")
    fixed_variance: bool = Field(
        False, description="lira: one variance for all candidates (the paper's few-shadow mode)"
    )
    rmia_a: confloat(ge=0.0, le=1.0) = Field(  # type: ignore[valid-type]
        0.3, description="rmia: offline coefficient, Pr(x) = ((1+a) Pr_out(x) + 1 - a) / 2"
    )
    population: PositiveInt = Field(
        500, description="rmia: population examples z the candidates are compared with"
    )
    baseline_loss: bool = Field(
        False,
        description="lira/rmia: also score the same candidates on the same model with the "
        "loss attack (a second record), as the papers compare them",
    )

    @model_validator(mode="after")
    def _check(self) -> MembershipConfig:
        if self.candidates % 2 or self.candidates < 2:
            raise ValueError(f"candidates must be even and >= 2, got {self.candidates}")
        shadows = self.method in ("lira", "rmia")
        only_with(self, "rounds", self.target == "client", "target = 'client'")
        only_with(self, "shadow_models", shadows, "method is lira or rmia")
        only_with(self, "online", self.method == "lira", "method = 'lira'")
        only_with(self, "fixed_variance", self.method == "lira", "method = 'lira'")
        only_with(self, "rmia_a", self.method == "rmia", "method = 'rmia'")
        only_with(self, "population", self.method == "rmia", "method = 'rmia'")
        only_with(self, "baseline_loss", shadows, "method is lira or rmia")
        if shadows and self.shadow_models % 2:
            raise ValueError(
                f"shadow_models must be even (complementary pairs), got {self.shadow_models}"
            )
        if self.method == "lira" and self.online and not self.fixed_variance:
            if self.shadow_models < 4:
                raise ValueError(
                    "lira online with per-candidate variance needs >= 4 shadow models (2 IN "
                    "and 2 OUT per candidate); set fixed_variance = true or add shadows"
                )
        return self
