"""The plain channel: updates cross the wire as float32 vectors the server reads in full."""

from __future__ import annotations

from privfl.stages import Aggregator, Channel, ChannelResult, RoundContext
from privfl.update import ServerView, UpdateBatch

FLOAT32_BYTES = 4


class PlainChannel(Channel):
    """No protection in transit: the server sees every client's update (the baseline threat
    model of gradient inversion). Each client sends ``4 * dim`` bytes, or, when a compressor
    encoded the batch (``batch.encoded``), its encoded message, which the server decodes."""

    name = "plain"

    def transmit(
        self, batch: UpdateBatch, aggregator: Aggregator, ctx: RoundContext
    ) -> ChannelResult:
        encoded = batch.encoded
        if encoded is not None:  # the server reads what the bytes say
            batch = batch.with_deltas(encoded.decode())
        view = ServerView(
            round=ctx.round,
            global_params=ctx.global_params,
            client_ids=batch.client_ids,
            updates=batch,
            channel=self.name,
        )
        aggregation = aggregator.aggregate(batch, ctx) if len(batch) else None
        return ChannelResult(
            aggregation=aggregation,
            view=view,
            bytes_up=(
                encoded.nbytes if encoded is not None else len(batch) * ctx.spec.dim * FLOAT32_BYTES
            ),
        )


__all__ = ["FLOAT32_BYTES", "PlainChannel"]
