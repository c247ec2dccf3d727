"""``[defense.he]``: homomorphic-encrypted aggregation (imports only pydantic, typing and the
parameter checks, which import nothing of privfl but its errors)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from privfl.defenses.he.params import CKKS_PRESETS, CKKSParams, Preset


class Scheme(StrEnum):
    """Homomorphic encryption schemes of TenSEAL."""

    CKKS = "ckks"


class HEConfig(BaseModel):
    """``[defense.he]``: clients encrypt their updates with TenSEAL; the server adds ciphertexts
    with a public context only; a separate key holder decrypts the sum alone.

    ``preset`` picks ring degree, primes and scale (see README, "Homomorphic encryption");
    ``poly_modulus_degree``, ``coeff_mod_bit_sizes`` and ``scale_bits`` override single values
    of it. Every combination is checked for 128-bit security (HomomorphicEncryption.org
    standard) and for room above the values.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Literal["ckks"] = Field("ckks", description="'ckks': approximate arithmetic on floats")
    preset: Literal["fast", "default", "high-precision"] = Field(
        "default", description="parameter set: ring degree, primes and scale"
    )
    poly_modulus_degree: PositiveInt | None = Field(
        None, description="ring degree N (overrides the preset); N / 2 values per ciphertext"
    )
    coeff_mod_bit_sizes: list[PositiveInt] | None = Field(
        None, description="prime sizes in bits, the last is SEAL's special prime (overrides)"
    )
    scale_bits: PositiveInt | None = Field(
        None, description="log2 of the CKKS scale (overrides the preset)"
    )
    min_clients: PositiveInt = Field(
        2, description="fewest updates in a sum the key holder will decrypt (else the round aborts)"
    )

    @model_validator(mode="after")
    def _check(self) -> HEConfig:
        self.ckks_params()  # raises ConfigError (a ValueError) naming the bad key
        return self

    def ckks_params(self) -> CKKSParams:
        """The CKKS parameters: the preset's, with any key given here replacing its value."""
        base = CKKS_PRESETS[Preset(self.preset)]
        return CKKSParams(
            poly_modulus_degree=self.poly_modulus_degree or base.poly_modulus_degree,
            coeff_mod_bit_sizes=tuple(self.coeff_mod_bit_sizes or base.coeff_mod_bit_sizes),
            scale_bits=self.scale_bits or base.scale_bits,
        )


__all__ = ["HEConfig", "Scheme"]
