"""``[compression]``: which compressor the clients apply to their updates (imports only
pydantic, typing and privfl.errors, so privfl.config can import it without cycles)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

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


__all__ = ["PER_CLIENT_SUPPORT", "CompressionConfig", "CompressionMethod"]
