"""The serialized message lengths match the documented encodings for several d and ratios."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from privfl.compression import keep_count, qsgd, random_k, scaled_sign, top_k


@pytest.mark.parametrize("d", [10, 4810, 65536, 65537, 200_000])
@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.5])
def test_sparse_message_lengths(d, ratio):
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, d)).astype(np.float32))
    k = keep_count(d, ratio)
    assert k == max(1, round(ratio * d))
    w = 2 if d <= 65536 else 4  # documented: uint16 indices up to 2^16 coordinates
    assert {len(m) for m in top_k(x, k).to_messages()} == {k * (w + 4)}
    seeded = random_k(x, k, np.array([1, 2], np.uint64), None, scale=True)
    assert {len(m) for m in seeded.to_messages()} == {8 + 4 * k}
    shared = random_k(x, k, None, 3, scale=True)
    assert {len(m) for m in shared.to_messages()} == {4 * k}


@pytest.mark.parametrize("d", [1, 7, 8, 4810, 100_001])
@pytest.mark.parametrize("levels,bits", [(1, 2), (2, 3), (4, 4), (16, 6), (255, 9)])
def test_qsgd_and_sign_message_lengths(d, levels, bits):
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(2, d)).astype(np.float32))
    p = qsgd(x, levels, [np.random.default_rng(0), np.random.default_rng(1)])
    assert {len(m) for m in p.to_messages()} == {4 + math.ceil(d * bits / 8)}
    assert {len(m) for m in scaled_sign(x).to_messages()} == {4 + math.ceil(d / 8)}


@pytest.mark.parametrize("bits", [1, 3, 6, 8, 9, 13, 16])
@pytest.mark.parametrize("d", [1, 5, 8, 1001])
def test_bit_packing_against_numpys_bit_order(bits, d):
    from privfl.compression.payload import pack_codes, unpack_codes

    codes = np.random.default_rng(bits).integers(0, 2**bits, size=(3, d))
    packed = pack_codes(codes, bits)
    # reference: every code's bits, least significant first, concatenated, numpy-packed
    ref_bits = ((codes[:, :, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(3, -1)
    np.testing.assert_array_equal(packed, np.packbits(ref_bits, axis=1, bitorder="little"))
    np.testing.assert_array_equal(unpack_codes(packed, d, bits), codes)
