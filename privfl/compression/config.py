"""``[compression]``: which compressor the clients apply to their updates (imports only
pydantic, typing and privfl.errors, so privfl.config can import it without cycles)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from privfl.config_rules import SECTION_CONFIG, only_with


class CompressionMethod(StrEnum):
    """The compressors of :mod:`privfl.compression`."""

    TOPK = "topk"
    RANDK = "randk"
    QSGD = "qsgd"
    SIGN = "sign"


#: Methods whose kept coordinates differ from client to client.
PER_CLIENT_SUPPORT = (CompressionMethod.TOPK, CompressionMethod.RANDK)


class CompressionConfig(BaseModel):
    """``[compression]``: a client-side compressor of every update (top-k, random-k, QSGD or
    scaled sign with majority vote), optionally with error feedback (Karimireddy et al. 2019)."""

    model_config = SECTION_CONFIG

    method: Literal["topk", "randk", "qsgd", "sign"] = Field(
        ..., description="topk | randk (sparsification), qsgd (stochastic levels), sign"
    )
    ratio: float = Field(
        0.1, gt=0, le=1, description="topk, randk: share of the coordinates kept (k = ratio d)"
    )
    levels: int = Field(
        16, ge=1, le=2**15 - 1, description="qsgd: s, the quantization levels of |x_i| / ||x||"
    )
    error_feedback: bool | None = Field(
        None,
        description="keep each client's residual and add it to its next update (unset: on "
        "for the biased topk and sign, off for the unbiased randk and qsgd)",
    )
    shared_seed: bool = Field(
        False, description="randk: one seed per round, so every client keeps the same coordinates"
    )

    @property
    def uses_error_feedback(self) -> bool:
        """``error_feedback``, or its default for the method (biased compressors need it)."""
        if self.error_feedback is not None:
            return self.error_feedback
        return CompressionMethod(self.method) in (CompressionMethod.TOPK, CompressionMethod.SIGN)

    @model_validator(mode="after")
    def _check(self) -> CompressionConfig:
        m = CompressionMethod(self.method)
        only_with(self, "ratio", m in PER_CLIENT_SUPPORT, "method is topk or randk")
        only_with(self, "levels", m is CompressionMethod.QSGD, "method = 'qsgd'")
        only_with(self, "shared_seed", m is CompressionMethod.RANDK, "method = 'randk'")
        return self


def check_compression(
    compression: CompressionConfig | None, *, defense: Any, fednova: bool = False
) -> None:
    """Reject combinations of ``[compression]`` with other sections that cannot work.

    - top-k, or random-k without a shared seed, under secure aggregation or HE: each client
      keeps different coordinates, so the masked or encrypted vectors would have to carry all
      ``d`` coordinates (no saving) and sum vectors of different supports;
    - random-k under HE, even with a shared seed: the HE channel encrypts every coordinate;
    - sign: the server takes a majority vote of signs, not the weighted mean that secure
      channels, central DP and FedNova need, nor a robust rule.

    Raises:
        ValueError: (turned into a ConfigError by the config loader) saying why.
    """
    if compression is None:
        return
    m = CompressionMethod(compression.method)
    secure = [name for name in ("secagg", "he") if getattr(defense, name, None) is not None]
    if secure and (
        m is CompressionMethod.TOPK
        or (m is CompressionMethod.RANDK and not compression.shared_seed)
    ):
        raise ValueError(
            f"compression.method = '{m}' cannot be combined with defense.{secure[0]}: each "
            "client keeps different coordinates (supports differ), so the masked/encrypted "
            "vectors would have to carry all coordinates of every client and the sparsity "
            "saves nothing; use method = 'randk' with shared_seed = true (every client keeps "
            "the same coordinates) or method = 'qsgd'"
        )
    if m is CompressionMethod.RANDK and getattr(defense, "he", None) is not None:
        raise ValueError(
            "compression.method = 'randk' cannot be combined with defense.he: the HE channel "
            "encrypts all d coordinates (it does not use a shared support), so random-k saves "
            "nothing and its d/k-scaled values would meet BFV's clip; use defense.secagg "
            "with shared_seed = true, or method = 'qsgd'"
        )
    if m is CompressionMethod.SIGN:
        dp = getattr(defense, "dp", None)
        others = [f"defense.{s}" for s in secure]
        if getattr(defense, "robust", None) is not None:
            others.append("defense.robust")
        if dp is not None and dp.mode == "central":
            others.append("defense.dp.mode = 'central'")
        if fednova:
            others.append("federation.heterogeneity.normalization = 'fednova'")
        if others:
            raise ValueError(
                "compression.method = 'sign' is aggregated by majority vote (Bernstein et al. "
                f"2018), not by the weighted mean that {', '.join(others)} needs; choose one"
            )


__all__ = ["PER_CLIENT_SUPPORT", "CompressionConfig", "CompressionMethod", "check_compression"]
