"""A malicious server and faulty clients against the HE channel (issue 16, items 4-6).

The tests of the first three sections reproduce an attack through the real parties and real
ciphertext bytes, and each failed on the code before the fix: a bad envelope aborted the round
for everyone; the key holder decrypted one client's ciphertext relabelled as the aggregate (to
1.6e-7 of that client's update), and a second aggregate of the same round (the difference
gave the victim's update to 2.2e-7); and the decrypted total weight and mean carried CKKS noise
bits (142.00000094938804 for a total weight of 142). The last section checks what the
vouchers and the sum check bind.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import tenseal as ts
import torch

from privfl.aggregation import WeightedMean
from privfl.defenses.he import (
    CKKS_PRESETS,
    BFVParams,
    BFVScheme,
    CiphertextError,
    CKKSScheme,
    ClientEncryptor,
    HEChannel,
    HEServer,
    KeyHolder,
    Preset,
    RoundCheck,
    VoucherError,
)
from privfl.defenses.he.envelope import Envelope, MessageKind, read_envelope
from privfl.defenses.he.packing import chunk_count
from privfl.ledger import Ledger
from privfl.stages import RoundContext
from privfl.update import ParamSpec, UpdateBatch

PARAMS = CKKS_PRESETS[Preset.FAST]
SCHEME = CKKSScheme(PARAMS)
DIM = 3000  # two ciphertexts a client at N = 4096
IDS = np.array([3, 8, 11, 20], dtype=np.int64)
VICTIM = 8


def _ctx(round: int = 1) -> RoundContext:
    spec = ParamSpec(("w",), ((DIM,),), (0,), DIM)
    return RoundContext(round, 0, torch.zeros(DIM), spec, 100, IDS, Ledger())


def _batch(seed: int = 0) -> UpdateBatch:
    rng = np.random.default_rng(seed)
    return UpdateBatch(
        client_ids=IDS,
        deltas=torch.from_numpy(rng.normal(0, 0.1, size=(len(IDS), DIM)).astype(np.float32)),
        weights=rng.integers(5, 60, size=len(IDS)).astype(np.float64),
    )


def _mean(batch: UpdateBatch, keep=None) -> tuple[np.ndarray, float]:
    """The weighted mean and the total weight of the kept clients, in float64 with numpy."""
    mask = np.ones(len(batch), bool) if keep is None else np.isin(batch.client_ids, keep)
    x = batch.deltas.numpy().astype(np.float64)[mask]
    w = batch.weights[mask]
    return (w[:, None] * x).sum(0) / w.sum(), float(w.sum())


def _read(data: bytes, kind: MessageKind, key: bytes, round: int = 1) -> Envelope:
    return read_envelope(
        data,
        kind=kind,
        scheme=SCHEME.code,
        key=key,
        round=round,
        chunks=chunk_count(DIM, SCHEME.slots),
    )


def _grid(count: int, sums: np.ndarray) -> float:
    """The rounding step the key holder documents for CKKS, computed here from the plaintext
    sums: the smallest power of two at least twice the noise bound of a sum of ``count``
    fresh ciphertexts (``count * noise_bound``, plus the decoding FFT's ``2^-40`` relative
    error on the largest value rounded up to a power of two)."""
    peak = 2.0 ** math.ceil(math.log2(np.max(np.abs(sums))))
    bound = count * PARAMS.noise_bound + peak * 2.0**-40
    return 2.0 ** math.ceil(math.log2(2 * bound))


def _check_mean(delta: np.ndarray, weight_sum: float, batch: UpdateBatch, keep) -> None:
    """The decrypted mean against the plaintext mean of ``keep``, within the documented bound:
    each rounded sum is within one grid step of the true sum."""
    ref, total = _mean(batch, keep)
    sums = np.concatenate([ref * total, [total]])
    g = _grid(len(keep), sums)
    bound = (g + np.abs(ref) * g) / (total - g) + np.abs(ref) * 2.0**-23
    assert np.all(np.abs(delta.astype(np.float64) - ref) <= bound)
    if len(keep) < len(batch):  # the data discriminate: the mean of all is far outside it
        assert np.max(np.abs(_mean(batch)[0] - ref)) > 100 * np.max(bound)


# --------------------------------------------------------------- item 4: drop, do not abort


def _rewrap(data: bytes, key: bytes, **changes) -> bytes:
    """The message with header fields or ciphertexts changed and a correct digest: what a
    faulty or malicious client sends (the transport cannot tell)."""
    env = _read(data, MessageKind.UPDATE, key)
    return dataclasses.replace(env, **changes).to_bytes()


def _flip(data: bytes, key: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 0x01
    return bytes(out)


CORRUPTIONS = {
    "flipped byte": _flip,
    "truncated": lambda m, k: m[: len(m) // 3],
    "empty": lambda m, k: b"",
    "next round": lambda m, k: _rewrap(m, k, round=2),
    "one ciphertext short": lambda m, k: _rewrap(
        m, k, chunks=_read(m, MessageKind.UPDATE, k).chunks[:1]
    ),
    "undeserializable ciphertext": lambda m, k: _rewrap(
        m,
        k,
        chunks=(
            _read(m, MessageKind.UPDATE, k).chunks[0][:-100],
            _read(m, MessageKind.UPDATE, k).chunks[1],
        ),
    ),
    "another sender's message": None,  # replaced below: client 11's bytes sent as client 8's
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_one_bad_envelope_drops_only_its_sender(corruption):
    channel = HEChannel(SCHEME, min_clients=2)
    key = channel.server.key_id

    def network(messages):
        by_id = dict(messages)
        out = []
        for client, data in messages:
            if client == VICTIM:
                if corruption == "another sender's message":
                    data = by_id[11]
                else:
                    data = CORRUPTIONS[corruption](data, key)
            out.append((client, data))
        return out

    channel._network = network
    batch = _batch()
    result = channel.transmit(batch, WeightedMean(), _ctx())
    assert result.aggregation is not None, result.info.get("he_abort")
    assert result.dropped.tolist() == [VICTIM]
    assert result.info["he_rejected"] == [VICTIM]
    honest = [c for c in IDS.tolist() if c != VICTIM]
    _check_mean(result.aggregation.delta.numpy(), result.aggregation.weight_sum, batch, honest)


# ------------------------------------------- item 5: the key holder decrypts only true sums


class RelabellingServer(HEServer):
    """Computes the honest aggregate, then puts the victim's ciphertexts in its place: the
    message claims the whole cohort (and forwards whatever else the honest one carries)."""

    def aggregate(self, messages, **kwargs):
        messages = list(messages)
        honest = super().aggregate(messages, **kwargs)
        round = kwargs["round"]
        victim = _read(dict(messages)[VICTIM], MessageKind.UPDATE, self.key_id, round)
        env = _read(honest, MessageKind.AGGREGATE, self.key_id, round)
        return dataclasses.replace(env, chunks=victim.chunks).to_bytes()


def test_a_relabelled_client_ciphertext_is_not_decrypted():
    channel = HEChannel(SCHEME, min_clients=2)
    channel.server = RelabellingServer(SCHEME, channel.server.public_context)
    batch = _batch()
    result = channel.transmit(batch, WeightedMean(), _ctx())
    if result.aggregation is not None:
        victim = batch.deltas[list(IDS).index(VICTIM)].numpy()
        leaked = np.max(np.abs(result.aggregation.delta.numpy() - victim))
        pytest.fail(
            f"the key holder decrypted client {VICTIM}'s update alone (max diff {leaked:.2g})"
        )
    assert "is not the sum" in result.info["he_abort"]


class RecordingServer(HEServer):
    def aggregate(self, messages, **kwargs):
        self.received = list(messages)
        return super().aggregate(self.received, **kwargs)


def test_a_second_aggregate_of_the_same_round_is_not_decrypted():
    # Sum of all, then sum of all but the victim: their difference is the victim's update.
    channel = HEChannel(SCHEME, min_clients=2)
    server = channel.server = RecordingServer(SCHEME, channel.server.public_context)
    batch = _batch()
    first = channel.transmit(batch, WeightedMean(), _ctx())
    assert first.aggregation is not None
    others = [(c, m) for c, m in server.received if c != VICTIM]
    second = server.aggregate(others, round=1, dim=DIM)
    holder = channel._key_holder
    with pytest.raises(CiphertextError, match="round 1 was already decrypted"):
        out = holder.decrypt(second, round=1, dim=DIM, count=len(others))
        w_all, w_rest = first.aggregation.weight_sum, out.total_weight
        s_all = first.aggregation.delta.numpy().astype(np.float64) * w_all
        recovered = (s_all - out.delta.astype(np.float64) * w_rest) / (w_all - w_rest)
        victim = batch.deltas[list(IDS).index(VICTIM)].numpy()
        print("recovered the victim's update to", np.max(np.abs(recovered - victim)))


# ------------------------------------------------ item 6: no decryption noise leaves the holder


def test_decrypted_sums_are_rounded_to_a_grid_above_the_noise():
    channel = HEChannel(SCHEME, min_clients=2)
    batch = _batch(seed=5)
    result = channel.transmit(batch, WeightedMean(), _ctx())
    assert result.aggregation is not None
    delta = result.aggregation.delta.numpy().astype(np.float64)
    total = result.aggregation.weight_sum
    ref, true_total = _mean(batch)
    # Integer weights lie on the grid, and the grid is twice the noise bound: exact.
    assert total == true_total
    # delta * total is the rounded weighted sum: a multiple of the grid up to the float32 cast
    # of the mean (CKKS noise of ~2^-17 would put it anywhere between grid points).
    g = _grid(len(IDS), np.concatenate([ref * true_total, [true_total]]))
    steps = delta * total / g
    off = np.abs(steps - np.round(steps))
    assert np.max(off) <= np.max(np.abs(steps)) * 2.0**-22 + 1e-9, np.max(off)
    _check_mean(result.aggregation.delta.numpy(), total, batch, IDS.tolist())
    assert result.info["he_grid"] == g


# ------------------------------------------------------- what the vouchers and the sum bind


def _parties(round: int = 1):
    channel = HEChannel(SCHEME, min_clients=2)
    holder, server = channel._key_holder, channel.server
    clients = ClientEncryptor(SCHEME, holder.public_context, enrol=holder.enrol)
    batch = _batch()
    sent = list(zip(IDS.tolist(), clients.encrypt(batch, round=round)[0], strict=True))
    return holder, server, sent


class VoucherTamperingServer(HEServer):
    """Flips a byte of client 11's voucher in its aggregate (a lying or faulty server)."""

    def aggregate(self, messages, **kwargs):
        env = _read(super().aggregate(messages, **kwargs), MessageKind.AGGREGATE, self.key_id)
        vouchers = tuple(
            (c, v[:-1] + bytes([v[-1] ^ 1]) if c == 11 else v) for c, v in env.vouchers
        )
        return dataclasses.replace(env, vouchers=vouchers).to_bytes()


