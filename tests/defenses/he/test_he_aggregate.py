"""The decrypted aggregate against the plaintext weighted mean computed independently in
float64, through the real parties (clients, server, key holder) and real ciphertext bytes.

The documented bound: the key holder rounds the decrypted sums ``[sum w_i delta_i, sum w_i]``
to a grid ``g``, the smallest power of two at least twice their noise bound (``n`` times the
preset's ``noise_bound``, plus ``2^-40`` of the largest value rounded up to a power of two), so
each rounded sum is within ``g`` of the true one and an integer total weight is exact."""

from __future__ import annotations

import math
import secrets

import numpy as np
import pytest
import torch

from privfl.defenses.he import (
    CKKS_PRESETS,
    CKKSScheme,
    ClientEncryptor,
    Decoded,
    HeadroomError,
    HEServer,
    KeyHolder,
    Preset,
)
from privfl.update import UpdateBatch


def _batch(seed: int, n: int, dim: int, scale: float = 1e-2) -> UpdateBatch:
    rng = np.random.default_rng(seed)
    deltas = torch.from_numpy((scale * rng.standard_normal((n, dim))).astype(np.float32))
    return UpdateBatch(
        client_ids=rng.choice(10 * n, size=n, replace=False).astype(np.int64),
        deltas=deltas,
        weights=rng.integers(1, 500, size=n).astype(np.float64),
    )


def _reference(batch: UpdateBatch) -> np.ndarray:
    """sum_i w_i delta_i / sum_i w_i in float64 (numpy, independent of privfl's torch code)."""
    d = batch.deltas.numpy().astype(np.float64)
    return (batch.weights[:, None] * d).sum(axis=0) / batch.weights.sum()


def _grid(preset: Preset, batch: UpdateBatch) -> float:
    """The documented rounding step, from the plaintext sums."""
    ref = _reference(batch)
    total = batch.weights.sum()
    peak = 2.0 ** math.ceil(math.log2(max(np.max(np.abs(ref)) * total, total)))
    noise = len(batch) * CKKS_PRESETS[preset].noise_bound + peak * 2.0**-40
    return 2.0 ** math.ceil(math.log2(2 * noise))


def _bound(preset: Preset, batch: UpdateBatch) -> np.ndarray:
    """Per value, the largest error of the mean: each sum within one grid step ``g``, so
    ``|A'/B' - A/B| <= (g + |A/B| g) / (B - g)``, plus the float32 cast of the mean."""
    ref, total, g = _reference(batch), batch.weights.sum(), _grid(preset, batch)
    return (g + np.abs(ref) * g) / (total - g) + np.abs(ref) * 2.0**-23


def he_aggregate(batch: UpdateBatch, preset: Preset, round: int = 1) -> Decoded:
    """Clients -> server -> key holder, streaming (one client's message in memory at a time)."""
    scheme = CKKSScheme(CKKS_PRESETS[preset])
    holder = KeyHolder(scheme, min_clients=1)
    clients = ClientEncryptor(scheme, holder.public_context, enrol=holder.enrol)
    server = HEServer(scheme, holder.public_context)
    dim = batch.deltas.shape[1]
    messages = zip(batch.client_ids.tolist(), clients.encrypt(batch, round=round)[0], strict=True)
    aggregate = server.aggregate(messages, round=round, dim=dim)
    return holder.decrypt(aggregate, round=round, dim=dim, count=len(batch))


def _check(batch: UpdateBatch, preset: Preset, seed: int) -> None:
    out = he_aggregate(batch, preset)
    ref = _reference(batch)
    assert out.delta.dtype == np.float32 and out.delta.shape == ref.shape
    err = np.abs(out.delta - ref)
    assert np.all(err <= _bound(preset, batch)), f"error {err.max():.3g} (seed {seed})"
    # Integer weights lie on the grid, which is twice the noise bound: recovered exactly.
    assert out.total_weight == batch.weights.sum() and out.grid == _grid(preset, batch)
    assert sorted(out.contributors.tolist()) == sorted(batch.client_ids.tolist())
    # The data discriminate: ignoring the weights would fail the same tolerance.
    unweighted = batch.deltas.numpy().astype(np.float64).mean(axis=0)
    assert np.any(np.abs(unweighted - ref) > 10 * _bound(preset, batch))


@pytest.mark.parametrize(("dim", "n"), [(1_000_000, 2), (20_000, 100), (1, 3)])
def test_default_preset_matches_weighted_mean(dim, n):
    seed = secrets.randbits(32)
    _check(_batch(seed, n, dim), Preset.DEFAULT, seed)


@pytest.mark.parametrize("preset", [Preset.FAST, Preset.HIGH_PRECISION])
def test_other_presets_match_weighted_mean(preset):
    seed = secrets.randbits(32)
    _check(_batch(seed, 10, 5_000), preset, seed)


@pytest.mark.slow
def test_default_preset_matches_weighted_mean_d1e6_n100():
    seed = secrets.randbits(32)
    _check(_batch(seed, 100, 1_000_000), Preset.DEFAULT, seed)


@pytest.mark.parametrize("preset", [Preset.DEFAULT, Preset.FAST])  # one prime; a special one
def test_error_is_within_the_documented_bound(preset):
    # Per value, each decrypted sum is within one grid step of the true sum (the noise is
    # below half a step, the rounding at most half a step): the error of the mean is below
    # that step over the total weight (plus float32 rounding).
    seed = secrets.randbits(32)
    batch = _batch(seed, 20, 3_000)
    out = he_aggregate(batch, preset)
    ref = _reference(batch)
    assert np.max(np.abs(out.delta - ref)) <= np.max(_bound(preset, batch)), seed
    # What is returned is the rounded sum divided by the exact total weight: a multiple of
    # the grid up to the float32 cast, not the noisy sum.
    steps = out.delta.astype(np.float64) * out.total_weight / _grid(preset, batch)
    assert np.max(np.abs(steps - np.round(steps))) <= np.max(np.abs(steps)) * 2.0**-22


def test_headroom_is_checked_before_encryption():
    # default: |sum| < 2^18; each client may send at most 2^18 / n in any slot.
    p = CKKS_PRESETS[Preset.DEFAULT]
    batch = _batch(0, 4, 10)
    limit = 2.0**p.headroom_bits / 4
    deltas = batch.deltas.clone()
    deltas[2, 5] = limit / batch.weights[2] * 1.01
    with pytest.raises(HeadroomError, match=f"client {batch.client_ids[2]}.*2\\^18"):
        he_aggregate(batch.with_deltas(deltas), Preset.DEFAULT)
    deltas[2, 5] = limit / batch.weights[2] * 0.99  # just inside: exact
    edge = batch.with_deltas(deltas)
    out = he_aggregate(edge, Preset.DEFAULT)
    assert np.all(np.abs(out.delta - _reference(edge)) <= _bound(Preset.DEFAULT, edge))
