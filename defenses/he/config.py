"""``[defense.he]``: homomorphic-encrypted aggregation (imports only pydantic, typing and the
parameter checks, which import nothing of privfl but its errors)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, PositiveFloat, PositiveInt, model_validator

from privfl.config_rules import SECTION_CONFIG, only_with
from privfl.defenses.he.params import (
    BFV_DEFAULT,
    CKKS_PRESETS,
    BFVParams,
    CKKSParams,
    Preset,
)


class Scheme(StrEnum):
    """Homomorphic encryption schemes of TenSEAL."""

    CKKS = "ckks"
    BFV = "bfv"


#: The key holder's default ``min_clients``: with 2, each of the two clients reads the other's
#: update in the next model (its own is known to it); with 3 it reads only a sum of two.
DEFAULT_MIN_CLIENTS = 3

_CKKS_ONLY = ("preset", "scale_bits")
_BFV_ONLY = ("plain_modulus_bits", "clip", "rounding", "max_weight")


class HEConfig(BaseModel):
    """``[defense.he]``: clients encrypt their updates with TenSEAL; the server adds ciphertexts
    with a public context only; a separate key holder decrypts the sum alone.

    ``scheme = "ckks"``: approximate arithmetic on the float updates; ``preset`` picks ring
    degree, primes and scale, and ``poly_modulus_degree``, ``coeff_mod_bit_sizes`` and
    ``scale_bits`` override single values of it. ``scheme = "bfv"``: exact sums of fixed-point
    quantized updates (clipped to ``clip``, weights scaled by ``max_weight``). Every
    combination is checked for 128-bit security (HomomorphicEncryption.org standard) and for
    room above the values.
    """

    model_config = SECTION_CONFIG

    scheme: Literal["ckks", "bfv"] = Field(
        "ckks", description="'ckks': approximate, on floats; 'bfv': exact, on quantized integers"
    )
    preset: Literal["fast", "default", "high-precision"] = Field(
        "default", description="CKKS parameter set: ring degree, primes and scale"
    )
    poly_modulus_degree: PositiveInt | None = Field(
        None, description="ring degree N (overrides the preset); N / 2 (CKKS) or N (BFV) values"
    )
    coeff_mod_bit_sizes: list[PositiveInt] | None = Field(
        None, description="prime sizes in bits, the last is SEAL's special prime (overrides)"
    )
    scale_bits: PositiveInt | None = Field(
        None, description="CKKS: log2 of the scale (overrides the preset)"
    )
    plain_modulus_bits: PositiveInt | None = Field(
        None, description="BFV: bits of the plain modulus (unset: 40)"
    )
    clip: PositiveFloat = Field(1.0, description="BFV: update values are clipped to [-clip, clip]")
    rounding: Literal["nearest", "stochastic"] = Field(
        "nearest", description="BFV: fixed-point rounding; 'stochastic' is unbiased"
    )
    max_weight: PositiveFloat | None = Field(
        None, description="BFV: the largest client weight (unset: the largest example count)"
    )
    min_clients: PositiveInt = Field(
        DEFAULT_MIN_CLIENTS,
        description="fewest distinct authenticated clients in a sum the key holder will "
        "decrypt (else the round aborts)",
    )
    workers: int = Field(
        1,
        ge=0,
        description="processes that encrypt the clients' chunks in parallel (0: one per CPU "
        "core); TenSEAL holds the GIL, so threads would not help",
    )

    @model_validator(mode="after")
    def _check(self) -> HEConfig:
        other, keys = ("ckks", _CKKS_ONLY) if self.scheme == Scheme.BFV else ("bfv", _BFV_ONLY)
        for key in keys:
            only_with(self, key, False, f"scheme = '{other}'")
        self.params()  # raises ConfigError (a ValueError) naming the bad key
        return self

    def params(self) -> CKKSParams | BFVParams:
        """The parameters of the scheme: the defaults (CKKS: the preset's) with any key given
        here replacing its value."""
        if self.scheme == Scheme.BFV:
            return BFVParams(
                poly_modulus_degree=self.poly_modulus_degree or BFV_DEFAULT.poly_modulus_degree,
                coeff_mod_bit_sizes=tuple(
                    self.coeff_mod_bit_sizes or BFV_DEFAULT.coeff_mod_bit_sizes
                ),
                plain_modulus_bits=self.plain_modulus_bits or BFV_DEFAULT.plain_modulus_bits,
            )
        base = CKKS_PRESETS[Preset(self.preset)]
        return CKKSParams(
            poly_modulus_degree=self.poly_modulus_degree or base.poly_modulus_degree,
            coeff_mod_bit_sizes=tuple(self.coeff_mod_bit_sizes or base.coeff_mod_bit_sizes),
            scale_bits=self.scale_bits or base.scale_bits,
        )


__all__ = ["DEFAULT_MIN_CLIENTS", "HEConfig", "Scheme"]
