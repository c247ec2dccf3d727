"""Foreign, truncated and altered ciphertexts: a clear PrivflError, and in a run the round is
aborted with the model unchanged."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pytest
import tenseal as ts
import torch
from conftest import small_config

from privfl.defenses.he import (
    BFV_DEFAULT,
    CKKS_PRESETS,
    BFVParams,
    BFVScheme,
    CiphertextError,
    CKKSScheme,
    ClientEncryptor,
    HEChannel,
    HEMetric,
    HEScheme,
    HEServer,
    KeyHolder,
    Preset,
)
from privfl.defenses.he.envelope import DIGEST_BYTES, Envelope, MessageKind, read_envelope
from privfl.errors import PrivflError
from privfl.federation import Federation
from privfl.update import UpdateBatch

SCHEME = CKKSScheme(CKKS_PRESETS[Preset.FAST])
SCHEMES = {
    "ckks": (SCHEME, CKKSScheme(CKKS_PRESETS[Preset.DEFAULT])),
    "bfv": (BFVScheme(BFVParams(4096, (60, 40), 30), max_weight=100.0), BFVScheme(BFV_DEFAULT)),
}


@dataclass
class Setup:
    scheme: HEScheme
    other_params: HEScheme  # the same scheme with other parameters
    holder: KeyHolder
    server: HEServer
    messages: list[tuple[int, bytes]]

    @property
    def dim(self) -> int:  # two ciphertexts per client, the second partly padding
        return self.scheme.slots + 500


def _messages(scheme: HEScheme, holder: KeyHolder, dim: int) -> list[tuple[int, bytes]]:
    rng = np.random.default_rng(1)
    batch = UpdateBatch(
        client_ids=np.arange(3, dtype=np.int64),
        deltas=torch.from_numpy(0.1 * rng.standard_normal((3, dim)).astype(np.float32)),
        weights=rng.integers(1, 50, 3).astype(np.float64),
    )
    clients = ClientEncryptor(scheme, holder.public_context)
    return list(zip(batch.client_ids.tolist(), clients.encrypt(batch, round=1)[0], strict=True))


def _chunks(s: Setup, message: bytes, key: bytes | None = None) -> tuple[bytes, ...]:
    return read_envelope(
        message,
        kind=MessageKind.UPDATE,
        scheme=s.scheme.code,
        key=key or s.holder.key_id,
        round=1,
        chunks=2,
    ).chunks


def _rewrap(s: Setup, message: bytes, chunks: tuple[bytes, ...]) -> bytes:
    """The same header (this run's key id), other ciphertext bytes, a correct digest: what a
    client sending bad ciphertexts, or a forged header, looks like."""
    env = read_envelope(
        message,
        kind=MessageKind.UPDATE,
        scheme=s.scheme.code,
        key=s.holder.key_id,
        round=1,
        chunks=2,
    )
    return Envelope(env.kind, env.scheme, env.key_id, env.round, env.sender, 1, chunks).to_bytes()


@pytest.fixture(scope="module", params=sorted(SCHEMES))
def setup(request) -> Setup:
    scheme, other = SCHEMES[request.param]
    holder = KeyHolder(scheme, min_clients=1)
    server = HEServer(scheme, holder.public_context)
    return Setup(scheme, other, holder, server, _messages(scheme, holder, scheme.slots + 500))


def _aggregate(s: Setup, replace: dict[int, bytes]) -> None:
    sent = [(c, replace.get(i, m)) for i, (c, m) in enumerate(s.messages)]
    aggregate = s.server.aggregate(sent, round=1, dim=s.dim)
    s.holder.decrypt(aggregate, round=1, dim=s.dim, count=len(sent))


def test_valid_messages_pass(setup):
    _aggregate(setup, {})


def test_truncated_and_flipped_bytes_are_rejected(setup):
    m = setup.messages[1][1]
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
    other = KeyHolder(setup.scheme)
    foreign = _messages(setup.scheme, other, setup.dim)[1][1]
    with pytest.raises(CiphertextError, match="client 1: encrypted under another context"):
        _aggregate(setup, {1: foreign})
    # A forged header with this run's key id around the foreign ciphertexts passes the server
    # (it cannot tell) but not the key holder: the sum decodes to values no honest sum has
    # (CKKS: far outside the clients' range; BFV: non-zero padding).
    forged = _rewrap(setup, setup.messages[1][1], _chunks(setup, foreign, other.key_id))
    with pytest.raises(CiphertextError, match="not a sum of valid updates"):
        _aggregate(setup, {1: forged})


def test_bad_ciphertext_bytes_inside_a_valid_envelope_are_rejected(setup):
    message = setup.messages[1][1]
    c0, c1 = _chunks(setup, message)
    other = setup.other_params
    alien = other.encrypt(ts.context_from(KeyHolder(other).public_context), np.zeros(other.slots))
    for chunks, match in [
        ((c0[:-100], c1), "client 1, ciphertext 0: not a ciphertext of these parameters"),
        ((c0, b""), "client 1, ciphertext 1: 0 ciphertext\\(s\\) of 0 values"),
        ((c0, alien), "client 1, ciphertext 1: not a ciphertext of these parameters"),
    ]:
        with pytest.raises(CiphertextError, match=match):
            _aggregate(setup, {1: _rewrap(setup, message, chunks)})


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
    fed.stages.channel = HEChannel(SCHEME, network=_corrupt_round(1))
    before = fed.params.clone()
    record = fed.run_round()
    assert torch.equal(fed.params, before)
    assert record["aggregated"] == 0 and "digest mismatch" in record[HEMetric.ABORT]
    assert record["bytes_up"] > 0
    record = fed.run_round()  # the next round is not affected
    assert record["aggregated"] == 4 and HEMetric.ABORT not in record
    assert not torch.equal(fed.params, before)
