"""The mask generator is AES-256-CTR under the full 256-bit seed: checked against AES-ECB of
the counter blocks, for uniformity, and for sensitivity to every seed bit."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scipy import stats

from privfl.defenses.secagg.masking import MaskExpander, pairwise_sign, prg

SEED = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")


def _reference(seed: bytes, words: int) -> np.ndarray:
    """AES-256-ECB of the big-endian counter blocks 0, 1, 2, ...: CTR mode by definition
    (NIST SP 800-38A, Sec. 6.5), computed independently of the CTR implementation."""
    blocks = -(-words * 4 // 16)
    counters = b"".join(i.to_bytes(16, "big") for i in range(blocks))
    enc = Cipher(algorithms.AES(seed), modes.ECB()).encryptor()
    stream = enc.update(counters) + enc.finalize()
    return np.frombuffer(stream[: words * 4], dtype="<u4")


def test_prg_is_aes256_ctr_from_counter_zero():
    np.testing.assert_array_equal(prg(SEED, 1001), _reference(SEED, 1001))
    assert prg(SEED, 8, np.uint64).tobytes() == _reference(SEED, 16).tobytes()


def test_prg_output_is_uniform():
    words = prg(SEED, 200_000)
    counts = np.bincount(words >> 24, minlength=256)  # top byte: 256 bins
    assert stats.chisquare(counts).pvalue > 1e-4
    low = np.bincount(words & 0xFF, minlength=256)  # bottom byte too
    assert stats.chisquare(low).pvalue > 1e-4


@pytest.mark.parametrize("bit", [0, 7, 31, 32, 128, 255])
def test_one_bit_of_the_seed_gives_an_unrelated_mask(bit):
    flipped = bytearray(SEED)
    flipped[bit // 8] ^= 1 << (bit % 8)
    a, b = prg(SEED, 100_000), prg(bytes(flipped), 100_000)
    assert np.count_nonzero(a == b) <= 2  # about 100_000 / 2^32 expected
    bits_differ = np.unpackbits((a ^ b).view(np.uint8)).mean()
    assert abs(bits_differ - 0.5) < 5 * np.sqrt(0.25 / (32 * 100_000))
    r = np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1]
    assert abs(r) < 5 / np.sqrt(100_000)


def test_seed_bits_do_not_cancel_as_in_a_32_bit_fold():
    # Flower's pseudo_rand_gen XOR-folds the key into 32 bits: flipping bit i and bit i + 32
    # together leaves the fold, hence its mask, unchanged. Every bit counts here.
    flipped = bytearray(SEED)
    flipped[0] ^= 1
    flipped[4] ^= 1
    fold = lambda s: np.bitwise_xor.reduce(np.frombuffer(s, dtype="<u4"))  # noqa: E731
    assert fold(SEED) == fold(bytes(flipped))  # the weak scheme could not tell them apart
    assert np.count_nonzero(prg(SEED, 1000) == prg(bytes(flipped), 1000)) == 0


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_expander_adds_and_subtracts_modulo_the_word(dtype):
    exp = MaskExpander(513, dtype)
    acc = np.full(513, np.iinfo(dtype).max - 3, dtype=dtype)
    start = acc.copy()
    exp.add(acc, SEED)
    mask = prg(SEED, 513, dtype)
    np.testing.assert_array_equal(acc, start + mask)  # numpy wraps unsigned addition
    exp.apply(acc, SEED, -1)
    np.testing.assert_array_equal(acc, start)


def test_pair_signs_cancel():
    assert pairwise_sign(3, 9) + pairwise_sign(9, 3) == 0
    with pytest.raises(ValueError):
        pairwise_sign(4, 4)


def test_short_seeds_are_refused():
    with pytest.raises(ValueError, match="256 bits"):
        prg(SEED[:16], 10)
