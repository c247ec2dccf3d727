"""``[audit]``: the empirical privacy audits (imports only pydantic, so ``privfl.config`` can
import it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, PositiveFloat, PositiveInt, confloat, model_validator

from privfl.config_rules import SECTION_CONFIG, only_with


class AuditConfig(BaseModel):
    """``[audit]``: an empirical lower bound beside the accountant's epsilon.

    ``method = "canary_clients"`` (user-level; Andrew et al. 2023): `canaries` random canary
    clients join the population, each sending its own fixed random direction whenever it is
    sampled; at the end the cosine of the final model delta with each inserted canary is
    compared with as many unseen canaries, and an empirical epsilon is reported. It measures
    user-level privacy, so it does not apply to `defense.dp.mode = "sample"`.

    ``method = "one_run"`` (example-level; Steinke, Nasr and Jagielski 2023): `canaries`
    examples (mislabelled copies, or natural examples held out of the test split) are each
    added to a random client's training data with probability 1/2; at the end the final
    model's loss on every canary ranks them, the `guesses` most and least likely members are
    guessed IN and OUT, and the number of correct guesses gives a lower bound on epsilon at
    `confidence`.
    """

    model_config = SECTION_CONFIG

    method: Literal["canary_clients", "one_run"] = Field(
        "canary_clients", description="canary_clients (user-level) or one_run (examples)"
    )
    canaries: PositiveInt = Field(
        100, description="canaries inserted (canary_clients: and as many unseen)"
    )
    norm: PositiveFloat | None = Field(
        None,
        description="canary_clients: L2 norm of a canary update (default: the DP clip norm; "
        "without DP, the median norm of the round's real updates)",
    )
    canary_kind: Literal["mislabelled", "held_out"] = Field(
        "mislabelled",
        description="one_run: mislabelled copies of test examples, or held-out test examples",
    )
    guesses: PositiveInt | None = Field(
        None, description="one_run: guesses, half IN and half OUT (default: canaries / 4)"
    )
    confidence: confloat(gt=0.0, lt=1.0) = Field(  # type: ignore[valid-type]
        0.95, description="one_run: confidence of the lower bound"
    )

    @model_validator(mode="after")
    def _check(self) -> AuditConfig:
        one_run = self.method == "one_run"
        only_with(self, "norm", not one_run, "method = 'canary_clients'")
        for key in ("canary_kind", "guesses", "confidence"):
            only_with(self, key, one_run, "method = 'one_run'")
        if self.guesses is not None and self.guesses > self.canaries:
            raise ValueError(f"guesses ({self.guesses}) cannot exceed canaries ({self.canaries})")
        return self

    @property
    def resolved_guesses(self) -> int:
        """The number of guesses (even: half IN, half OUT)."""
        g = self.guesses if self.guesses is not None else max(self.canaries // 4, 2)
        return max(2, g - g % 2)


__all__ = ["AuditConfig"]
