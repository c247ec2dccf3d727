"""Fixed-point encoding of float vectors into Z_m with headroom for a sum of n of them.

Secure aggregation (pairwise masks over Z_{2^k}) and exact homomorphic encryption (BFV over a
prime plaintext modulus) both add integers modulo ``m``. A float vector becomes such integers
by clipping each value to ``[-c, c]``, scaling by ``s`` and rounding; the sum of up to ``n``
encodings must not wrap around modulo ``m``, so the scale leaves ``log2(n)`` bits of headroom:

    M = floor(((m - 1) // 2) / n)         largest encoded magnitude
    s = M / c                             scale (levels per unit)
    q(x) = round(s * clip(x, -c, c))      in [-M, M];  sent as q mod m

Then ``|sum_i q(x_i)| <= n * M <= (m - 1) // 2``, so the centred residue of the sum modulo
``m`` is the exact integer sum, and ``decode`` divides it by ``s``.

Error bound (for inputs already inside ``[-c, c]``; clipping itself is reported apart):

- nearest rounding: ``|q(x) / s - x| <= 1 / (2 s)`` per value, so a decoded sum of ``n`` values
  is within ``n / (2 s) = n * c / (2 M)`` of the true sum;
- stochastic rounding (``floor(s x + u)``, ``u ~ U[0, 1)``, the unbiased rounding of QSGD,
  Alistarh et al. 2017): ``|q(x) / s - x| < 1 / s`` per value and ``E[q(x)] = s x``, so the
  sum is within ``n / s`` and unbiased.

``s * x`` is computed in float64, which adds at most ``M * 2^-53`` levels per value (a 64th of
a level at ``M = 2^47``); :meth:`FixedPointCodec.error_bound` includes it. The decoded float64
sum carries its own rounding (relative ``2^-53``). Moduli are limited to ``m <= 2**53`` so
that ``M < 2**52`` and integer sums stay exact in float64. Fixed-point quantization for secure
aggregation is the scheme of Bonawitz et al. (CCS 2017, Sec. 3) and of Flower's SecAgg+
(``quantization.py``), whose global RNG is not repeated here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

MAX_MODULUS_BITS = 53


class Rounding(StrEnum):
    """How a scaled value becomes an integer."""

    NEAREST = "nearest"
    STOCHASTIC = "stochastic"


@dataclass(frozen=True)
class FixedPointCodec:
    """Encode floats in ``[-clip, clip]`` as residues modulo ``modulus`` so that a sum of up to
    ``summands`` encodings decodes to the sum of the values (see the module docstring).

    Attributes:
        clip: ``c > 0``; values are clipped to ``[-c, c]`` before encoding.
        modulus: ``m >= 3``, at most ``2**53``; a power of two for secure aggregation, a prime
            for BFV.
        summands: ``n >= 1``, the most encodings that will be added together.
        rounding: nearest (deterministic) or stochastic (unbiased) rounding.
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
                f"modulus {self.modulus} leaves no room for a sum of {self.summands} values: "
                f"it must be at least {2 * self.summands + 1}"
            )

    @classmethod
    def for_bits(
        cls, clip: float, bits: int, summands: int, rounding: Rounding = Rounding.NEAREST
    ) -> FixedPointCodec:
        """The codec over ``Z_{2^bits}`` (secure aggregation's ring)."""
        return cls(clip, 2**bits, summands, Rounding(rounding))

    @property
    def levels(self) -> int:
        """``M``, the largest encoded magnitude: ``((m - 1) // 2) // n``."""
        return ((self.modulus - 1) // 2) // self.summands

    @property
    def scale(self) -> float:
        """``s = M / c``: integer levels per unit."""
        return self.levels / self.clip

    @property
    def dtype(self) -> np.dtype:
        """The unsigned container of a residue: uint32 when ``m <= 2**32``, else uint64."""
        return np.dtype(np.uint32) if self.modulus <= 2**32 else np.dtype(np.uint64)

    @property
    def power_of_two(self) -> bool:
        return self.modulus & (self.modulus - 1) == 0

    def error_bound(self, summands: int | None = None) -> float:
        """Worst-case absolute error of a decoded sum of ``summands`` (default ``n``) encoded
        values, each inside ``[-c, c]``: ``n / (2 s)`` (nearest) or ``n / s`` (stochastic),
        plus ``n M 2^-53 / s`` for the float64 product (see the module docstring)."""
        n = self.summands if summands is None else summands
        per_value = 0.5 if self.rounding is Rounding.NEAREST else 1.0
        return n * (per_value + self.levels * 2.0**-53) / self.scale

    def quantize(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """The signed integers ``q(x)`` in ``[-M, M]``, int64, same shape as ``x``.

        Args:
            x: float array of any shape; values outside ``[-c, c]`` are clipped, NaN is an
                error.
            rng: the generator of the uniform draws (stochastic rounding only, required then).
        """
        x64 = np.asarray(x, dtype=np.float64)
        if np.isnan(x64).any():
            raise ValueError("cannot quantize NaN")
        y = np.clip(x64, -self.clip, self.clip) * self.scale
        if self.rounding is Rounding.STOCHASTIC:
            if rng is None:
                raise ValueError("stochastic rounding needs a random generator")
            q = np.floor(y + rng.random(y.shape))
        else:
            q = np.rint(y)
        # In exact arithmetic y is in [-M, M], so q is too (floor(M + u) = M for u < 1); the
        # float64 product c * (M / c) can land a hair above M, hence the clip.
        return np.clip(q, -self.levels, self.levels).astype(np.int64)

    def encode(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """``q(x) mod m`` as residues in ``[0, m)``, in :attr:`dtype`, same shape as ``x``."""
        return self.to_residues(self.quantize(x, rng))

    def to_residues(self, q: np.ndarray) -> np.ndarray:
        """Signed int64 integers to residues modulo ``m`` in :attr:`dtype`."""
        q = np.asarray(q, dtype=np.int64)
        if self.power_of_two:
            # Two's complement: the int64 bit pattern is q mod 2^64, and m divides 2^64.
            r = q.view(np.uint64) & np.uint64(self.modulus - 1)
        else:
            r = np.mod(q, np.int64(self.modulus)).view(np.uint64)
        return r.astype(self.dtype)

    def reduce(self, values: np.ndarray) -> np.ndarray:
        """Residues modulo ``m`` of unsigned values (e.g. a sum that wrapped around its
        uint32/uint64 container, which is exact modulo ``m`` when ``m`` is a power of two)."""
        v = np.asarray(values)
        if v.dtype.kind != "u":
            raise TypeError(f"expected an unsigned integer array, got {v.dtype}")
        if self.power_of_two:
            return (v & v.dtype.type(self.modulus - 1)).astype(self.dtype)
        return np.mod(v.astype(np.uint64), np.uint64(self.modulus)).astype(self.dtype)

    def centered(self, residues: np.ndarray) -> np.ndarray:
        """Residues in ``[0, m)`` to their centred representatives in ``(-m/2, m/2]``, int64."""
        r = np.asarray(residues).astype(np.int64)
        return np.where(r > (self.modulus - 1) // 2, r - self.modulus, r)

    def decode(self, residues: np.ndarray) -> np.ndarray:
        """The float64 value of a residue vector: an encoding, or the sum (modulo ``m``) of up
        to ``n`` encodings, which decodes to the sum of their values within
        :meth:`error_bound`."""
        return self.centered(self.reduce(np.asarray(residues))) / self.scale


def default_max_weight(config: Any, sizes: np.ndarray) -> float:
    """The largest client weight a fixed-point channel must encode when the config leaves
    ``max_weight`` unset: 1 under central or local DP (they weigh every client 1, so a
    count-sized ``max_weight`` would shrink every ``rho = 1 / max_weight`` to a few
    quantization steps and inflate the encoding slack that central DP must leave), else the
    largest client's example count (FedAvg's weights)."""
    dp = config.defense.dp
    if dp is not None and dp.mode in ("central", "local"):
        return 1.0
    return float(np.max(sizes))


__all__ = ["MAX_MODULUS_BITS", "FixedPointCodec", "Rounding", "default_max_weight"]
