"""Foreign, truncated and altered ciphertexts: a clear PrivflError, and in a run the round is
aborted with the model unchanged."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tenseal as ts
import torch
from conftest import small_config

from privfl.defenses.he import (
    CKKS_PRESETS,
    CiphertextError,
    CKKSScheme,
    ClientEncryptor,
    HEChannel,
    HEMetric,
    HEServer,
    KeyHolder,
    Preset,
)
from privfl.defenses.he.envelope import DIGEST_BYTES, Envelope, MessageKind, read_envelope
from privfl.errors import PrivflError
from privfl.federation import Federation
from privfl.update import UpdateBatch

SCHEME = CKKSScheme(CKKS_PRESETS[Preset.FAST])
DIM = 3000  # two ciphertexts per client at N = 4096


def _batch(n: int = 3) -> UpdateBatch:
    rng = np.random.default_rng(1)
    return UpdateBatch(
        client_ids=np.arange(n, dtype=np.int64),
        deltas=torch.from_numpy(rng.standard_normal((n, DIM)).astype(np.float32)),
        weights=rng.integers(1, 50, n).astype(np.float64),
    )


def _messages(holder: KeyHolder, batch: UpdateBatch, round: int = 1) -> list[tuple[int, bytes]]:
    clients = ClientEncryptor(SCHEME, holder.public_context)
    return list(zip(batch.client_ids.tolist(), clients.encrypt(batch, round=round), strict=True))


def _rewrap(message: bytes, chunks: tuple[bytes, ...], holder: KeyHolder) -> bytes:
    """The same header (this run's key id), other ciphertext bytes, a correct digest: what a
    client sending bad ciphertexts, or a forged header, looks like."""
    env = read_envelope(
        message, kind=MessageKind.UPDATE, scheme=SCHEME.code, key=holder.key_id, round=1, chunks=2
    )
    return Envelope(env.kind, env.scheme, env.key_id, env.round, env.sender, 1, chunks).to_bytes()


@pytest.fixture(scope="module")
def setup():
    holder = KeyHolder(SCHEME, min_clients=1)
    return holder, HEServer(SCHEME, holder.public_context), _messages(holder, _batch())


def _aggregate(setup, replace: dict[int, bytes]) -> None:
    holder, server, messages = setup
    sent = [(c, replace.get(i, m)) for i, (c, m) in enumerate(messages)]
    aggregate = server.aggregate(sent, round=1, dim=DIM)
    holder.decrypt(aggregate, round=1, dim=DIM, count=len(sent))


def test_valid_messages_pass(setup):
    _aggregate(setup, {})


def test_truncated_and_flipped_bytes_are_rejected(setup):
    m = setup[2][1][1]
    for bad in (m[: len(m) // 2], m[:-1], b""):
        with pytest.raises(CiphertextError, match="truncated"):
            _aggregate(setup, {1: bad})
    rng = np.random.default_rng(0)
    for pos in rng.integers(0, len(m), 20):
        flipped = bytearray(m)
        flipped[pos] ^= 0x10
        with pytest.raises(CiphertextError) as info:
            _aggregate(setup, {1: bytes(flipped)})
        assert isinstance(info.value, PrivflError)


def test_ciphertext_of_another_context_is_rejected(setup):
    other = KeyHolder(SCHEME)
    foreign = _messages(other, _batch())[1][1]
    with pytest.raises(CiphertextError, match="client 1: encrypted under another context"):
        _aggregate(setup, {1: foreign})
    # A forged header with this run's key id around the foreign ciphertexts passes the server
    # (it cannot tell) but not the key holder: the sum decodes far outside the valid range.
    env = read_envelope(
        foreign, kind=MessageKind.UPDATE, scheme=SCHEME.code, key=other.key_id, round=1, chunks=2
    )
    forged = _rewrap(setup[2][1][1], env.chunks, setup[0])
    with pytest.raises(CiphertextError, match="not a sum of valid updates"):
        _aggregate(setup, {1: forged})


def test_bad_ciphertext_bytes_inside_a_valid_envelope_are_rejected(setup):
    holder, _, messages = setup
    env = read_envelope(
        messages[1][1],
        kind=MessageKind.UPDATE,
        scheme=SCHEME.code,
        key=holder.key_id,
        round=1,
        chunks=2,
    )
    c0, c1 = env.chunks
    # another parameter set (the default preset's ring)
    other = CKKSScheme(CKKS_PRESETS[Preset.DEFAULT])
    alien = other.encrypt(ts.context_from(KeyHolder(other).public_context), np.zeros(4096))
    for chunks, match in [
        ((c0[:-100], c1), "client 1, ciphertext 0: not a ciphertext of these parameters"),
        ((c0, b""), "client 1, ciphertext 1: 0 ciphertext\\(s\\) of 0 values"),
        ((c0, alien), "client 1, ciphertext 1: not a ciphertext of these parameters"),
    ]:
        with pytest.raises(CiphertextError, match=match):
            _aggregate(setup, {1: _rewrap(messages[1][1], chunks, holder)})


def _corrupt_round(target: int):
    def network(messages):
        out = []
        for client, data in messages:
            if network.round == target and client == messages[0][0]:
                data = data[:-DIGEST_BYTES] + hashlib.blake2b(b"x", digest_size=32).digest()
            out.append((client, data))
        network.round += 1
        return out

    network.round = 1
    return network


def test_corrupted_round_is_aborted_and_the_model_is_unchanged():
    fed = Federation(small_config(defense={"he": {"preset": "fast"}}))
    fed.stages.channel = HEChannel(SCHEME, network=_corrupt_round(2))
    fed.run_round()
    before = fed.params.clone()
    record = fed.run_round()
    assert torch.equal(fed.params, before)
    assert record["aggregated"] == 0 and "digest mismatch" in record[HEMetric.ABORT]
    assert record["bytes_up"] > 0
    record = fed.run_round()  # the next round is not affected
    assert record["aggregated"] == 4 and HEMetric.ABORT not in record
    assert not torch.equal(fed.params, before)
