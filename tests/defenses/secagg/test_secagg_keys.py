"""X25519 + HKDF key agreement and AES-GCM share encryption bound to round and parties."""

from __future__ import annotations

import pytest

from privfl.defenses.secagg.constants import Purpose
from privfl.defenses.secagg.errors import ShareIntegrityError
from privfl.defenses.secagg.keys import KeyPair, agree, decrypt_share, encrypt_share


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
