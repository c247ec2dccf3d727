"""User-level DP-FedAvg (McMahan et al. 2018, "Learning differentially private recurrent
language models", ICLR, arXiv 1710.06963), with adaptive clipping (Andrew et al. 2021,
"Differentially private learning with adaptive clipping", NeurIPS, arXiv 1905.03871).

Per round, with clients Poisson-sampled at rate q out of N:

1. every sampled client clips its update to L2 norm S (:class:`ClipUpdates`, client side, so
   it composes with secure aggregation) and all clients weigh the same; over a channel that
   encodes updates (secure aggregation, HE) the clip is S minus the encoding's slack
   (:mod:`privfl.defenses.dp.encoding`), so that the *decoded* contribution stays within S;
2. the server adds Gaussian noise ``N(0, sigma^2 S^2 I)`` to the *sum* and divides by the fixed
   denominator ``q N`` (:class:`GaussianSumNoise`; the "fixed-denominator estimator" of
   McMahan et al. 2018, Algorithm 1), so one user changes the released average by at most
   ``S / (q N)`` whatever the cohort size;
3. the ledger records one step of the subsampled Gaussian mechanism (q, sigma) for the
   ``"server"`` party, protecting users.

Adaptive clipping (Andrew et al. 2021, Algorithm 1 with the geometric update): each client
also reports ``b_i = 1[||Delta_i|| <= S]``; the server estimates the unclipped share
``b~ = (sum b_i + N(0, sigma_b^2)) / (q N)`` and sets ``S <- S exp(-eta_C (b~ - gamma))``. The
noise is split honestly (their Theorem 1): the sum gets ``sigma_Delta = (sigma^-2 -
(2 sigma_b)^-2)^(-1/2)``, and the two releases together are one Gaussian mechanism with noise
multiplier sigma, which is what the ledger records.

With ``secure_rng`` the noise of the sum and of the count comes from the OS's secure
generator (:func:`~privfl.seeding.secure_normal`) instead of the streams ``(seed,
"dp-central", round)`` and ``(seed, "dp-central-count", round)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from privfl.defenses.dp.clipping import clip_rows
from privfl.errors import AggregationError, ConfigError
from privfl.ledger import SERVER, PrivacyEvent, Unit
from privfl.seeding import secure_normal
from privfl.stages import (
    AggregationResult,
    ClientTransform,
    ClipReport,
    RoundContext,
    ServerTransform,
    Stateful,
)
from privfl.update import UpdateBatch

log = logging.getLogger(__name__)


def split_noise_multiplier(noise_multiplier: float, count_noise_multiplier: float) -> float:
    """The sum's noise multiplier when ``count_noise_multiplier`` goes to the clipped count.

    ``sigma_Delta = (sigma^-2 - (2 sigma_b)^-2)^(-1/2)`` (Andrew et al. 2021, Theorem 1: the
    count of unclipped updates, centred, has sensitivity 1/2), so the pair of releases is
    exactly as private as one Gaussian mechanism with noise multiplier ``sigma``.

    Raises:
        ConfigError: when ``2 sigma_b <= sigma`` (the count would take all the budget).
    """
    if noise_multiplier == 0:
        return 0.0
    rest = noise_multiplier**-2 - (2 * count_noise_multiplier) ** -2
    if rest <= 0:
        raise ConfigError(
            f"defense.dp.count_noise_multiplier = {count_noise_multiplier} leaves no budget for "
            f"the sum at noise_multiplier = {noise_multiplier}: it must exceed noise_multiplier "
            f"/ 2 = {noise_multiplier / 2:g} (Andrew et al. 2021 use clients_per_round / 20 "
            "with large cohorts); raise it or lower noise_multiplier"
        )
    return rest**-0.5


@dataclass
class ClipBound(Stateful):
    """The clip norm S across rounds: the server's adaptive update sets it, and the next
    round's clients clip to it (the norm the server broadcasts with the model). What one
    round's clipping tells its server stage travels in the round's
    :class:`~privfl.stages.ClipReport` (``ctx.notes.clip``), not here.

    Attributes:
        clip: current S.
    """

    clip: float

    def state_dict(self) -> dict[str, Any]:
        return {"clip": self.clip}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clip = float(state["clip"])


class ClipUpdates(ClientTransform):
    """DP-FedAvg, client side: clip each update to the shared bound S and weight clients
    equally (an example-count weight would let one user's influence exceed S).

    Args:
        bound: the clip bound shared with :class:`GaussianSumNoise`.
        slack: the channel's encoding slack for a cohort of ``n`` updates
            (:func:`~privfl.defenses.dp.encoding.encoding_slack`); updates are clipped to
            ``S - slack(n)`` (to 0 when the slack reaches S: nothing of them would be safe to
            send). None: the plain channel, no slack.
    """

    def __init__(self, bound: ClipBound, slack: Callable[[int], float] | None = None) -> None:
        self.bound, self.slack = bound, slack

    def apply(self, batch: UpdateBatch, ctx: RoundContext) -> UpdateBatch:
        n = len(batch)
        slack = self.slack(n) if self.slack is not None and n else 0.0
        # What a client clips to before its update enters the channel, so that the
        # contribution the aggregate sums has norm at most S.
        target = max(self.bound.clip - slack, 0.0)
        if target > 0:
            clipped, norms = clip_rows(batch.deltas, target)
        else:
            clipped = torch.zeros_like(batch.deltas)
            norms = torch.linalg.vector_norm(batch.deltas.to(torch.float64), dim=1)
        ctx.notes.clip = ClipReport(
            send_clip=target, unclipped=float((norms <= self.bound.clip).sum()), slack=slack
        )
        info: dict[str, Any] = {
            "dp_clip": self.bound.clip,
            "dp_clipped_fraction": float((norms > target).double().mean()) if n else None,
        }
        if self.slack is not None:
            info["dp_encoding_slack"] = slack
        return replace(
            batch,
            deltas=clipped,
            weights=np.ones(len(batch), dtype=np.float64),
            info={**batch.info, **info},
        )


class GaussianSumNoise(ServerTransform):
    """DP-FedAvg, server side: Gaussian noise on the sum of clipped updates, fixed denominator
    ``q N``, one ledger event per round; with ``adaptive`` the clip follows a quantile.

    Args:
        bound: the clip bound shared with :class:`ClipUpdates`.
        noise_multiplier: sigma of the whole round (sum and, with adaptive clipping, count).
        sample_rate: q, the Poisson client sampling rate.
        num_clients: N, the population.
        adaptive: follow the ``target_quantile`` of update norms (Andrew et al. 2021).
        target_quantile, clip_lr, count_noise_multiplier: gamma, eta_C, sigma_b.
        secure_rng: draw the noise from the OS's secure generator, not the seeded streams.
    """

    releases_without_updates = True

    def __init__(
        self,
        bound: ClipBound,
        *,
        noise_multiplier: float,
        sample_rate: float,
        num_clients: int,
        adaptive: bool = False,
        target_quantile: float = 0.5,
        clip_lr: float = 0.2,
        count_noise_multiplier: float = 0.0,
        secure_rng: bool = False,
    ) -> None:
        self.bound, self.secure_rng = bound, secure_rng
        self.noise_multiplier, self.sample_rate = noise_multiplier, sample_rate
        self.denominator = sample_rate * num_clients
        self.adaptive = adaptive
        self.target_quantile, self.clip_lr = target_quantile, clip_lr
        self.count_noise_multiplier = count_noise_multiplier if adaptive else 0.0
        self.sum_noise_multiplier = (
            split_noise_multiplier(noise_multiplier, count_noise_multiplier)
            if adaptive
            else noise_multiplier
        )

    def apply(self, result: AggregationResult, ctx: RoundContext) -> AggregationResult:
        if result.weight_sum is None:
            raise AggregationError(
                "central DP needs the weighted mean's weight sum to rebuild the sum of clipped "
                "updates; this channel/aggregator does not report it (AggregationResult."
                "weight_sum)"
            )
        s = self.bound.clip
        total = result.delta.to(torch.float64) * result.weight_sum
        std = self.sum_noise_multiplier * s
        if self.secure_rng:
            noise = secure_normal(ctx.spec.dim)
        else:
            noise = torch.randn(
                ctx.spec.dim, generator=ctx.torch_rng("dp-central"), dtype=torch.float64
            )
        delta = ((total + std * noise) / self.denominator).to(torch.float32)
        ctx.ledger.record(
            PrivacyEvent(
                noise_multiplier=self.noise_multiplier,
                sample_rate=self.sample_rate,
                steps=1,
                protects=Unit.USER.value,
                party=SERVER,
                round=ctx.round,
            )
        )
        info: dict[str, Any] = {
            "dp_noise_std": std / self.denominator,
            "dp_epsilon_rdp": _finite(ctx.ledger.epsilon(party=SERVER, accountant="rdp")),
        }
        if self.adaptive:
            info.update(self._adapt(ctx))
        return replace(result, delta=delta, info={**result.info, **info})

    def _adapt(self, ctx: RoundContext) -> dict[str, Any]:
        """The geometric clip update of Andrew et al. 2021 (Algorithm 1)."""
        if self.secure_rng:
            noise = float(secure_normal(1)[0]) * self.count_noise_multiplier
        else:
            noise = ctx.rng("dp-central-count").normal(0.0, self.count_noise_multiplier)
        unclipped = 0.0 if ctx.notes.clip is None else ctx.notes.clip.unclipped
        share = (unclipped + noise) / self.denominator
        old = self.bound.clip
        self.bound.clip = old * math.exp(-self.clip_lr * (share - self.target_quantile))
        return {"dp_unclipped_estimate": float(share), "dp_next_clip": self.bound.clip}

    def state_dict(self) -> dict[str, Any]:
        return self.bound.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bound.load_state_dict(state)


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else float(x)


__all__ = ["ClipBound", "ClipUpdates", "GaussianSumNoise", "split_noise_multiplier"]