def test_a_voucher_that_does_not_open_drops_its_client_and_nothing_else():
    channel = HEChannel(SCHEME, min_clients=2)
    channel.server = VoucherTamperingServer(SCHEME, channel.server.public_context)
    batch = _batch()
    result = channel.transmit(batch, WeightedMean(), _ctx())
    assert result.aggregation is not None, result.info.get("he_abort")
    assert result.dropped.tolist() == [11] and result.info["he_rejected"] == [11]
    _check_mean(result.aggregation.delta.numpy(), result.aggregation.weight_sum, batch, [3, 8, 20])


class PaddingServer(HEServer):
    """Adds a made-up client's voucher to every aggregate (to reach the minimum cohort)."""

    calls = 0

    def aggregate(self, messages, **kwargs):
        self.calls += 1
        assert self.calls < 10, "the channel keeps asking: it must abort instead"
        env = _read(super().aggregate(messages, **kwargs), MessageKind.AGGREGATE, self.key_id)
        fake = (999, bytes(len(env.vouchers[0][1])))
        return dataclasses.replace(
            env, count=env.count + 1, vouchers=(*env.vouchers, fake)
        ).to_bytes()


def test_an_aggregate_padded_with_a_made_up_client_aborts_the_round():
    channel = HEChannel(SCHEME, min_clients=2)
    channel.server = PaddingServer(SCHEME, channel.server.public_context)
    result = channel.transmit(_batch(), WeightedMean(), _ctx())
    assert result.aggregation is None and channel.server.calls == 1
    assert "vouchers of clients that did not send" in result.info["he_abort"]
    assert "client 999: voucher does not open" in result.info["he_abort"]
    assert result.dropped.tolist() == [] and result.info["he_rejected"] == []


