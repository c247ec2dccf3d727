"""The secure-aggregation channel: a round's updates cross the wire only as masked vectors,
and the server learns only their weighted mean.

Per round (``n`` clients of the cohort, ``d`` parameters):

1. each client clips its update to ``[-c, c]``, scales it by ``rho_u = w_u / max_weight``,
   encodes it in ``Z_{2^bits}`` with headroom for ``n`` summands (:mod:`privfl.defenses.quantize`)
   and appends ``rho_u`` as one more slot (weighted averaging: Bonawitz et al. 2017, Sec. 2);
2. the clients and the server run the four stages (:func:`run_protocol`), clients vanishing as
   ``dropout`` asks;
3. the server decodes ``sum rho_u x_u`` and ``sum rho_u`` over the survivors and divides.

The mean then differs from the plaintext weighted mean of the clipped updates by at most
:func:`mean_error_bound`.

A DP mode that computes its own ring elements (the distributed discrete Gaussian) supplies a
:class:`RingCodec` instead (:meth:`SecAggChannel.use_codec`): each client's row is then the
codec's integer vector in ``Z_{2^b}`` (``b <=`` the ring's bits), the masks sum the rows modulo
``2^bits`` exactly as before, and the codec reads the survivors' sum. The masking and
key-agreement code is the same for both.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from privfl.defenses.quantize import FixedPointCodec, Rounding, default_max_weight
from privfl.defenses.secagg.config import SecAggConfig
from privfl.defenses.secagg.constants import STAGES, Neighbours, Stage
from privfl.defenses.secagg.graph import NeighbourGraph, secaggplus_parameters, threshold_for
from privfl.defenses.secagg.protocol import ProtocolResult, draw_dropouts, run_protocol
from privfl.defenses.secagg.state import RoundParams
from privfl.defenses.secagg.threat import SECAGG_THREAT_MODEL
from privfl.errors import ConfigError, PrivflError
from privfl.stages import AggregationResult, Aggregator, Channel, ChannelResult, RoundContext
from privfl.update import ServerView, UpdateBatch

if TYPE_CHECKING:
    from privfl.pipeline import RunSetup

log = logging.getLogger(__name__)


def mean_error_bound(
    values: FixedPointCodec, weights: FixedPointCodec, total_weight: float, summands: int
) -> float:
    """Worst-case absolute error, per coordinate, of the decoded weighted mean
    ``A_hat / B_hat`` against ``A / B`` (``A = sum rho_u x_u``, ``B = sum rho_u``), for
    ``summands`` clients with values in ``[-c, c]``:

        |A_hat / B_hat - A / B| <= (e_A + c e_B) / (B - e_B)

    where ``e_A``, ``e_B`` are the codecs' sum error bounds (``|A / B| <= c``).
    """
    e_a = values.error_bound(summands)
    e_b = weights.error_bound(summands)
    if total_weight <= e_b:
        return float("inf")
    return (e_a + values.clip * e_b) / (total_weight - e_b)


@dataclass(frozen=True)
class RingInput:
    """The clients' inputs as a :class:`RingCodec` encoded them.

    Attributes:
        rows: one row per client of the batch, in batch order: residues in ``[0, 2^b)``,
            int64 or unsigned ``(n, length)``.
        private: what the codec keeps between its client and server halves for this round (the
            shared rotation, the simulation's pre-reduction integers for measurements);
            never part of what the server sees.
        info: figures for the round's metrics.
    """

    rows: np.ndarray
    private: Any = None
    info: dict[str, Any] = field(default_factory=dict)


class RingCodec(ABC):
    """Turns a cohort's updates into integer vectors in ``Z_{2^bits}`` (client side) and the
    survivors' sum modulo ``2^bits`` back into an aggregate (server side), for a mode whose
    privacy lies in the integers themselves (the distributed discrete Gaussian). The secure
    aggregation channel masks and sums whatever rows it gets."""

    #: ``b``: the rows are residues modulo ``2^b``; at most the secagg ring's bits.
    bits: int

    @abstractmethod
    def encode(self, batch: UpdateBatch, ctx: RoundContext) -> RingInput:
        """Every client's row (each client computes its own)."""

    @abstractmethod
    def decode(
        self, total: np.ndarray, survivors: np.ndarray, encoded: RingInput, ctx: RoundContext
    ) -> AggregationResult:
        """The aggregate from the survivors' sum.

        Args:
            total: the sum modulo the ring's ``2^bits`` (a multiple of ``2^b``), ``(length,)``.
            survivors: boolean ``(n,)`` over the batch's rows: whose rows are in ``total``.
            encoded: what :meth:`encode` returned this round.
        """


class SecAggChannel(Channel):
    """Secure aggregation of the weighted mean (Bonawitz et al., CCS 2017; SecAgg+, Bell et
    al., CCS 2020). The ServerView holds only the masked vectors and the aggregate.

    Args:
        config: the ``[defense.secagg]`` section.
        max_weight: the largest weight a client may have (its ``rho`` is then 1).
        keep_masked: keep the masked vectors in the ServerView (an observer may test them).
    """

    name = "secagg"
    threat_model = SECAGG_THREAT_MODEL

    def __init__(self, config: SecAggConfig, *, max_weight: float, keep_masked: bool = True):
        if not max_weight > 0:
            raise ConfigError(f"defense.secagg.max_weight must be > 0, got {max_weight}")
        self.config = config
        self.max_weight = float(max_weight)
        self.keep_masked = keep_masked
        self.codec: RingCodec | None = None

    def use_codec(self, codec: RingCodec) -> None:
        """Carry ``codec``'s integer rows instead of fixed-point encoded updates (set once, by
        the DP mode that needs it, when the run is built).

        Raises:
            ConfigError: the codec's ``2^b`` does not divide the ring's ``2^bits``.
        """
        if not 1 <= codec.bits <= self.config.bits:
            raise ConfigError(
                f"the ring codec needs {codec.bits} bits, more than defense.secagg.bits = "
                f"{self.config.bits}; raise defense.secagg.bits or lower the codec's bits"
            )
        self.codec = codec

    def round_params(
        self, ids: np.ndarray, length: int, round: int, rng: np.random.Generator
    ) -> RoundParams:
        """The graph and threshold of a round among ``ids`` (sorted), per the config."""
        cfg, n = self.config, len(ids)
        if cfg.neighbours == Neighbours.AUTO:
            plus = secaggplus_parameters(n, dropout=cfg.dropout, corruption=cfg.corruption)
            if not plus.bounds_met:
                log.warning(
                    "secagg: no SecAgg+ degree meets the bounds for n=%d, dropout=%g, "
                    "corruption=%g; complete graph with t=%d (privacy failure <= %.2g, "
                    "abort probability <= %.2g)",
                    n,
                    cfg.dropout,
                    cfg.corruption,
                    plus.t,
                    plus.privacy_failure,
                    plus.correctness_failure,
                )
            graph = _graph(ids, plus.k, rng)
            t = plus.t
        else:
            k = n - 1 if cfg.neighbours == Neighbours.ALL else int(cfg.neighbours)
            graph = _graph(ids, k, rng)
            t = threshold_for(graph.max_degree + 1, cfg.threshold)
        return RoundParams(
            round=round,
            graph=graph,
            threshold=t,
            length=length,
            bits=cfg.bits,
            require_connected=not cfg.allow_insecure,
        )

    def codecs(self, n: int) -> tuple[FixedPointCodec, FixedPointCodec]:
        """The fixed-point codecs of the update slots and of the weight slot, for ``n``
        summands."""
        cfg = self.config
        values = FixedPointCodec.for_bits(cfg.clip, cfg.bits, n, Rounding(cfg.rounding))
        weights = FixedPointCodec.for_bits(1.0, cfg.bits, n, Rounding.NEAREST)
        return values, weights

    def encode(
        self,
        batch: UpdateBatch,
        ctx: RoundContext,
        values: FixedPointCodec,
        weights: FixedPointCodec,
    ) -> tuple[np.ndarray, int]:
        """Each client's input in the ring, ``(n, d + 1)``, and how many values were clipped.

        Row ``i`` is ``encode(rho_i * clip(x_i))`` followed by ``encode(rho_i)``; rows in the
        order of ``batch`` (each client encodes its own, with its own rounding stream)."""
        w = batch.weights
        if np.any(w < 0) or np.any(w > self.max_weight * (1 + 1e-12)):
            bad = batch.client_ids[(w < 0) | (w > self.max_weight * (1 + 1e-12))]
            raise PrivflError(
                f"secagg: client(s) {bad.tolist()} have weights outside [0, max_weight = "
                f"{self.max_weight:g}]; set defense.secagg.max_weight to at least "
                f"{float(w.max()):g}"
            )
        deltas = batch.deltas.detach().cpu().numpy()
        n, d = deltas.shape
        c = self.config.clip
        rho = w / self.max_weight
        out = np.empty((n, d + 1), dtype=values.dtype)
        clipped = 0
        stochastic = values.rounding is Rounding.STOCHASTIC
        for i, cid in enumerate(batch.client_ids):
            row = deltas[i]
            clipped += int(np.count_nonzero(np.abs(row) > c))
            rng = ctx.rng("secagg-rounding", int(cid)) if stochastic else None
            out[i, :d] = values.encode(rho[i] * np.clip(row.astype(np.float64), -c, c), rng)
            out[i, d] = weights.encode(np.array([rho[i]]))[0]
        return out, clipped

    def transmit(
        self, batch: UpdateBatch, aggregator: Aggregator, ctx: RoundContext
    ) -> ChannelResult:
        """Run one round of secure aggregation on ``batch``; see the module docstring."""
        if not aggregator.is_weighted_mean:
            raise ConfigError(
                f"defense.secagg computes only the weighted mean; the aggregator "
                f"{type(aggregator).__name__} needs each client's plaintext update"
            )
        if self.codec is not None:
            return self._transmit_ring(batch, self.codec, ctx)
        # A compressor that keeps the same coordinates on every client (shared-seed random-k)
        # lets the masked vectors carry only those: the rest is zero for everyone.
        compressed = batch.encoded
        support = None if compressed is None else compressed.support
        support_scale = 1.0 if compressed is None else compressed.support_scale
        if support is not None:
            raw = batch.deltas[:, support] / support_scale  # the values as sent
            batch = replace(batch, deltas=raw.contiguous(), encoded=None, factors=None)
        order = np.argsort(batch.client_ids, kind="stable")
        n, d = len(batch), batch.deltas.shape[1]
        ids = batch.client_ids[order]
        if n < 2:
            return self._aborted(
                ctx, ids, None, f"secure aggregation needs at least 2 clients, got {n}"
            )
        params = self.round_params(ids, d + 1, ctx.round, ctx.rng("secagg-graph"))
        values, weights = self.codecs(n)
        encoded, clipped = self.encode(batch, ctx, values, weights)
        vanish = draw_dropouts(ids, self.config.dropout, ctx.rng("secagg-dropout"))
        result = run_protocol(params, encoded[order], vanish=vanish, keep_masked=self.keep_masked)
        if clipped:
            log.warning(
                "secagg round %d: %d update values clipped to [-%g, %g]",
                ctx.round,
                clipped,
                self.config.clip,
                self.config.clip,
            )
        info = self._info(params, result, clipped)
        if result.abort is not None or result.total is None:
            return self._aborted(ctx, ids, result, str(result.abort), info)
        total_weight = float(weights.decode(result.total[d:])[0])
        if total_weight <= 0:
            return self._aborted(
                ctx, ids, result, "the survivors' total weight is zero: no mean to take", info
            )
        mean = values.decode(result.total[:d]) / total_weight
        if support is not None:
            full = np.zeros(ctx.spec.dim, dtype=np.float64)
            full[support] = mean * support_scale
            mean = full
        delta = torch.from_numpy(mean.astype(np.float32))
        survivors = result.survivors
        view = ServerView(
            round=ctx.round,
            global_params=ctx.global_params,
            client_ids=survivors,
            aggregate=delta,
            masked=result.masked,
            channel=self.name,
        )
        return ChannelResult(
            # weight_sum in the batch's units (rho = w / max_weight was summed): central DP
            # turns the mean back into a sum with it.
            aggregation=AggregationResult(delta, weight_sum=total_weight * self.max_weight),
            view=view,
            bytes_up=sum(result.bytes_up.values()),
            dropped=np.setdiff1d(ids, survivors).astype(np.int64),
            info=info,
        )

    def _transmit_ring(
        self, batch: UpdateBatch, codec: RingCodec, ctx: RoundContext
    ) -> ChannelResult:
        """One round carrying ``codec``'s rows: the same protocol, the codec's aggregate."""
        order = np.argsort(batch.client_ids, kind="stable")
        ids = batch.client_ids[order]
        n = len(batch)
        if n < 2:
            return self._aborted(
                ctx, ids, None, f"secure aggregation needs at least 2 clients, got {n}"
            )
        encoded = codec.encode(batch, ctx)
        rows = np.asarray(encoded.rows)
        params = self.round_params(ids, rows.shape[1], ctx.round, ctx.rng("secagg-graph"))
        inputs = rows[order].astype(params.dtype)
        vanish = draw_dropouts(ids, self.config.dropout, ctx.rng("secagg-dropout"))
        result = run_protocol(params, inputs, vanish=vanish, keep_masked=self.keep_masked)
        info = {**self._info(params, result, 0), **encoded.info}
        if result.abort is not None or result.total is None:
            return self._aborted(ctx, ids, result, str(result.abort), info)
        survivors = np.isin(batch.client_ids, result.survivors)
        aggregation = codec.decode(result.total, survivors, encoded, ctx)
        view = ServerView(
            round=ctx.round,
            global_params=ctx.global_params,
            client_ids=result.survivors,
            aggregate=aggregation.delta,
            masked=result.masked,
            channel=self.name,
        )
        return ChannelResult(
            aggregation=aggregation,
            view=view,
            bytes_up=sum(result.bytes_up.values()),
            dropped=np.setdiff1d(ids, result.survivors).astype(np.int64),
            info=info,
        )

    def _info(self, params: RoundParams, result: ProtocolResult, clipped: int) -> dict[str, Any]:
        vanished = {
            stage.value: sorted(c for c, at in result.vanished.items() if at is stage)
            for stage in STAGES
        }
        return {
            "secagg_threshold": params.threshold,
            "secagg_degree": params.graph.max_degree,
            "secagg_vanished": vanished,
            "secagg_rejected": result.rejected.tolist(),
            "secagg_clipped": clipped,
            "secagg_bytes_down": result.bytes_down,
            "secagg_abort": None if result.abort is None else str(result.abort),
            # allow_insecure runs only: the parts of a split survivor graph, whose sums the
            # server learnt (otherwise such a round aborts and this stays empty)
            "secagg_insecure": self.config.allow_insecure,
            "secagg_split": (
                result.components if result.abort is None and len(result.components) > 1 else []
            ),
        }

    def _aborted(
        self,
        ctx: RoundContext,
        ids: np.ndarray,
        result: ProtocolResult | None,
        reason: str,
        info: dict[str, Any] | None = None,
    ) -> ChannelResult:
        """No aggregate this round: the model stays as it is."""
        log.warning("secagg round %d aborted: %s; the model is unchanged", ctx.round, reason)
        lost: set[int] = set()
        if result is not None:
            before_unmasking = {**result.vanished, **result.refused, **result.rejected_at}
            lost |= {c for c, at in before_unmasking.items() if at is not Stage.UNMASKING}
            lost |= set(result.excluded.tolist())
        view = ServerView(
            round=ctx.round,
            global_params=ctx.global_params,
            client_ids=ids,
            masked=None if result is None else result.masked,
            channel=self.name,
        )
        return ChannelResult(
            aggregation=None,
            view=view,
            bytes_up=0 if result is None else sum(result.bytes_up.values()),
            dropped=np.array(sorted(lost), dtype=np.int64),
            info={**(info or {}), "secagg_abort": reason},
        )


def create_secagg_channel(config: SecAggConfig, setup: RunSetup) -> SecAggChannel:
    """The channel of ``[defense.secagg]``; ``max_weight`` defaults to
    :func:`~privfl.defenses.quantize.default_max_weight` (1 under central or local DP, whose
    weights are all 1; else the largest example count, FedAvg's weights)."""
    max_weight = config.max_weight
    if max_weight is None:
        max_weight = default_max_weight(setup.config, setup.data.partition.sizes())
    return SecAggChannel(config, max_weight=max_weight)


def _graph(ids: np.ndarray, k: int, rng: np.random.Generator) -> NeighbourGraph:
    if k >= len(ids) - 1:
        return NeighbourGraph.complete(ids)
    return NeighbourGraph.harary(ids, k, rng)


__all__ = [
    "RingCodec",
    "RingInput",
    "SecAggChannel",
    "create_secagg_channel",
    "mean_error_bound",
]
