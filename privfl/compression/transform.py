"""The compression client transform and its builder (``[compression]``).

Order relative to differential privacy (see docs/compression.md): compression runs after
every honest client-side DP stage, so it is post-processing of what DP released:

- ``sample`` (DP-SGD) and ``local``: after the noise; compressing a DP output costs no privacy.
- ``central``: after clipping, and the compressed update is clipped again to the clip norm S
  (scaling its values or its norm, which keeps it an encoding): random-k's ``d / k`` scaling,
  QSGD and error feedback can raise the norm above S, which would void the
  sensitivity the server's noise is calibrated to.

Poisoning runs after compression (attackers send what they like); it replaces the deltas, so
the batch then crosses the wire as float32 again (``UpdateBatch.with_deltas`` drops the
encoding).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from privfl.compression.config import CompressionConfig, CompressionMethod
from privfl.compression.error_feedback import ErrorFeedback
from privfl.compression.majority_vote import MajorityVote
from privfl.compression.payload import Payload
from privfl.compression.qsgd import decode_qsgd, qsgd
from privfl.compression.sign import decode_sign, scaled_sign
from privfl.compression.sparse import (
    IndexMode,
    decode_sparse,
    keep_count,
    random_indices,
    random_k,
    top_k,
)
from privfl.defenses.dp.clipping import CLIP_MARGIN
from privfl.pipeline import Contribution, Slot
from privfl.stages import ClientTransform, RoundContext
from privfl.update import EncodedUpdates, UpdateBatch

if TYPE_CHECKING:
    from privfl.config import Config
    from privfl.pipeline import RunSetup

SEED_BOUND = 2**63
log = logging.getLogger(__name__)


class CompressUpdates(ClientTransform):
    """Each client compresses its update (plus its residual, with error feedback) and sends
    the encoded bytes; ``batch.deltas`` becomes what the server will decode.

    Args:
        config: the ``[compression]`` section.
        dim: d, the update length.

    Under central DP the compressed update is clipped again to the norm the round's clipping
    used (``ctx.notes.clip.send_clip``, :class:`~privfl.stages.ClipReport`).
    """

    def __init__(self, config: CompressionConfig, dim: int) -> None:
        self.config = config
        self.method = CompressionMethod(config.method)
        self.dim = dim
        self.k = keep_count(dim, config.ratio)
        self.feedback = ErrorFeedback() if config.uses_error_feedback else None
        if self.feedback is not None and self.method is CompressionMethod.QSGD:
            s = config.levels
            if s * s < dim:
                log.warning(
                    "compression: QSGD with s = %d levels is not a contraction for d = %d "
                    "(E||Q(x) - x||^2 <= min(d / s^2, sqrt(d) / s) ||x||^2 needs s > sqrt(d) "
                    "= %.0f to be < ||x||^2); error feedback assumes one (Karimireddy et al. "
                    "2019, Assumption A) and may diverge",
                    s,
                    dim,
                    dim**0.5,
                )
        # random-k: unbiased d/k scaling without error feedback; with it, the plain
        # (contractive) random-k that Karimireddy et al.'s analysis assumes.
        unbiased = self.method is CompressionMethod.RANDK and self.feedback is None
        self.scale = dim / self.k if unbiased else 1.0

    def shared_seed(self, ctx: RoundContext) -> int | None:
        """The round's public random-k seed (``shared_seed = true``), else None."""
        if self.method is CompressionMethod.RANDK and self.config.shared_seed:
            return int(ctx.rng("compression-randk-shared").integers(SEED_BOUND))
        return None

    def compress(self, v: torch.Tensor, client_ids: np.ndarray, ctx: RoundContext) -> Payload:
        """The payload of the rows ``v`` (float32 ``(n, d)``), each client with its own stream."""
        m = self.method
        if m is CompressionMethod.TOPK:
            return top_k(v, self.k)
        if m is CompressionMethod.RANDK:
            shared = self.shared_seed(ctx)
            seeds = None
            if shared is None:
                seeds = np.array(
                    [ctx.rng("compression-randk", int(c)).integers(SEED_BOUND) for c in client_ids],
                    dtype=np.uint64,
                )
            return random_k(v, self.k, seeds, shared, scale=self.scale != 1.0)
        if m is CompressionMethod.QSGD:
            rngs = [ctx.rng("compression-qsgd", int(c)) for c in client_ids]
            return qsgd(v, self.config.levels, rngs)
        return scaled_sign(v)

    def decoder(self, ctx: RoundContext) -> Any:
        """The server's decoder of this round's messages (public parameters only)."""
        m, d = self.method, self.dim
        if m is CompressionMethod.TOPK:
            return partial(decode_sparse, dim=d, k=self.k, mode=IndexMode.EXPLICIT)
        if m is CompressionMethod.RANDK:
            shared = self.shared_seed(ctx)
            mode = IndexMode.SEEDED if shared is None else IndexMode.SHARED
            return partial(
                decode_sparse, dim=d, k=self.k, mode=mode, shared_seed=shared, scale=self.scale
            )
        if m is CompressionMethod.QSGD:
            return partial(decode_qsgd, dim=d, levels=self.config.levels)
        return partial(decode_sign, dim=d)

    def apply(self, batch: UpdateBatch, ctx: RoundContext) -> UpdateBatch:
        if len(batch) == 0:
            return batch
        x = batch.deltas.detach().to(torch.float32).contiguous()
        v = x if self.feedback is None else self.feedback.add_residuals(batch.client_ids, x)
        payload = self.compress(v, batch.client_ids, ctx)
        sent = payload.dense()
        if ctx.notes.clip is not None:  # central DP clipped this round: clip again
            c = ctx.notes.clip.send_clip
            norms = torch.linalg.vector_norm(sent.to(torch.float64), dim=1)
            if bool((norms > c).any()):
                factors = torch.where(norms > c, c * (1 - CLIP_MARGIN) / norms, 1.0)
                payload = payload.scaled(factors.numpy().astype(np.float32))
                sent = payload.dense()
        if self.feedback is not None:
            self.feedback.update(batch.client_ids, v, sent)
        shared = self.shared_seed(ctx)
        support = None if shared is None else random_indices(shared, self.dim, self.k)
        encoded = EncodedUpdates(payload.to_messages(), self.decoder(ctx), support, self.scale)
        err = torch.linalg.vector_norm(v - sent, dim=1) / torch.linalg.vector_norm(
            v, dim=1
        ).clamp_min(1e-30)
        info = {
            **batch.info,
            "compression_bytes_per_client": encoded.nbytes / len(batch),
            "compression_relative_error": float(err.mean()),
        }
        return replace(batch, deltas=sent, encoded=encoded, info=info)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.feedback is None else self.feedback.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.feedback is None:
            super().load_state_dict(state)
        else:
            self.feedback.load_state_dict(state)


def compression_stages(config: Config, setup: RunSetup) -> Contribution:
    """``[compression]``'s transform in the ``COMPRESSION`` slot (after every honest client
    stage, DP included) and, for ``method = 'sign'``, the majority vote as the aggregator."""
    cfg = config.compression
    if cfg is None:
        return Contribution()
    sign = CompressionMethod(cfg.method) is CompressionMethod.SIGN
    return Contribution(
        client_transforms=((Slot.COMPRESSION, CompressUpdates(cfg, setup.spec.dim)),),
        aggregator=MajorityVote() if sign else None,
    )


__all__ = ["CompressUpdates", "compression_stages"]