def test_made_up_and_replayed_vouchers_do_not_count():
    holder, server, sent = _parties()
    victim = [(c, m) for c, m in sent if c == VICTIM]
    env = _read(server.aggregate(victim, round=1, dim=DIM), MessageKind.AGGREGATE, holder.key_id)
    # The victim's ciphertext with two made-up clients, so that it claims three.
    fake = tuple((c, bytes(len(env.vouchers[0][1]))) for c in (100, 101))
    forged = dataclasses.replace(env, count=3, vouchers=env.vouchers + fake).to_bytes()
    with pytest.raises(VoucherError) as info:
        holder.decrypt(forged, round=1, dim=DIM)
    assert sorted(info.value.clients) == [100, 101]
    # Round 1's vouchers in a round 2 aggregate do not open either.
    replay = dataclasses.replace(
        _read(server.aggregate(sent, round=1, dim=DIM), MessageKind.AGGREGATE, holder.key_id),
        round=2,
    )
    with pytest.raises(VoucherError) as info:
        holder.decrypt(replay.to_bytes(), round=2, dim=DIM)
    assert sorted(info.value.clients) == IDS.tolist()
    # Nothing was decrypted: the honest sum of round 1 still is, and is the whole cohort's.
    out = holder.decrypt(server.aggregate(sent, round=1, dim=DIM), round=1, dim=DIM)
    assert out.contributors.tolist() == IDS.tolist() and out.total_weight == _mean(_batch())[1]


