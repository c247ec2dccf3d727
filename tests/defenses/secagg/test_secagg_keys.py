"""X25519 + HKDF key agreement and AES-GCM share encryption bound to round and parties."""

from __future__ import annotations

import pytest
import sympy
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from privfl.defenses.secagg.constants import Purpose
from privfl.defenses.secagg.errors import ShareIntegrityError
from privfl.defenses.secagg.keys import (
    LOW_ORDER_KEYS,
    P25519,
    KeyPair,
    agree,
    check_public_key,
    decrypt_share,
    encrypt_share,
)


def test_agreement_is_symmetric_and_separated_by_purpose_round_and_pair():
    a, b, c = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    k_ab = agree(a.private, b.public, purpose=Purpose.PAIRWISE_MASK, round=3, a=1, b=2)
    assert k_ab == agree(b.private, a.public, purpose=Purpose.PAIRWISE_MASK, round=3, a=2, b=1)
    assert len(k_ab) == 32
    others = {
        agree(a.private, b.public, purpose=Purpose.SHARE_ENCRYPTION, round=3, a=1, b=2),
        agree(a.private, b.public, purpose=Purpose.PAIRWISE_MASK, round=4, a=1, b=2),
        agree(a.private, b.public, purpose=Purpose.PAIRWISE_MASK, round=3, a=1, b=5),
        agree(a.private, c.public, purpose=Purpose.PAIRWISE_MASK, round=3, a=1, b=2),
    }
    assert k_ab not in others and len(others) == 4


def test_a_rebuilt_private_key_is_the_same_key():
    kp = KeyPair.generate()
    assert KeyPair.from_private_bytes(kp.private_bytes()).public == kp.public


def test_share_ciphertexts_open_only_for_their_round_sender_and_receiver():
    key = bytes(range(32))
    ct = encrypt_share(key, b"share", round=7, sender=1, receiver=2)
    assert decrypt_share(key, ct, round=7, sender=1, receiver=2) == b"share"
    for wrong in (
        {"round": 6, "sender": 1, "receiver": 2},  # replayed from another round
        {"round": 7, "sender": 3, "receiver": 2},  # claimed by another sender
        {"round": 7, "sender": 1, "receiver": 4},
    ):  # redirected
        with pytest.raises(ShareIntegrityError):
            decrypt_share(key, ct, **wrong)
    tampered = bytearray(ct)
    tampered[-20] ^= 1
    with pytest.raises(ShareIntegrityError):
        decrypt_share(key, bytes(tampered), round=7, sender=1, receiver=2)
    with pytest.raises(ShareIntegrityError):
        decrypt_share(bytes(32), ct, round=7, sender=1, receiver=2)


def test_nonces_are_fresh():
    key = bytes(32)
    assert encrypt_share(key, b"x", round=1, sender=1, receiver=2) != encrypt_share(
        key, b"x", round=1, sender=1, receiver=2
    )


def _roots(expr, x) -> set[int]:
    """The roots in GF(2^255 - 19) of a polynomial (its linear factors, by sympy)."""
    _, factors = sympy.Poly(expr, x, modulus=P25519).factor_list()
    out = set()
    for f, _ in factors:
        if f.degree() == 1:
            a, b = (int(c) for c in f.all_coeffs())
            out.add(-b * pow(a, -1, P25519) % P25519)
    return out


def test_the_low_order_keys_are_exactly_the_small_torsion():
    # Independent derivation: with x-only Montgomery doubling on y^2 = x^3 + A x^2 + x
    # (curve and twist at once), x(2P) = (x^2 - 1)^2 / (4 x (x^2 + A x + 1)) and 2P = O iff
    # the denominator vanishes. The u with 2^j P = O for j = 1, 2, 3, 4: the 2-power torsion
    # stops at order 8 (Curve25519's cofactor; the twist's is 4), and it is the list.
    x, a = sympy.symbols("x"), 486662
    level = _roots(x * (x**2 + a * x + 1), x)  # order 2
    sizes = []
    for _ in range(3):
        nxt = set(level)
        for r in level:
            nxt |= _roots((x**2 - 1) ** 2 - 4 * r * x * (x**2 + a * x + 1), x)
        sizes.append(len(nxt))
        level = nxt
    assert sizes == [3, 5, 5]  # orders 4, 8, then nothing of order 16
    assert level == set(LOW_ORDER_KEYS)


def test_public_keys_are_checked_where_an_exchange_would_fail():
    sk = KeyPair.generate().private
    for u in sorted(LOW_ORDER_KEYS):
        raw = u.to_bytes(32, "little")
        with pytest.raises(ValueError):  # what crashed a round before (issue 16, item 2)
            sk.exchange(X25519PublicKey.from_public_bytes(raw))
        with pytest.raises(ValueError, match="low-order"):
            check_public_key(raw)
    for u in (P25519, P25519 + 1, 2**256 - 1):  # non-canonical encodings of 0, 1, 18
        with pytest.raises(ValueError, match="non-canonical"):
            check_public_key(u.to_bytes(32, "little"))
    with pytest.raises(ValueError, match="32 bytes"):
        check_public_key(bytes(31))
    for _ in range(20):  # honest keys pass, and so do their neighbours in the field
        pk = KeyPair.generate().public
        check_public_key(pk)
        assert len(sk.exchange(X25519PublicKey.from_public_bytes(pk))) == 32
    check_public_key((2).to_bytes(32, "little"))
    with pytest.raises(ValueError, match="low-order"):
        agree(sk, bytes(32), purpose=Purpose.PAIRWISE_MASK, round=1, a=1, b=2)
