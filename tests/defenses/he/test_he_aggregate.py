"""The decrypted aggregate against the plaintext weighted mean computed independently in
float64, through the real parties (clients, server, key holder) and real ciphertext bytes."""

from __future__ import annotations

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


def he_aggregate(batch: UpdateBatch, preset: Preset, round: int = 1) -> Decoded:
    """Clients -> server -> key holder, streaming (one client's message in memory at a time)."""
    scheme = CKKSScheme(CKKS_PRESETS[preset])
    holder = KeyHolder(scheme, min_clients=1)
    clients = ClientEncryptor(scheme, holder.public_context)
    server = HEServer(scheme, holder.public_context)
    dim = batch.deltas.shape[1]
    messages = zip(batch.client_ids.tolist(), clients.encrypt(batch, round=round)[0], strict=True)
    aggregate = server.aggregate(messages, round=round, dim=dim)
    return holder.decrypt(aggregate, round=round, dim=dim, count=len(batch))


def _check(batch: UpdateBatch, preset: Preset, seed: int) -> None:
    out = he_aggregate(batch, preset)
    ref = _reference(batch)
    rel = np.linalg.norm(out.delta - ref) / np.linalg.norm(ref)
    assert out.delta.dtype == np.float32 and out.delta.shape == ref.shape
    assert rel <= 1e-6, f"relative error {rel:.3g} (seed {seed})"
    # The weight slot carries the CKKS noise of each of the n summands (absolute, see
    # CKKSParams.noise_bound).
    noise = len(batch) * CKKS_PRESETS[preset].noise_bound
    assert out.total_weight == pytest.approx(batch.weights.sum(), abs=noise)
    # The data discriminate: ignoring the weights would fail the same tolerance.
    unweighted = batch.deltas.numpy().astype(np.float64).mean(axis=0)
    assert np.linalg.norm(unweighted - ref) / np.linalg.norm(ref) > 1e-3


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
def test_error_is_within_the_documented_noise(preset):
    # Per value, the absolute error of the weighted sum is below count * noise_bound, so the
    # error of the mean is below that over the total weight (plus float32 rounding).
    seed = secrets.randbits(32)
    batch = _batch(seed, 20, 3_000)
    out = he_aggregate(batch, preset)
    ref = _reference(batch)
    bound = 20 * CKKS_PRESETS[preset].noise_bound / batch.weights.sum()
    assert np.max(np.abs(out.delta - ref)) <= bound + np.max(np.abs(ref)) * 2**-23, seed


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
    out = he_aggregate(batch.with_deltas(deltas), Preset.DEFAULT)
    ref = _reference(batch.with_deltas(deltas))
    assert np.linalg.norm(out.delta - ref) / np.linalg.norm(ref) < 1e-6
