"""Local DP: each client clips its update to L2 norm S and adds ``N(0, sigma^2 S^2 I)`` before
anything leaves it, so even the server sees only a private release (the Gaussian mechanism as a
local randomizer; e.g. Truex et al. 2020, "LDP-Fed", or the local model of Kasiviswanathan et
al. 2011).

Accounting, per client (party ``"client:<id>"``, unit: the user): each participation is one
Gaussian mechanism with *no* amplification by sampling (the server knows who sent what). Local
DP compares any two inputs of a client, so a clipped update moves by up to 2S: the events carry
sensitivity 2, and the accountants see noise multiplier sigma / 2.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from privfl.defenses.dp.clipping import clip_rows
from privfl.ledger import PrivacyEvent, Unit, client_party
from privfl.seeding import secure_normal
from privfl.stages import ClientTransform, RoundContext
from privfl.update import UpdateBatch

#: L2 sensitivity of a clipped update, in clip norms, when any input may replace any other.
LOCAL_SENSITIVITY = 2.0


class LocalGaussian(ClientTransform):
    """Clip each update to ``clip`` and add Gaussian noise of std ``noise_multiplier * clip``
    from the client's own stream ``(seed, "dp-local", client, round)``, or with ``secure_rng``
    from the OS's secure generator (:func:`~privfl.seeding.secure_normal`); clients weigh
    equally (example counts sent in the clear would leak); one ledger event per real client."""

    def __init__(self, *, clip: float, noise_multiplier: float, secure_rng: bool = False) -> None:
        self.clip, self.noise_multiplier, self.secure_rng = clip, noise_multiplier, secure_rng

    def apply(self, batch: UpdateBatch, ctx: RoundContext) -> UpdateBatch:
        n, dim = batch.deltas.shape
        clipped, norms = clip_rows(batch.deltas, self.clip)
        std = self.noise_multiplier * self.clip
        if n and std > 0:
            # One stream per client (a loop over clients, not parameters): a client's noise
            # does not depend on who else was sampled.
            if self.secure_rng:
                noise = secure_normal((n, dim)).to(clipped.dtype)
            else:
                noise = torch.stack(
                    [
                        torch.randn(dim, generator=ctx.torch_rng("dp-local", int(c)))
                        for c in batch.client_ids
                    ]
                )
            clipped = clipped + std * noise
        for c in batch.client_ids:
            if c < ctx.num_clients:  # canary clients of an audit have no budget to track
                ctx.ledger.record(
                    PrivacyEvent(
                        noise_multiplier=self.noise_multiplier,
                        sample_rate=1.0,
                        steps=1,
                        protects=Unit.USER.value,
                        party=client_party(int(c)),
                        round=ctx.round,
                        sensitivity=LOCAL_SENSITIVITY,
                    )
                )
        info = {
            "dp_clip": self.clip,
            "dp_clipped_fraction": float((norms > self.clip).double().mean()) if n else None,
        }
        return replace(
            batch,
            deltas=clipped.contiguous(),
            weights=np.ones(n, dtype=np.float64),
            info={**batch.info, **info},
        )


__all__ = ["LOCAL_SENSITIVITY", "LocalGaussian"]
