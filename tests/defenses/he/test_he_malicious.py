"""A malicious server and faulty clients against the HE channel (issue 16, items 4-6).

Each test reproduces an attack through the real parties and real ciphertext bytes; each
failed on the code before the fix (a bad envelope aborted the round for everyone; the key
holder decrypted one client's ciphertext relabelled as the aggregate, and a second aggregate of
the same round; decrypted values carried CKKS noise bits).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from privfl.aggregation import WeightedMean
from privfl.defenses.he import (
    CKKS_PRESETS,
    CiphertextError,
    CKKSScheme,
    HEChannel,
    HEServer,
    Preset,
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
