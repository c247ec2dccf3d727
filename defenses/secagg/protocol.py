"""One round of secure aggregation, simulated: every client and the server exchange the real
messages (bytes) of the four stages; clients vanish at the stages they are scheduled to.

    AdvertiseKeys -> ShareKeys -> MaskedInputCollection -> Unmasking
    (Bonawitz et al., CCS 2017, Fig. 4; SecAgg+ graphs of Bell et al., CCS 2020)

The simulation is faithful where it matters for measurement: each client runs its own key
agreements, secret sharing, encryption and mask expansion (nothing is shared between simulated
clients but scratch buffers), and the bytes counted are the lengths of the messages sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from privfl.defenses.secagg.client import SecAggClient
from privfl.defenses.secagg.constants import STAGES, Stage
from privfl.defenses.secagg.errors import ProtocolError, SecAggAbort
from privfl.defenses.secagg.masking import MaskExpander
from privfl.defenses.secagg.server import Relay, SecAggServer
from privfl.defenses.secagg.state import RoundParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaskedVectors:
    """The masked vectors the server received in a round (what ``ServerView.masked`` holds).

    Attributes:
        client_ids: int64 ``(m,)``, the senders.
        vectors: ``(m, length)`` words in ``Z_{2^bits}`` (uint32 or uint64); row ``i`` is
            ``client_ids[i]``'s ``y_u``.
        bits: the ring ``Z_{2^bits}``.
    """

    client_ids: np.ndarray
    vectors: np.ndarray
    bits: int


@dataclass(frozen=True)
class ProtocolResult:
    """The outcome of one simulated round.

    Attributes:
        total: the survivors' inputs summed modulo ``2^bits``, ``(length,)``; None if aborted.
        survivors: ``U3``, the clients whose inputs are in ``total`` (sorted ids).
        vanished: ``{client: stage}`` for the clients that vanished, at the stage they did.
        refused: ``{client: stage}`` for clients that stopped on a message they had to refuse.
        rejected: clients treated as dropped because of a message of theirs that the server
            refused (malformed, truncated, a bad or repeated key, shares for the wrong
            clients, an unparsable unmasking response) or that the complaints about failed
            shares left out; sorted.
        rejected_at: ``{client: stage}`` of the refused message, for each of ``rejected`` (a
            client rejected at Unmasking has sent its masked input and is aggregated).
        excluded: clients left out after AdvertiseKeys (too few share-holders left).
        masked: the masked vectors as the server received them (None if not kept).
        bytes_up: ``{client: bytes it sent}``, every client of the round.
        bytes_down: bytes the server sent, all clients together.
        client_seconds: wall-clock time of all clients together (sequential simulation).
        server_seconds: wall-clock time of the server.
        client_cpu_seconds, server_cpu_seconds: the same as CPU time of this thread, which a
            busy machine inflates much less than wall-clock time.
        abort: why the round was aborted, or None.
        components: the connected parts of the survivors' masking graph (sorted id lists,
            largest first): one part in every completed round unless
            ``params.require_connected`` is off, in which case each part's sum leaked (a
            round aborted for a split lists its parts too); empty if the round ended before
            MaskedInput was collected.
    """

    total: np.ndarray | None
    survivors: np.ndarray
    vanished: dict[int, Stage]
    refused: dict[int, Stage]
    rejected: np.ndarray
    excluded: np.ndarray
    masked: MaskedVectors | None
    bytes_up: dict[int, int]
    bytes_down: int
    client_seconds: float
    server_seconds: float
    client_cpu_seconds: float
    server_cpu_seconds: float
    abort: SecAggAbort | None = None
    rejected_at: dict[int, Stage] = field(default_factory=dict)
    components: list[list[int]] = field(default_factory=list)


def run_protocol(
    params: RoundParams,
    inputs: Sequence[np.ndarray],
    *,
    vanish: Mapping[int, Stage] | None = None,
    relay: Relay | None = None,
    keep_masked: bool = True,
) -> ProtocolResult:
    """Run one round of secure aggregation among ``params.graph.ids``.

    Args:
        params: the round's public parameters.
        inputs: one encoded vector per client, in the order of ``params.graph.ids``, each
            ``params.dtype`` of shape ``(params.length,)`` (a ``(n, length)`` array works).
        vanish: ``{client: stage}``: the client sends nothing from that stage on (it drops out
            before sending that stage's message).
        relay: the path of share ciphertexts through the server (tests put an adversary here).
        keep_masked: keep the received masked vectors for the server's view.
    Returns:
        a :class:`ProtocolResult`; an abort is reported in it, not raised.
    """
    ids = [int(i) for i in params.graph.ids]
    if len(inputs) != len(ids):
        raise ValueError(f"{len(inputs)} inputs for {len(ids)} clients")
    vanish = dict(vanish or {})
    unknown = set(vanish) - set(ids)
    if unknown:
        raise ValueError(f"vanish lists clients not in the round: {sorted(unknown)}")
    expander = MaskExpander(params.length, params.dtype)
    clients = {cid: SecAggClient(cid, params, inputs[i], expander) for i, cid in enumerate(ids)}
    server = SecAggServer(params, relay=relay, expander=expander)
    bytes_up = dict.fromkeys(ids, 0)
    vanished: dict[int, Stage] = {}
    refused: dict[int, Stage] = {}
    clock = {"client": 0.0, "server": 0.0, "client_cpu": 0.0, "server_cpu": 0.0}

    def tick(party: str, t0: float, c0: float) -> None:
        clock[party] += time.perf_counter() - t0
        clock[party + "_cpu"] += time.thread_time() - c0

    def clients_send(
        stage: Stage, call: Callable[[SecAggClient, bytes], bytes], requests: Mapping[int, bytes]
    ) -> dict[int, bytes]:
        out = {}
        t0, c0 = time.perf_counter(), time.thread_time()
        for cid in sorted(requests):
            if cid in vanished or cid in refused:
                continue
            if vanish.get(cid) is stage:
                vanished[cid] = stage
                continue
            try:
                msg = call(clients[cid], requests[cid])
            except ProtocolError as e:
                log.warning("secagg: client %d stops at %s: %s", cid, stage.value, e)
                refused[cid] = stage
                continue
            bytes_up[cid] += len(msg)
            out[cid] = msg
        tick("client", t0, c0)
        return out

    def server_does(fn: Callable[[dict[int, bytes]], object], msgs: dict[int, bytes]) -> object:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(msgs)
        finally:
            tick("server", t0, c0)

    total: np.ndarray | None = None
    abort: SecAggAbort | None = None
    s = server.state
    try:
        keys = clients_send(
            Stage.ADVERTISE_KEYS, lambda c, _: c.advertise_keys(), dict.fromkeys(ids, b"")
        )
        rosters = server_does(server.collect_keys, keys)
        shares = clients_send(Stage.SHARE_KEYS, SecAggClient.share_keys, rosters)  # type: ignore[arg-type]
        inboxes = server_does(server.collect_shares, shares)
        masked = clients_send(Stage.MASKED_INPUT, SecAggClient.masked_input, inboxes)  # type: ignore[arg-type]
        survivors = server_does(server.collect_masked, masked)
        responses = clients_send(Stage.UNMASKING, SecAggClient.unmask, survivors)  # type: ignore[arg-type]
        total = server_does(server.collect_unmasking, responses)  # type: ignore[assignment]
    except SecAggAbort as e:
        abort = e
        log.warning("secagg round %d: %s", params.round, e)
    received = sorted(s.masked)
    view = None
    if keep_masked:
        vectors = (
            np.stack([s.masked[u] for u in received]).astype(params.dtype)
            if received
            else np.zeros((0, params.length), dtype=params.dtype)
        )
        view = MaskedVectors(np.array(received, dtype=np.int64), vectors, params.bits)
    return ProtocolResult(
        total=total,
        survivors=np.array(s.u3 if abort is None else [], dtype=np.int64),
        vanished=vanished,
        refused=refused,
        rejected=np.array(sorted(s.rejected), dtype=np.int64),
        rejected_at=dict(s.rejected),
        components=[list(c) for c in s.components],
        excluded=np.array(s.excluded, dtype=np.int64),
        masked=view,
        bytes_up=bytes_up,
        bytes_down=s.bytes_down,
        client_seconds=clock["client"],
        server_seconds=clock["server"],
        client_cpu_seconds=clock["client_cpu"],
        server_cpu_seconds=clock["server_cpu"],
        abort=abort,
    )


def draw_dropouts(ids: np.ndarray, fraction: float, rng: np.random.Generator) -> dict[int, Stage]:
    """``round(fraction * n)`` of the clients ``ids`` (halves up), chosen by ``rng``, each
    vanishing at a stage drawn uniformly from the four (before sending that stage's message).
    A client that vanishes at Unmasking has already sent its masked input, so its update is
    still aggregated; one that vanishes earlier is not."""
    n = len(ids)
    count = min(n, int(np.floor(fraction * n + 0.5)))
    if count == 0:
        return {}
    chosen = rng.choice(np.asarray(ids, dtype=np.int64), size=count, replace=False)
    stages = rng.integers(0, len(STAGES), size=count)
    return {int(c): STAGES[int(s)] for c, s in zip(chosen, stages, strict=True)}


__all__ = ["MaskedVectors", "ProtocolResult", "draw_dropouts", "run_protocol"]
