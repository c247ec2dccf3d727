"""Compressors against numpy references and their statistics: top-k is numpy's argpartition
set, random-k and QSGD are unbiased, decode(encode(x)) is what was sent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privfl.compression import (
    IndexMode,
    decode_qsgd,
    decode_sign,
    decode_sparse,
    majority_vote,
    qsgd,
    random_k,
    scaled_sign,
    top_k,
)


def _x(n=4, d=1000, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32))


@pytest.mark.parametrize("d,k", [(1000, 100), (70000, 7), (50, 50), (300, 1)])
def test_top_k_selects_numpys_argpartition_set(d, k):
    x = _x(3, d)
    p = top_k(x, k)
    for i in range(3):
        ref = np.argpartition(-np.abs(x[i].numpy()), k - 1)[:k] if k < d else np.arange(d)
        assert set(p.indices[i].tolist()) == set(ref.tolist())
        np.testing.assert_array_equal(p.values[i], x[i].numpy()[p.indices[i]])


def test_top_k_decodes_to_x_on_the_kept_coordinates_and_zero_elsewhere():
    x = _x(5, 70000)  # > 2^16: uint32 indices
    p = top_k(x, 700)
    out = decode_sparse(p.to_messages(), dim=70000, k=700, mode=IndexMode.EXPLICIT)
    kept = np.zeros((5, 70000), bool)
    np.put_along_axis(kept, p.indices, True, axis=1)
    np.testing.assert_array_equal(out.numpy()[kept], x.numpy()[kept])
    assert (out.numpy()[~kept] == 0).all()
    assert torch.equal(out, p.dense())


@pytest.mark.parametrize("shared", [False, True])
def test_random_k_roundtrip_and_shared_support(shared):
    x = _x(4, 2000)
    seeds = None if shared else np.array([11, 22, 33, 44], dtype=np.uint64)
    p = random_k(x, 50, seeds, 7 if shared else None, scale=False)
    mode = IndexMode.SHARED if shared else IndexMode.SEEDED
    out = decode_sparse(p.to_messages(), dim=2000, k=50, mode=mode, shared_seed=7)
    assert torch.equal(out, p.dense())
    np.testing.assert_array_equal(np.take_along_axis(out.numpy(), p.indices, 1), p.values)
    rows = [set(r.tolist()) for r in p.indices]
    assert all(r == rows[0] for r in rows) == shared


def _unbiased(draw, x: np.ndarray, draws: int, var: np.ndarray) -> None:
    """Mean of ``draws`` decodes within 5 standard errors of x at every coordinate (and the
    per-draw variance is not zero, so the test has teeth)."""
    total = np.zeros_like(x, dtype=np.float64)
    for t in range(draws):
        total += draw(t)
    mean = total / draws
    se = np.sqrt(var / draws) + 1e-9
    z = np.abs(mean - x) / se
    assert z.max() < 5.5, z.max()
    assert np.abs(mean - x).max() > 0


def test_random_k_is_unbiased_with_d_over_k_scaling():
    d, k = 200, 20
    x = _x(1, d).numpy()[0]
    var = x.astype(np.float64) ** 2 * (d / k - 1)  # E[(d/k 1[i kept] x)^2] - x^2

    def draw(t):
        return (
            random_k(  # noqa: E731
                torch.from_numpy(x[None]), k, np.array([t], np.uint64), None, scale=True
            )
            .dense()[0]
            .numpy()
        )

    _unbiased(draw, x, 4000, var)
    # without the scaling it is biased: the mean is x k/d
    biased = np.mean(
        [
            random_k(torch.from_numpy(x[None]), k, np.array([t], np.uint64), None, False)
            .dense()[0]
            .numpy()
            for t in range(2000)
        ],
        axis=0,
    )
    assert np.abs(biased - x * k / d).max() < np.abs(biased - x).max()


def test_qsgd_is_unbiased_and_roundtrips():
    d, s = 300, 4
    x = _x(1, d).numpy()[0]
    norm = np.linalg.norm(x.astype(np.float64))
    y = np.abs(x) / norm * s
    p_up = y - np.floor(y)
    var = (norm / s) ** 2 * p_up * (1 - p_up)  # Bernoulli rounding variance
    rng = np.random.default_rng(5)
    _unbiased(lambda t: qsgd(torch.from_numpy(x[None]), s, [rng]).dense()[0].numpy(), x, 4000, var)
    p = qsgd(_x(6, 1001), 16, [np.random.default_rng(i) for i in range(6)])
    assert torch.equal(decode_qsgd(p.to_messages(), dim=1001, levels=16), p.dense())
    assert p.xi.max() <= 16


def test_sign_roundtrip_and_majority_vote():
    x = _x(5, 999)
    p = scaled_sign(x)
    out = decode_sign(p.to_messages(), dim=999)
    assert torch.equal(out, p.dense())
    np.testing.assert_allclose(out.abs()[:, 0].numpy(), np.abs(x.numpy()).mean(1), rtol=1e-6)
    agg = majority_vote(out).numpy()
    votes = np.where(x.numpy() < 0, -1, 1).sum(0)
    np.testing.assert_array_equal(np.sign(agg), np.sign(votes))
    np.testing.assert_allclose(np.abs(agg[votes != 0]), np.abs(x.numpy()).mean(1).mean(), rtol=1e-5)


def test_a_message_of_the_wrong_length_is_rejected():
    p = top_k(_x(2, 100), 10)
    msgs = list(p.to_messages())
    msgs[1] = msgs[1][:-1]
    with pytest.raises(ValueError, match="expected 60 bytes"):
        decode_sparse(msgs, dim=100, k=10, mode=IndexMode.EXPLICIT)
