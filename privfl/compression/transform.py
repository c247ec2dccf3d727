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

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from privfl.compression.compressor import Compressor
from privfl.compression.config import CompressionConfig
from privfl.compression.error_feedback import ErrorFeedback
from privfl.compression.methods import create_compressor
from privfl.defenses.dp.clipping import CLIP_MARGIN
from privfl.pipeline import Contribution, Slot
from privfl.stages import ClientTransform, RoundContext
from privfl.update import EncodedUpdates, UpdateBatch

if TYPE_CHECKING:
    from privfl.config import Config
    from privfl.pipeline import RunSetup


class CompressUpdates(ClientTransform):
    """Each client compresses its update (plus its residual, with error feedback) and sends
    the encoded bytes; ``batch.deltas`` becomes what the server will decode.

    Args:
        config: the ``[compression]`` section.
        dim: d, the update length.

    The method's :class:`~privfl.compression.compressor.Compressor` (``self.compressor``,
    from :data:`~privfl.compression.methods.COMPRESSORS`) encodes and gives the server's
    decoder; this transform adds error feedback, the second clip under central DP and the
    round's figures, the same for every method. Under central DP the compressed update is
    clipped again to the norm the round's clipping used (``ctx.notes.clip.send_clip``,
    :class:`~privfl.stages.ClipReport`).
    """

    def __init__(self, config: CompressionConfig, dim: int) -> None:
        self.config = config
        self.dim = dim
        self.compressor: Compressor = create_compressor(config, dim)
        self.feedback = ErrorFeedback() if config.uses_error_feedback else None

    def apply(self, batch: UpdateBatch, ctx: RoundContext) -> UpdateBatch:
        if len(batch) == 0:
            return batch
        x = batch.deltas.detach().to(torch.float32).contiguous()
        v = x if self.feedback is None else self.feedback.add_residuals(batch.client_ids, x)
        comp = self.compressor
        payload = comp.compress(v, batch.client_ids, ctx)
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
        encoded = EncodedUpdates(
            payload.to_messages(), comp.decoder(ctx), comp.support(ctx), comp.scale
        )
        err = torch.linalg.vector_norm(v - sent, dim=1) / torch.linalg.vector_norm(
            v, dim=1
        ).clamp_min(1e-30)
        info = {
            **batch.info,
            "compression_bytes_per_client": encoded.nbytes / len(batch),
            "compression_relative_error": float(err.mean()),
        }
        # factors=None: the factors (if any) describe the deltas before compression.
        return replace(batch, deltas=sent, encoded=encoded, info=info, factors=None)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.feedback is None else self.feedback.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.feedback is None:
            super().load_state_dict(state)
        else:
            self.feedback.load_state_dict(state)


def compression_stages(config: Config, setup: RunSetup) -> Contribution:
    """``[compression]``'s transform in the ``COMPRESSION`` slot (after every honest client
    stage, DP included) and the aggregator its method needs, if any (``method = 'sign'``:
    the majority vote)."""
    cfg = config.compression
    if cfg is None:
        return Contribution()
    transform = CompressUpdates(cfg, setup.spec.dim)
    return Contribution(
        client_transforms=((Slot.COMPRESSION, transform),),
        aggregator=transform.compressor.aggregator(),
    )


__all__ = ["CompressUpdates", "compression_stages"]
