"""Fixed-point encoding of floats as integers modulo ``m`` with headroom for a sum of ``n``.

TEMPORARY COPY OF AN INTERFACE: the secure-aggregation branch adds the shared quantizer as
``privfl.defenses.quantize.FixedPointCodec``. This module implements the same class with the
same constructor, names and semantics (the subset BFV needs), so that at merge the lead can
delete this file and import ``FixedPointCodec`` and ``Rounding`` from
``privfl.defenses.quantize`` in :mod:`privfl.defenses.he.bfv` (its tests then run against the
shared codec unchanged).

The encoding (Bonawitz et al., CCS 2017, Sec. 3; Flower's SecAgg+ ``quantization.py``)::

    M = ((m - 1) // 2) // n      the largest encoded magnitude
    s = M / c                    levels per unit
    q(x) = round(s * clip(x, -c, c))  in [-M, M]

so ``|sum_i q(x_i)| <= n M <= (m - 1) / 2``: the centred residue of the sum modulo ``m`` is the
exact integer sum, and dividing by ``s`` gives the sum of the values within ``n / (2 s)``
(nearest rounding) or ``n / s`` (stochastic rounding, unbiased: ``floor(s x + u)`` with
``u ~ U[0, 1)``, as in QSGD, Alistarh et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

#: Integer sums stay exact in float64 below 2^53.
MAX_MODULUS_BITS = 53


class Rounding(StrEnum):
    """How a scaled value becomes an integer."""

    NEAREST = "nearest"
    STOCHASTIC = "stochastic"


@dataclass(frozen=True)
class FixedPointCodec:
    """Floats in ``[-clip, clip]`` as integers whose sum over ``summands`` clients cannot
    wrap modulo ``modulus``.

    Attributes:
        clip: ``c > 0``; values are clipped to ``[-c, c]``.
        modulus: ``m``, 3 <= m <= 2^53 (BFV: the plain modulus, a prime).
        summands: ``n >= 1``, the most encodings added together.
        rounding: nearest (deterministic) or stochastic (unbiased).
    """

    clip: float
    modulus: int
    summands: int
    rounding: Rounding = Rounding.NEAREST

    def __post_init__(self) -> None:
        if not (self.clip > 0 and np.isfinite(self.clip)):
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")
        if not 3 <= self.modulus <= 2**MAX_MODULUS_BITS:
            raise ValueError(f"modulus must be in [3, 2**{MAX_MODULUS_BITS}], got {self.modulus}")
        if self.summands < 1:
            raise ValueError(f"summands must be >= 1, got {self.summands}")
        if self.levels < 1:
            raise ValueError(
                f"modulus {self.modulus} leaves no room for a sum of {self.summands} values"
            )

    @property
    def levels(self) -> int:
        """``M = ((m - 1) // 2) // n``."""
        return ((self.modulus - 1) // 2) // self.summands

    @property
    def scale(self) -> float:
        """``s = M / c``."""
        return self.levels / self.clip

    def error_bound(self, summands: int | None = None) -> float:
        """Worst-case absolute error of a decoded sum of ``summands`` (default ``n``) values in
        ``[-c, c]``: ``n / (2 s)`` or ``n / s``, plus ``n M 2^-53 / s`` for the float64
        product ``s * x``."""
        n = self.summands if summands is None else summands
        per_value = 0.5 if self.rounding is Rounding.NEAREST else 1.0
        return n * (per_value + self.levels * 2.0**-53) / self.scale

    def quantize(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """``q(x)``: int64 in ``[-M, M]``, same shape as ``x`` (NaN is an error; stochastic
        rounding needs ``rng``)."""
        y = np.asarray(x, dtype=np.float64)
        if np.isnan(y).any():
            raise ValueError("cannot quantize NaN")
        y = np.clip(y, -self.clip, self.clip) * self.scale
        if self.rounding is Rounding.STOCHASTIC:
            if rng is None:
                raise ValueError("stochastic rounding needs a random generator")
            q = np.floor(y + rng.random(y.shape))
        else:
            q = np.rint(y)
        return np.clip(q, -self.levels, self.levels).astype(np.int64)

    def centered(self, residues: np.ndarray) -> np.ndarray:
        """Residues in ``[0, m)`` to their representatives in ``(-m/2, m/2]``, int64."""
        r = np.asarray(residues).astype(np.int64)
        return np.where(r > (self.modulus - 1) // 2, r - self.modulus, r)

    def decode(self, residues: np.ndarray) -> np.ndarray:
        """The float64 value of a sum of up to ``n`` encodings given as unsigned residues
        modulo ``m``: its centred representative over ``s``."""
        r = np.asarray(residues)
        if r.dtype.kind != "u":
            raise TypeError(f"expected unsigned residues, got {r.dtype}")
        return self.centered(np.mod(r.astype(np.uint64), np.uint64(self.modulus))) / self.scale


__all__ = ["MAX_MODULUS_BITS", "FixedPointCodec", "Rounding"]
