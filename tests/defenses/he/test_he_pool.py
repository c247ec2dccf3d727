"""Encryption in worker processes: the same aggregate as in-process encryption (BFV: bit for
bit; CKKS: to its noise), every client's message in order, from a public context only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import small_config

from privfl.defenses.he import (
    CKKS_PRESETS,
    BFVParams,
    BFVScheme,
    CKKSScheme,
    ClientEncryptor,
    HEConfig,
    HEServer,
    KeyHolder,
    Preset,
    RoundCheck,
)
from privfl.defenses.he.envelope import MessageKind, read_envelope
from privfl.defenses.he.packing import chunk_count
from privfl.defenses.he.pool import EncryptionPool, resolve_workers
from privfl.errors import ConfigError
from privfl.federation import Federation
from privfl.update import UpdateBatch


def _batch(n: int, dim: int, seed: int = 0) -> UpdateBatch:
    rng = np.random.default_rng(seed)
    return UpdateBatch(
        client_ids=np.arange(n, dtype=np.int64) * 7 + 1,
        deltas=torch.from_numpy((0.1 * rng.standard_normal((n, dim))).astype(np.float32)),
        weights=rng.integers(1, 60, n).astype(np.float64),
    )


def _aggregate(scheme, holder, batch, workers, round=1):
    clients = ClientEncryptor(scheme, holder.public_context, workers=workers, enrol=holder.enrol)
    server = HEServer(scheme, holder.public_context)
    rng = lambda client: np.random.default_rng([client, 1])  # noqa: E731
    messages = list(clients.encrypt(batch, round=round, rng=rng)[0])
    clients.close()
    dim = batch.deltas.shape[1]
    for cid, m in zip(batch.client_ids.tolist(), messages, strict=True):  # in batch order
        chunks = chunk_count(dim, scheme.slots)
        env = read_envelope(
            m,
            kind=MessageKind.UPDATE,
            scheme=scheme.code,
            key=holder.key_id,
            round=round,
            chunks=chunks,
            sender=cid,
        )
        assert env.count == 1 and env.vouchers[0][0] == cid
    sent = zip(batch.client_ids.tolist(), messages, strict=True)
    agg = server.aggregate(sent, round=round, dim=dim)
    return holder.decrypt(agg, round=round, dim=dim, count=len(batch))


def test_bfv_pool_gives_the_in_process_sum_exactly():
    # 7 clients x 3 chunks = 21 tasks: more than the window of 8, so rows complete out of
    # submission rhythm and must still come back in order.
    scheme = BFVScheme(BFVParams(4096, (60, 40), 30), clip=1.0, max_weight=100.0)
    holder = KeyHolder(scheme, min_clients=1)
    batch = _batch(7, 3 * 4096 - 5)
    one = _aggregate(scheme, holder, batch, workers=1, round=1)
    two = _aggregate(scheme, holder, batch, workers=2, round=2)  # one decryption a round
    assert np.array_equal(one.delta, two.delta)
    assert one.total_weight == two.total_weight == pytest.approx(batch.weights.sum(), rel=1e-6)


def test_ckks_pool_gives_the_weighted_mean():
    scheme = CKKSScheme(CKKS_PRESETS[Preset.FAST])
    holder = KeyHolder(scheme, min_clients=1)
    batch = _batch(5, 10_000, seed=3)
    out = _aggregate(scheme, holder, batch, workers=2)
    d = batch.deltas.numpy().astype(np.float64)
    total = batch.weights.sum()
    ref = (batch.weights[:, None] * d).sum(0) / total
    # Sums rounded to a power of two >= twice their noise bound (5 fresh ciphertexts and the
    # decoding's 2^-40 of the largest value, here the total weight): within one step.
    noise = 5 * CKKS_PRESETS[Preset.FAST].noise_bound + 2.0 ** np.ceil(np.log2(total)) * 2.0**-40
    g = 2.0 ** np.ceil(np.log2(2 * noise))
    assert out.total_weight == total
    bound = (g + np.abs(ref) * g) / (total - g) + np.abs(ref) * 2.0**-23  # + float32 cast
    assert np.all(np.abs(out.delta - ref) <= bound)
    assert np.max(np.abs(ref)) > 1e-2


def test_rows_come_back_in_order_with_a_small_window():
    scheme = CKKSScheme(CKKS_PRESETS[Preset.FAST])
    holder = KeyHolder(scheme, min_clients=1)
    pool = EncryptionPool(scheme, holder.public_context, workers=2)
    rows = [np.full((k, scheme.slots), float(i)) for i, k in enumerate([1, 4, 2, 9, 1])]
    key = holder.enrol(0).check_key
    out = list(pool.encrypt_rows(iter(rows), check_key=key, round=3))
    pool.close()
    assert [len(r) for r, _ in out] == [1, 4, 2, 9, 1]
    check = RoundCheck(scheme, holder._context, key, 3)
    for i, (row, sketches) in enumerate(out):
        assert sketches.shape == (len(row), 2, 1)
        for data, sketch in zip(row, sketches, strict=True):
            vector = scheme.load(holder._context, data, "t")
            assert np.allclose(np.asarray(scheme.decrypt(vector)), i, atol=1e-3)
            # The worker's sketch is the key holder's sketch of the same ciphertext.
            assert np.array_equal(sketch, check.sketch(vector))


def test_workers_setting():
    assert resolve_workers(3) == 3
    assert resolve_workers(0) >= 1
    with pytest.raises(ConfigError):
        resolve_workers(-1)
    with pytest.raises(ValueError, match="workers"):
        HEConfig(workers=-2)
    assert HEConfig(workers=0).workers == 0


def test_a_run_with_encryption_workers_gives_the_same_model():
    # BFV is exact: the model after a round does not depend on who encrypted.
    runs = []
    for workers in (1, 2):
        cfg = small_config(
            model={"name": "mlp", "hidden": [256]},  # 16,906 parameters: 3 chunks a client
            defense={"he": {"scheme": "bfv", "workers": workers}},
        )
        fed = Federation(cfg)
        metrics = fed.run_round()
        runs.append((fed.params, metrics))
    assert torch.equal(runs[0][0], runs[1][0])
    assert runs[0][1]["he_ciphertexts_per_client"] == 3
    assert runs[0][1]["bytes_up"] == runs[1][1]["bytes_up"]
