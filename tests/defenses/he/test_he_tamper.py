"""Foreign, truncated and altered ciphertexts: a clear PrivflError; in a run the sender is
dropped and the round goes on, or is aborted with the model unchanged when too few are left."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

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
    RoundCheck,
)
from privfl.defenses.he.check import seal_voucher
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
    rounds: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)

    @property
    def dim(self) -> int:  # two ciphertexts per client, the second partly padding
        return self.scheme.slots + 500

    def messages(self, round: int = 1) -> list[tuple[int, bytes]]:
        """Three clients' messages of ``round`` (the key holder decrypts one sum a round)."""
        if round not in self.rounds:
            self.rounds[round] = _messages(self.scheme, self.holder, self.dim, round)
        return self.rounds[round]


def _messages(
    scheme: HEScheme, holder: KeyHolder, dim: int, round: int = 1
) -> list[tuple[int, bytes]]:
    rng = np.random.default_rng(1)
    batch = UpdateBatch(
        client_ids=np.arange(3, dtype=np.int64),
        deltas=torch.from_numpy(0.1 * rng.standard_normal((3, dim)).astype(np.float32)),
        weights=rng.integers(1, 50, 3).astype(np.float64),
    )
    clients = ClientEncryptor(scheme, holder.public_context, enrol=holder.enrol)
    messages = clients.encrypt(batch, round=round)[0]
    return list(zip(batch.client_ids.tolist(), messages, strict=True))


def _envelope(s: Setup, message: bytes, key: bytes | None = None, round: int = 1) -> Envelope:
    return read_envelope(
        message,
        kind=MessageKind.UPDATE,
        scheme=s.scheme.code,
        key=key or s.holder.key_id,
        round=round,
        chunks=2,
    )


def _rewrap(s: Setup, message: bytes, chunks: tuple[bytes, ...], round: int = 1) -> bytes:
    """The same header (this run's key id) and voucher, other ciphertext bytes, a correct
    digest: what a client sending bad ciphertexts, or a forged header, looks like."""
    return dataclasses.replace(_envelope(s, message, round=round), chunks=chunks).to_bytes()


@pytest.fixture(scope="module", params=sorted(SCHEMES))
def setup(request) -> Setup:
    scheme, other = SCHEMES[request.param]
    holder = KeyHolder(scheme, min_clients=1)
    return Setup(scheme, other, holder, HEServer(scheme, holder.public_context))


def _aggregate(s: Setup, replace: dict[int, bytes], round: int = 1) -> None:
    sent = [(c, replace.get(i, m)) for i, (c, m) in enumerate(s.messages(round))]
    aggregate = s.server.aggregate(sent, round=round, dim=s.dim)
    s.holder.decrypt(aggregate, round=round, dim=s.dim, count=len(sent))


def test_valid_messages_pass(setup):
    _aggregate(setup, {}, round=1)


def test_truncated_and_flipped_bytes_are_rejected(setup):
    m = setup.messages()[1][1]
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
    foreign = _messages(setup.scheme, other, setup.dim, round=2)[1][1]
    with pytest.raises(CiphertextError, match="client 1: encrypted under another context"):
        _aggregate(setup, {1: foreign}, round=2)
    alien = _envelope(setup, foreign, other.key_id, round=2).chunks
    # A forged header with this run's key id around the foreign ciphertexts passes the server
    # (it cannot tell), not the key holder: the voucher's sketch is of the client's own
    # ciphertexts, so the aggregate is not the sum of what the clients sent.
    forged = _rewrap(setup, setup.messages(2)[1][1], alien, round=2)
    with pytest.raises(CiphertextError, match="is not the sum of the ciphertexts"):
        _aggregate(setup, {1: forged}, round=2)
    # A malicious client can sketch its foreign ciphertexts and seal a matching voucher (it
    # holds the check key); the sum then checks out, but decrypts to values no honest sum has
    # (CKKS: far outside the clients' range; BFV: non-zero padding).
    keys = setup.holder.enrol(1)
    public = ts.context_from(setup.holder.public_context)
    check = RoundCheck(setup.scheme, public, keys.check_key, 3)
    sketches = np.stack([check.sketch(setup.scheme.load(public, c, "alien")) for c in alien])
    voucher = seal_voucher(keys, key_id=setup.holder.key_id, round=3, sketches=sketches)
    env = dataclasses.replace(
        _envelope(setup, setup.messages(3)[1][1], round=3), chunks=alien, vouchers=((1, voucher),)
    )
    with pytest.raises(CiphertextError, match="not a sum of valid updates"):
        _aggregate(setup, {1: env.to_bytes()}, round=3)


def test_bad_ciphertext_bytes_inside_a_valid_envelope_are_rejected(setup):
    message = setup.messages()[1][1]
    c0, c1 = _envelope(setup, message).chunks
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


def test_a_corrupted_message_drops_its_sender_and_the_round_goes_on():
    fed = Federation(small_config(defense={"he": {"preset": "fast"}}))
    fed.stages.channel = HEChannel(SCHEME, network=_corrupt_round(1))
    before = fed.params.clone()
    record = fed.run_round()
    first = record["clients"][0]
    assert record["dropped"] == [first] and record[HEMetric.REJECTED] == [first]
    assert record["aggregated"] == 3 and HEMetric.ABORT not in record
    assert not torch.equal(fed.params, before)


def test_too_few_clients_left_aborts_the_round_and_the_model_is_unchanged():
    fed = Federation(small_config(defense={"he": {"preset": "fast"}}))
    fed.stages.channel = HEChannel(SCHEME, min_clients=4, network=_corrupt_round(1))
    before = fed.params.clone()
    record = fed.run_round()
    assert torch.equal(fed.params, before)
    assert record["aggregated"] == 0 and "min_clients = 4" in record[HEMetric.ABORT]
    assert record["dropped"] == [record["clients"][0]]
    assert record["bytes_up"] > 0
    record = fed.run_round()  # the next round is not affected
    assert record["aggregated"] == 4 and HEMetric.ABORT not in record
    assert not torch.equal(fed.params, before)
