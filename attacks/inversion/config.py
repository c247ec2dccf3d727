"""``[attack.inversion]``: which gradient-inversion attack runs, when, and how long.

Imports only pydantic, typing and the standard library, so :mod:`privfl.config` can use it
without an import cycle.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import (
    BaseModel,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from privfl.config_rules import SECTION_CONFIG, only_with


class InversionMethod(StrEnum):
    """The attacks: DLG (Zhu et al. 2019), iDLG (Zhao et al. 2020), Inverting Gradients
    (Geiping et al. 2020) on images; the embedding-gradient token leak (Melis et al. 2019) on
    text; ``auto`` picks ``tokens`` on text data (int64 token inputs) and ``idlg`` on images."""

    AUTO = "auto"
    DLG = "dlg"
    IDLG = "idlg"
    IG = "ig"
    TOKENS = "tokens"


#: Per method: (iterations, learning rate) of the papers' settings (IG scaled down for CPUs).
METHOD_DEFAULTS: dict[InversionMethod, tuple[int, float]] = {
    InversionMethod.DLG: (300, 1.0),
    InversionMethod.IDLG: (300, 1.0),
    InversionMethod.IG: (1000, 0.1),
    InversionMethod.AUTO: (300, 1.0),  # idlg's: auto is idlg on images
    InversionMethod.TOKENS: (1, 1.0),  # reads the update; no optimizer
}


class InversionConfig(BaseModel):
    """``[attack.inversion]``: an honest-but-curious server inverts what its ServerView shows.

    In each listed round up to ``max_targets`` sampled clients are attacked (under secure
    aggregation the aggregate instead; under HE nothing is visible and the record says so).
    """

    model_config = SECTION_CONFIG

    method: Literal["auto", "dlg", "idlg", "ig", "tokens"] = Field(
        "auto",
        description="dlg (L-BFGS, soft labels), idlg (analytic labels), ig (cosine + TV) on "
        "images; tokens (embedding-gradient leak) on text; auto: tokens on text, idlg on images",
    )
    rounds: list[PositiveInt] = Field(
        default_factory=lambda: [1], description="rounds in which the server attacks"
    )
    max_targets: PositiveInt = Field(8, description="clients attacked per round, at most")
    iterations: PositiveInt | None = Field(
        None, description="optimizer iterations per restart (unset: 300 dlg/idlg, 1000 ig)"
    )
    lr: PositiveFloat | None = Field(
        None, description="optimizer learning rate (unset: 1.0 L-BFGS, 0.1 Adam for ig)"
    )
    restarts: PositiveInt = Field(1, description="random restarts; the best objective is kept")
    tv: NonNegativeFloat = Field(
        1e-4, description="ig: total-variation weight (images only; ~1e-2 for natural patches)"
    )
    threads: NonNegativeInt = Field(
        1, description="torch threads during the attack (0: leave torch's setting)"
    )
    replay: bool = Field(
        True,
        description="ig: replay the client's local steps on the candidates (Geiping et al. "
        "§4); false reads the update as one gradient, as dlg/idlg do (the ablation)",
    )
    noise: Literal["none", "gaussian", "laplace"] = Field(
        "none",
        description="what-if of Zhu et al. §5.1: noise added to each observed gradient "
        "before the attack (no clipping, no accounting; a real defense is [defense.dp])",
    )
    noise_variance: NonNegativeFloat = Field(
        0.0, description="variance of that noise per coordinate of the gradient -update/lr"
    )
    images: bool = Field(
        False,
        description="add the reconstructions and the originals they were matched to to each "
        "record (`images`: nested lists in [0, 1]; attacks.json grows)",
    )

    token_fpr: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="tokens: under noisy updates (DP), the expected number of unused tokens "
        "the row-norm threshold admits per update",
    )

    @model_validator(mode="after")
    def _check(self) -> InversionConfig:
        if len(set(self.rounds)) != len(self.rounds):
            raise ValueError(f"rounds lists a round twice: {self.rounds}")
        only_with(self, "tv", self.method == InversionMethod.IG, "method = 'ig'")
        only_with(self, "replay", self.method == InversionMethod.IG, "method = 'ig'")
        text = self.method in (InversionMethod.AUTO, InversionMethod.TOKENS)
        only_with(self, "token_fpr", text, "method = 'tokens' (or 'auto' on text data)")
        only_with(self, "noise_variance", self.noise != "none", "noise is 'gaussian' or 'laplace'")
        if self.noise != "none" and not self.noise_variance > 0:
            raise ValueError(f"noise = {self.noise!r} needs noise_variance > 0")
        return self

    @property
    def resolved_iterations(self) -> int:
        """``iterations``, or the method's default."""
        return self.iterations or METHOD_DEFAULTS[InversionMethod(self.method)][0]

    @property
    def resolved_lr(self) -> float:
        """``lr``, or the method's default."""
        return self.lr or METHOD_DEFAULTS[InversionMethod(self.method)][1]


__all__ = ["InversionConfig", "InversionMethod", "METHOD_DEFAULTS"]
