"""A TenSEAL CKKS context whose coefficient modulus is a single prime.

Why: SEAL encrypts with the public key at the *key* level (every prime, SEAL's special prime
included) and then switches the ciphertext down to the data level, dividing by the special
prime. A modulus of one prime has no special prime: encryption works on one prime and skips
the switch (measured at N = 8192: encode + encrypt 0.69 against 1.05 us per value in SEAL,
about 25% less through TenSEAL). The price is key switching, which only relinearization and
rotations need; aggregation only adds.

TenSEAL's ``ts.context()`` always generates relinearization keys, which need a special prime,
so it refuses such a modulus. It does *load* one: this module generates the keys with SEAL
itself (``tenseal.sealapi``) and hands TenSEAL its own serialized context, a
``TenSEALContextProto`` (``tenseal/proto/tensealcontext.proto``) holding the SEAL-saved
encryption parameters, public key and secret key, with ``relin_keys_generated = false``.
The protobuf is written by hand (five fields; TenSEAL ships the schema, not Python classes).
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path
from typing import Any

import tenseal as ts
import tenseal.sealapi as seal

from privfl.errors import ConfigError

#: TenSEAL's flags auto_relin | auto_rescale | auto_mod_switch, as ``ts.context()`` sets them.
_AUTO_FLAGS = 0b111
_ASYMMETRIC = 0  # TenSEAL's encryption_type::asymmetric (public-key encryption)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def _saved(obj: Any) -> bytes:
    """A SEAL object as SEAL's ``save`` writes it (the binding only saves to a path)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seal"
        obj.save(str(path))
        return path.read_bytes()


def single_prime_ckks_context(
    poly_modulus_degree: int, prime_bits: int, scale: float
) -> ts.Context:
    """A private TenSEAL CKKS context (secret and public key, no relinearization or Galois
    keys) over a coefficient modulus of one ``prime_bits``-bit prime, with ``scale`` as its
    global scale. SEAL checks the parameters against 128-bit security."""
    params = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    params.set_poly_modulus_degree(poly_modulus_degree)
    params.set_coeff_modulus(seal.CoeffModulus.Create(poly_modulus_degree, [prime_bits]))
    context = seal.SEALContext(params, True, seal.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():
        raise ConfigError(
            f"defense.he: SEAL rejects N = {poly_modulus_degree}, one {prime_bits}-bit prime: "
            f"{context.parameters_error_message()}"
        )
    keygen = seal.KeyGenerator(context)
    public_key = seal.PublicKey()
    keygen.create_public_key(public_key)
    public = (
        _length_delimited(1, _saved(public_key))
        + _key(2, 0)
        + _varint(_AUTO_FLAGS)
        + _key(3, 1)
        + struct.pack("<d", scale)
    )
    private = _length_delimited(1, _saved(keygen.secret_key()))  # no relin/Galois keys
    proto = (
        _length_delimited(1, _saved(params))
        + _length_delimited(2, public)
        + _length_delimited(3, private)
        + _key(4, 0)
        + _varint(_ASYMMETRIC)
    )
    built = ts.context_from(proto)
    if not built.has_secret_key() or built.global_scale != scale:  # the fields landed
        raise RuntimeError("TenSEAL did not load the hand-built context as written")
    return built


__all__ = ["single_prime_ckks_context"]