def test_any_change_to_the_sum_is_refused_and_closes_the_round():
    # The server adds a fresh encryption of zero: the plaintext would be the same, the
    # ciphertext is not the sum of what the clients sent.
    holder, server, sent = _parties()
    env = _read(server.aggregate(sent, round=1, dim=DIM), MessageKind.AGGREGATE, holder.key_id)
    public = ts.context_from(holder.public_context)
    chunks = list(env.chunks)
    vector = SCHEME.load(public, chunks[0], "sum")
    vector.add_(SCHEME.vector(public, np.zeros(SCHEME.slots)))
    chunks[0] = vector.serialize()
    shifted = dataclasses.replace(env, chunks=tuple(chunks)).to_bytes()
    with pytest.raises(CiphertextError, match="is not the sum of the ciphertexts of the 4 clients"):
        holder.decrypt(shifted, round=1, dim=DIM)
    with pytest.raises(CiphertextError, match="round 1 was already decrypted"):
        holder.decrypt(env.to_bytes(), round=1, dim=DIM)


def test_bfv_sketch_is_the_constant_coefficient_of_the_product():
    # By hand with Python integers: (c * s)_0 = c_0 s_0 - sum_j c_j s_(N-j) mod q, with SEAL's
    # lift of a plaintext coefficient x to x - t above t / 2; for both polynomials.
    scheme = BFVScheme(BFVParams(4096, (60, 40), 30), max_weight=10.0)
    holder = KeyHolder(scheme)
    public = ts.context_from(holder.public_context)
    check = RoundCheck(scheme, public, holder.enrol(0).check_key, 7)
    vector = scheme.vector(public, np.arange(scheme.slots) % 1000)
    (ct,) = vector.ciphertext()
    n, (q,) = ct.poly_modulus_degree(), check.moduli.tolist()
    t = scheme.plain_modulus
    s = [check._plain[j] for j in range(n)]
    s = [x - t if x >= (t + 1) // 2 else x for x in s]
    assert len(set(s)) > n // 2  # a random polynomial
    for k in range(2):
        c = [ct[k * n + j] for j in range(n)]
        expected = (c[0] * s[0] - sum(c[j] * s[n - j] for j in range(1, n))) % q
        assert check.sketch(vector)[k, 0] == expected
