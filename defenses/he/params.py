"""Encryption parameters for add-only aggregation (CKKS presets, BFV defaults) and their
security level.

Pure Python (no TenSEAL import), so the config can validate them when it is loaded.

Why so few primes: aggregation only *adds* ciphertexts, which needs no multiplicative depth.
A CKKS ciphertext is two polynomials of ``N`` coefficients modulo the *data* modulus ``q``,
the product of every prime of ``coeff_mod_bit_sizes`` but the last (SEAL keeps the last one as
the "special" prime of key switching; it is used while encrypting and then dropped). The
chain ``[60, 40, 40, 60]`` of TenSEAL's tutorials leaves three primes on each ciphertext for two
multiplications that aggregation never does. One data prime is enough, and it can be the only
prime: with no special prime SEAL encrypts without the final modulus switch (faster; the fresh
noise, no longer divided by the special prime, grows from about 2^13 to 2^17 scale units,
which one more bit of scale pays for). TenSEAL cannot create such a context but loads one
(:mod:`privfl.defenses.he.seal_context`). Either way a ciphertext is
``2 * N`` coefficients of ``data_bits`` bits packing ``N / 2`` float32 values: about
``2 * 64 / 32 = 8x`` float32 before compression, whatever ``N``. Measured (TenSEAL 0.3.18,
serialized with SEAL's zstd compression, random N(0, 1) values, rms error per value):

============  =================  =====  =========  ===================
N             coeff_mod_bits     scale  expansion  rms error per unit
============  =================  =====  =========  ===================
8192          [60, 40, 40, 60]   2^40   20.2x      1.2e-9
8192          [60, 40]           2^40   8.01x      1.2e-9
8192          [56, 40]           2^36   7.57x      2.0e-8
8192          [57]               2^37   7.67x      1.6e-7
8192          [58]               2^38   7.77x      7.9e-8
8192          [60]               2^40   8.01x      2.0e-8
8192          [50, 40]           2^30   7.20x      1.3e-6
4096          [50, 40]           2^30   7.20x      6.5e-7
8192          [60, 60, 60]       2^52   16.0x      3.0e-13
============  =================  =====  =========  ===================

The error is absolute in slot units, so client-side pre-scaling by the weight (an example
count, usually >= 10) makes it smaller still relative to the update.

Security: every preset is at or above 128-bit classical security by the HomomorphicEncryption.org
standard (Albrecht et al. 2018, "Homomorphic Encryption Security Standard", Table 1, uniform
ternary secret): the total coefficient-modulus bits, special prime included, must not exceed
:data:`MAX_COEFF_MODULUS_BITS` for ``N``. SEAL enforces the same table (``sec_level =
tc128``) when the context is created; :func:`security_level` reports the highest level a
parameter set reaches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from privfl.errors import ConfigError


class SecurityLevel(IntEnum):
    """Classical security levels of the HE standard, in bits."""

    TC128 = 128
    TC192 = 192
    TC256 = 256


#: Largest total coefficient-modulus bit count for a ring degree ``N`` at each security level:
#: HomomorphicEncryption.org standard, Table 1 (ternary secret, classical attacks), as encoded
#: in SEAL's ``CoeffModulus::MaxBitCount`` (a test checks the two agree).
MAX_COEFF_MODULUS_BITS: dict[SecurityLevel, dict[int, int]] = {
    SecurityLevel.TC128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
    SecurityLevel.TC192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    SecurityLevel.TC256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
}
POLY_MODULUS_DEGREES: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384, 32768)
#: SEAL's bounds on one prime of the coefficient modulus.
MIN_PRIME_BITS, MAX_PRIME_BITS = 20, 60
#: Fresh CKKS encryption noise is a few thousand in scale units (about 2^12 at N = 8192);
#: below 2^20 the noise would swamp the values.
MIN_SCALE_BITS = 20
#: Bits kept free above the values: one because the data prime is only > 2^(bits - 1), one so
#: the encryption noise of the sum cannot reach the modulus.
CKKS_MARGIN_BITS = 2
#: Exact integer sums in float64 (the quantizer's limit).
BFV_MAX_PLAIN_BITS = 53


class Preset(StrEnum):
    """Named parameter sets for add-only CKKS aggregation."""

    FAST = "fast"
    DEFAULT = "default"
    HIGH_PRECISION = "high-precision"


def security_level(poly_modulus_degree: int, total_bits: int) -> SecurityLevel | None:
    """The highest HE-standard security level that ``N`` and ``total_bits`` reach, or None
    when the coefficient modulus is too large even for 128 bits."""
    for level in sorted(SecurityLevel, reverse=True):
        if total_bits <= MAX_COEFF_MODULUS_BITS[level][poly_modulus_degree]:
            return level
    return None


def check_ring(poly_modulus_degree: int, coeff_mod_bit_sizes: tuple[int, ...]) -> None:
    """Raise :class:`ConfigError` unless ``N`` and the prime sizes are valid for SEAL and at
    least 128-bit secure by the HE standard table."""
    if poly_modulus_degree not in POLY_MODULUS_DEGREES:
        raise ConfigError(
            f"poly_modulus_degree must be one of {list(POLY_MODULUS_DEGREES)}, "
            f"got {poly_modulus_degree}"
        )
    if len(coeff_mod_bit_sizes) < 1:
        raise ConfigError("coeff_mod_bit_sizes needs at least one prime")
    bad = [b for b in coeff_mod_bit_sizes if not MIN_PRIME_BITS <= b <= MAX_PRIME_BITS]
    if bad:
        raise ConfigError(
            f"coeff_mod_bit_sizes must hold primes of {MIN_PRIME_BITS}..{MAX_PRIME_BITS} bits, "
            f"got {list(coeff_mod_bit_sizes)}"
        )
    total = sum(coeff_mod_bit_sizes)
    limit = MAX_COEFF_MODULUS_BITS[SecurityLevel.TC128][poly_modulus_degree]
    if total > limit:
        raise ConfigError(
            f"coeff_mod_bit_sizes {list(coeff_mod_bit_sizes)} has {total} bits in all; "
            f"128-bit security at poly_modulus_degree = {poly_modulus_degree} allows at most "
            f"{limit} (HomomorphicEncryption.org standard): drop a prime or raise N"
        )


class _CoefficientModulus:
    """The bit counts of a SEAL coefficient modulus, shared by CKKS and BFV parameters."""

    coeff_mod_bit_sizes: tuple[int, ...]

    @property
    def special_prime(self) -> bool:
        """Whether the last prime is SEAL's special prime (key switching): with two or more
        primes it is; a single prime is the data modulus itself (CKKS only, see
        :mod:`privfl.defenses.he.seal_context`)."""
        return len(self.coeff_mod_bit_sizes) > 1

    @property
    def data_bits(self) -> int:
        """Bits of the data (ciphertext) modulus ``q``: every prime but SEAL's special one."""
        sizes = self.coeff_mod_bit_sizes
        return sum(sizes[:-1]) if self.special_prime else sizes[0]

    @property
    def total_bits(self) -> int:
        """Bits of the whole coefficient modulus, special prime included (the security
        table's ``log q``)."""
        return sum(self.coeff_mod_bit_sizes)


