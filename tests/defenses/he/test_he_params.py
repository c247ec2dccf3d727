"""Parameters: the security table against SEAL's, preset properties, config validation."""

from __future__ import annotations

import pytest
import tenseal as ts
import tenseal.sealapi as sealapi
from conftest import small_config

from privfl.defenses.he import (
    CKKS_PRESETS,
    CKKSParams,
    CKKSScheme,
    HEConfig,
    Preset,
    SecurityLevel,
)
from privfl.defenses.he.params import MAX_COEFF_MODULUS_BITS, POLY_MODULUS_DEGREES, security_level
from privfl.defenses.he.seal_context import single_prime_ckks_context
from privfl.errors import ConfigError

_SEAL_LEVELS = {
    SecurityLevel.TC128: sealapi.SEC_LEVEL_TYPE.TC128,
    SecurityLevel.TC192: sealapi.SEC_LEVEL_TYPE.TC192,
    SecurityLevel.TC256: sealapi.SEC_LEVEL_TYPE.TC256,
}


@pytest.mark.parametrize("level", list(SecurityLevel))
@pytest.mark.parametrize("n", POLY_MODULUS_DEGREES)
def test_security_table_matches_seal(n, level):
    # The HE standard's table, written out here, against SEAL's own copy of it.
    assert MAX_COEFF_MODULUS_BITS[level][n] == sealapi.CoeffModulus.MaxBitCount(
        n, _SEAL_LEVELS[level]
    )


def test_security_table_published_values():
    # HomomorphicEncryption.org standard (Albrecht et al. 2018), Table 1, ternary secret,
    # classical: log q <= 109 at n = 4096 and 218 at n = 8192 for 128 bits; 118 at 8192 for 256.
    assert MAX_COEFF_MODULUS_BITS[SecurityLevel.TC128][4096] == 109
    assert MAX_COEFF_MODULUS_BITS[SecurityLevel.TC128][8192] == 218
    assert MAX_COEFF_MODULUS_BITS[SecurityLevel.TC256][8192] == 118


@pytest.mark.parametrize("preset", list(Preset))
def test_presets_are_128_bit_secure_and_seal_accepts_them(preset):
    p = CKKS_PRESETS[preset]
    assert p.security >= SecurityLevel.TC128
    # SEAL checks the same table (sec_level tc128) and builds the context.
    ctx = CKKSScheme(p).create_context()
    assert ctx.is_private() and ctx.global_scale == 2.0**p.scale_bits
    assert ctx.has_relin_keys() == p.special_prime  # one prime: no key switching at all


def test_single_prime_context_is_what_tenseal_cannot_build():
    p = CKKS_PRESETS[Preset.DEFAULT]
    assert p.coeff_mod_bit_sizes == (57,) and not p.special_prime
    with pytest.raises(RuntimeError, match="keyswitching is not supported"):
        ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[57])
    private = single_prime_ckks_context(8192, 57, 2.0**37)
    public = private.copy()
    public.make_context_public(generate_galois_keys=False, generate_relin_keys=False)
    assert not public.has_secret_key() and not public.has_relin_keys()
    x = [0.5, -1.25, 3.0]
    data = ts.ckks_vector(public, x).serialize()  # encrypts with the public key alone
    with pytest.raises(ValueError, match="secret_key"):
        ts.ckks_vector_from(public, data).decrypt()
    got = ts.ckks_vector_from(private, data).decrypt()
    assert max(abs(a - b) for a, b in zip(got, x, strict=False)) < 1e-5
    # Another key holder's context (same parameters) decrypts it to garbage.
    other = ts.ckks_vector_from(single_prime_ckks_context(8192, 57, 2.0**37), data).decrypt()
    assert max(abs(a - b) for a, b in zip(other, x, strict=False)) > 1.0


def test_preset_figures():
    d = CKKS_PRESETS[Preset.DEFAULT]
    assert (d.slots, d.data_bits, d.headroom_bits) == (4096, 57, 18)
    assert d.security == SecurityLevel.TC256  # 57 bits <= 118 at N = 8192
    f = CKKS_PRESETS[Preset.FAST]
    assert (f.slots, f.security) == (2048, SecurityLevel.TC128)  # 90 bits: 75 < 90 <= 109
    h = CKKS_PRESETS[Preset.HIGH_PRECISION]
    assert (h.data_bits, h.headroom_bits) == (120, 66)


def test_security_level_boundaries():
    assert security_level(4096, 109) == SecurityLevel.TC128
    assert security_level(4096, 110) is None
    assert security_level(4096, 58) == SecurityLevel.TC256


def test_insecure_ring_is_rejected_like_seal_rejects_it():
    with pytest.raises(ConfigError, match="at most 109"):
        CKKSParams(4096, (60, 50), 40)
    with pytest.raises(ValueError, match="encryption parameters are not set correctly"):
        ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=4096, coeff_mod_bit_sizes=[60, 50])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"poly_modulus_degree": 3000}, "poly_modulus_degree must be one of"),
        ({"coeff_mod_bit_sizes": [60, 60, 60, 60]}, "coeff_mod_bit_sizes .* allows at most 218"),
        ({"coeff_mod_bit_sizes": [61, 40]}, "coeff_mod_bit_sizes must hold primes of 20..60"),
        ({"scale_bits": 10}, "scale_bits must be >= 20"),
        ({"scale_bits": 56}, "scale_bits = 56 leaves no room"),
    ],
)
def test_bad_parameters_name_the_key(kwargs, match):
    with pytest.raises(ConfigError, match=f"defense\\.he\\.{match}"):
        small_config(defense={"he": {"scheme": "ckks", **kwargs}})


def test_bfv_needs_a_special_prime():
    with pytest.raises(ConfigError, match="BFV needs at least two primes"):
        small_config(defense={"he": {"scheme": "bfv", "coeff_mod_bit_sizes": [60]}})


def test_overrides_replace_single_preset_values():
    cfg = HEConfig(preset="fast", scale_bits=32)
    assert cfg.params() == CKKSParams(4096, (50, 40), 32)
    assert small_config(defense={"he": {}}).defense.he == HEConfig()
    assert small_config().defense.he is None