@dataclass(frozen=True)
class CKKSParams(_CoefficientModulus):
    """CKKS parameters for add-only aggregation (Cheon, Kim, Kim and Song 2017).

    Attributes:
        poly_modulus_degree: ``N``, the ring degree; a ciphertext packs ``N / 2`` real values.
        coeff_mod_bit_sizes: bit sizes of the primes; all but the last form the data modulus,
            or the one prime is the data modulus (no key switching, which adding never needs).
        scale_bits: ``log2`` of the encoding scale Delta; values are stored as
            ``round(Delta * value)``, so the absolute error is about ``2^12 / Delta``.
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    def __post_init__(self) -> None:
        check_ring(self.poly_modulus_degree, self.coeff_mod_bit_sizes)
        if self.scale_bits < MIN_SCALE_BITS:
            raise ConfigError(
                f"scale_bits must be >= {MIN_SCALE_BITS} (fresh CKKS noise is about "
                f"2^12 in scale units), got {self.scale_bits}"
            )
        if self.headroom_bits < 1:
            raise ConfigError(
                f"scale_bits = {self.scale_bits} leaves no room for values: the data "
                f"modulus has {self.data_bits} bits and {CKKS_MARGIN_BITS} are kept as margin; "
                f"use scale_bits <= {self.data_bits - CKKS_MARGIN_BITS - 1}"
            )

    @property
    def slots(self) -> int:
        """Values per ciphertext, ``N / 2``."""
        return self.poly_modulus_degree // 2

    @property
    def headroom_bits(self) -> int:
        """``h`` such that a decrypted sum is exact (up to noise) while every slot of it stays
        below ``2^h`` in magnitude: the data modulus ``q > 2^(data_bits - 1)`` must exceed
        twice the largest coefficient ``Delta * |value|``, with one bit more for noise."""
        return self.data_bits - self.scale_bits - CKKS_MARGIN_BITS

    @property
    def security(self) -> SecurityLevel:
        """The highest HE-standard security level these parameters reach."""
        level = security_level(self.poly_modulus_degree, self.total_bits)
        if level is None:  # excluded by check_ring in __post_init__
            raise ConfigError(f"{self} is below 128-bit security")
        return level

    @property
    def noise_bound(self) -> float:
        """A generous bound on the absolute decryption error of one fresh ciphertext, per
        slot: ``2^16 / Delta`` after SEAL's switch down from the special prime (measured maxima
        about ``2^13 / Delta`` at N = 8192); ``2^20 / Delta`` with a single prime, where the
        encryption noise is not divided by a special prime (measured maxima about
        ``2^17 / Delta``; a test measures both)."""
        return math.ldexp(1.0, (16 if self.special_prime else 20) - self.scale_bits)

    def describe(self) -> str:
        """The parameters in one line."""
        return (
            f"N = {self.poly_modulus_degree}, coeff_mod_bit_sizes = "
            f"{list(self.coeff_mod_bit_sizes)}, scale = 2^{self.scale_bits}"
        )


def bfv_fresh_noise_bits(poly_modulus_degree: int) -> int:
    """A safe bound on the bits a fresh BFV encryption takes from the noise budget
    ``log2(q / t)``: ``ceil(log2(N) / 2) + 3``. Measured with SEAL (invariant noise budget of
    fresh public-key encryptions): 7 bits at N = 4096, 8 at 8192, 8-9 at 16384; a test keeps
    the bound above the measurement."""
    return -(-int(math.log2(poly_modulus_degree)) // 2) + 3


@dataclass(frozen=True)
class BFVParams(_CoefficientModulus):
    """BFV parameters for exact add-only aggregation of quantized updates (Brakerski 2012;
    Fan and Vercauteren 2012), with SIMD batching: ``N`` integer slots modulo a prime plain
    modulus ``t = 1 mod 2N`` (SEAL's ``PlainModulus::Batching``).

    Attributes:
        poly_modulus_degree: ``N``; a ciphertext packs ``N`` integers (twice CKKS's slots).
        coeff_mod_bit_sizes: bit sizes of the primes; all but the last form ``q``.
        plain_modulus_bits: bits of ``t``; the quantizer spreads ``t`` over the cohort's sum.

    Notes:
        Decryption is exact while the noise stays below ``q / (2 t)``. A fresh ciphertext
        spends :func:`bfv_fresh_noise_bits`; adding ``n`` of them at most ``log2 n`` bits
        more (the noise adds up), so a sum of ``n`` decrypts exactly when
        ``data_bits - plain_modulus_bits - fresh - ceil(log2 n) >= 1``.
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    plain_modulus_bits: int

    def __post_init__(self) -> None:
        check_ring(self.poly_modulus_degree, self.coeff_mod_bit_sizes)
        if not self.special_prime:
            raise ConfigError(
                "BFV needs at least two primes in coeff_mod_bit_sizes (the data primes and "
                "SEAL's special prime, last); only CKKS builds single-prime contexts"
            )
        if not MIN_PRIME_BITS <= self.plain_modulus_bits <= BFV_MAX_PLAIN_BITS:
            raise ConfigError(
                f"plain_modulus_bits must be in {MIN_PRIME_BITS}..{BFV_MAX_PLAIN_BITS} (integer "
                f"sums stay exact in float64), got {self.plain_modulus_bits}"
            )
        if self.plain_modulus_bits >= min(self.coeff_mod_bit_sizes):
            raise ConfigError(
                f"plain_modulus_bits = {self.plain_modulus_bits} must be below every prime of "
                f"coeff_mod_bit_sizes {list(self.coeff_mod_bit_sizes)} (SEAL needs t coprime "
                "to, and smaller than, the coefficient modulus)"
            )
        if self.max_clients < 2:
            raise ConfigError(
                f"plain_modulus_bits = {self.plain_modulus_bits} leaves no noise budget for a "
                f"sum of 2 updates: q has {self.data_bits} bits, a fresh ciphertext's noise "
                f"{bfv_fresh_noise_bits(self.poly_modulus_degree)}; use plain_modulus_bits <= "
                f"{self.data_bits - bfv_fresh_noise_bits(self.poly_modulus_degree) - 2}"
            )

    @property
    def slots(self) -> int:
        """Integers per ciphertext, ``N`` (BFV batching)."""
        return self.poly_modulus_degree

    @property
    def max_clients(self) -> int:
        """The largest cohort whose sum still decrypts exactly (see Notes)."""
        spare = (
            self.data_bits
            - self.plain_modulus_bits
            - bfv_fresh_noise_bits(self.poly_modulus_degree)
            - 1
        )
        return 2**spare if spare >= 0 else 0

    @property
    def security(self) -> SecurityLevel:
        """The highest HE-standard security level these parameters reach."""
        level = security_level(self.poly_modulus_degree, self.total_bits)
        if level is None:  # excluded by check_ring in __post_init__
            raise ConfigError(f"{self} is below 128-bit security")
        return level

    def describe(self) -> str:
        """The parameters in one line."""
        return (
            f"N = {self.poly_modulus_degree}, coeff_mod_bit_sizes = "
            f"{list(self.coeff_mod_bit_sizes)}, plain modulus {self.plain_modulus_bits} bits"
        )


CKKS_PRESETS: dict[Preset, CKKSParams] = {
    # Smallest ring that holds a 50-bit data prime at 128 bits (90 of 109 bits): half the key
    # and context size, least padding for small models, ~1e-6 error, 7.2x float32.
    Preset.FAST: CKKSParams(4096, (50, 40), 30),
    # One 57-bit prime at N = 8192 (57 of 218 bits: above 256-bit security) and no special
    # prime, so no modulus switch when encrypting (about 25% faster than [56, 40]); 18 bits
    # of headroom as [56, 40] at 2^36 had; 1.6e-7 rms error; 7.7x float32.
    Preset.DEFAULT: CKKSParams(8192, (57,), 37),
    # Two data primes (120 bits): ~3e-13 error and 68 bits of headroom, at 16x float32.
    Preset.HIGH_PRECISION: CKKSParams(8192, (60, 60, 60), 52),
}


#: 110 of 218 bits at N = 8192 (256-bit security); 8192 integers a ciphertext (4x float32);
#: cohorts of up to 2^(60 - 40 - 10 - 1) = 512 clients.
BFV_DEFAULT = BFVParams(8192, (60, 50), 40)


__all__ = [
    "BFVParams",
    "BFV_DEFAULT",
    "bfv_fresh_noise_bits",
    "CKKSParams",
    "CKKS_PRESETS",
    "MAX_COEFF_MODULUS_BITS",
    "POLY_MODULUS_DEGREES",
    "Preset",
    "SecurityLevel",
    "check_ring",
    "security_level",
]
