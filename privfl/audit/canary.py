"""Canary clients for the one-shot empirical privacy audit (Andrew et al. 2023, "One-shot
empirical privacy estimation for federated learning", ICLR 2024, arXiv 2302.03098, Alg. 1).

``k`` canary clients join the population (ids ``N .. N + k - 1``). Each has a fixed random
direction (isotropic, unit norm, from the stream ``(seed, "canary", i)``); whenever it is
sampled (Poisson at the run's client rate q, stream ``(seed, "audit-sample", round)``) it sends
that direction scaled to the canary norm, through the same client transforms as every client
(clipping, local noise). At the end, :class:`CanaryAudit` takes the cosine of the final model
delta ``theta_T - theta_0`` with each inserted canary and with ``k`` unseen ones (ids
``k .. 2k - 1`` of the same stream, never inserted) and turns the two samples into an
empirical epsilon (:func:`privfl.audit.estimate.empirical_epsilon`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from privfl.audit.estimate import empirical_epsilon
from privfl.pipeline import Contribution, Slot
from privfl.runfolder import RunFile
from privfl.seeding import torch_generator
from privfl.stages import ClientTransform, RoundContext
from privfl.update import UpdateBatch

if TYPE_CHECKING:
    from privfl.config import Config
    from privfl.pipeline import RunEnd, RunSetup

log = logging.getLogger(__name__)

#: The delta of the estimate of a run without DP.
DEFAULT_DELTA = 1e-5
#: Directions are generated this many at a time when cosines are taken (bounded memory).
_CHUNK = 64


def canary_directions(seed: int, ids: np.ndarray, dim: int) -> torch.Tensor:
    """Unit vectors of canaries ``ids``, float32 ``(len(ids), dim)``; canary ``i`` is always
    the same vector (stream ``(seed, "canary", i)``)."""
    rows = [torch.randn(dim, generator=torch_generator(seed, "canary", int(i))) for i in ids]
    if not rows:
        return torch.zeros((0, dim))
    d = torch.stack(rows)
    return d / torch.linalg.vector_norm(d, dim=1, keepdim=True)


def cosines(seed: int, ids: np.ndarray, vector: torch.Tensor) -> np.ndarray:
    """Cosine of ``vector`` (shape ``(dim,)``) with each canary direction, shape ``(len(ids),)``."""
    norm = float(torch.linalg.vector_norm(vector))
    if norm == 0:
        return np.zeros(len(ids))
    out = [
        (canary_directions(seed, ids[i : i + _CHUNK], vector.numel()) @ vector).double().numpy()
        for i in range(0, len(ids), _CHUNK)
    ]
    return np.concatenate(out) / norm if out else np.zeros(0)


class CanaryClients(ClientTransform):
    """Adds this round's sampled canary clients to the batch (before clipping and noise).

    Args:
        canaries: k.
        num_clients: N (canary ``i`` is client ``N + i``).
        sample_rate: q, each canary's chance to take part in a round.
        norm: a canary update's L2 norm; None: the median norm of the round's real updates.
    """

    def __init__(
        self, *, canaries: int, num_clients: int, sample_rate: float, norm: float | None
    ) -> None:
        self.canaries, self.num_clients = canaries, num_clients
        self.sample_rate, self.norm = sample_rate, norm

    def apply(self, batch: UpdateBatch, ctx: RoundContext) -> UpdateBatch:
        picked = np.flatnonzero(ctx.rng("audit-sample").random(self.canaries) < self.sample_rate)
        info = {**batch.info, "audit_canaries": int(len(picked))}
        if len(picked) == 0:
            return replace(batch, info=info)
        norm = self.norm
        if norm is None:
            norms = torch.linalg.vector_norm(batch.deltas, dim=1)
            norm = float(norms.median()) if len(batch) else 1.0
        rows = canary_directions(ctx.seed, picked, ctx.spec.dim) * norm
        weight = float(np.median(batch.weights)) if len(batch) else 1.0
        k = len(picked)
        return UpdateBatch(
            client_ids=np.concatenate([batch.client_ids, self.num_clients + picked]),
            deltas=torch.cat([batch.deltas, rows]),
            weights=np.concatenate([batch.weights, np.full(k, weight)]),
            metrics={
                k_: np.concatenate([v, np.full(k, np.nan)]) for k_, v in batch.metrics.items()
            },
            info=info,
            dropped=batch.dropped,
        )


class CanaryAudit:
    """The end-of-run half: cosines, the empirical epsilon, ``audit.json``.

    Args:
        canaries: k.
        initial_params: float32 ``(dim,)``, theta_0.
        delta: the delta of the estimate (the DP delta, or 1e-5 without DP).
    """

    def __init__(self, *, canaries: int, initial_params: torch.Tensor, delta: float) -> None:
        self.canaries, self.initial_params, self.delta = canaries, initial_params, delta
        self.result: dict[str, Any] | None = None

    def estimate(self, seed: int, final_params: torch.Tensor) -> dict[str, Any]:
        """The audit's figures for the final model ``final_params``."""
        delta = final_params - self.initial_params
        k = self.canaries
        inserted = cosines(seed, np.arange(k), delta)
        unseen = cosines(seed, np.arange(k, 2 * k), delta)
        eps, fi, fu = empirical_epsilon(inserted, unseen, delta=self.delta)
        return {
            "method": "one-shot canary audit (Andrew et al. 2023)",
            "canaries": k,
            "delta": self.delta,
            "epsilon_empirical": eps,
            "inserted_cosine_mean": fi.mean,
            "inserted_cosine_std": fi.std,
            "unseen_cosine_mean": fu.mean,
            "unseen_cosine_std": fu.std,
            "inserted_cosines": inserted.tolist(),
            "unseen_cosines": unseen.tolist(),
        }

    def __call__(self, fed: RunEnd) -> None:
        """Finisher: estimate, log, and write ``audit.json`` beside the ledger."""
        self.result = self.estimate(fed.config.seed, fed.params)
        if fed.ledger.events and fed.ledger.delta is not None:
            self.result["epsilon_bound"] = fed.ledger.epsilon(party=fed.ledger.worst_party())
        log.info("canary audit: empirical epsilon %.3f", self.result["epsilon_empirical"])
        if fed.folder is not None:
            fed.folder.write_json(RunFile.AUDIT, self.result)


def canary_audit_stages(config: Config, setup: RunSetup) -> Contribution:
    """``[audit]`` -> :class:`CanaryClients` in the ``AUDIT`` slot (before DP, so canaries pass
    the same clipping and noise as everyone) and a :class:`CanaryAudit` finisher."""
    audit = config.audit
    if audit is None:
        return Contribution()
    dp = config.defense.dp
    norm = audit.norm if audit.norm is not None else (dp.clip if dp is not None else None)
    clients = CanaryClients(
        canaries=audit.canaries,
        num_clients=config.data.clients,
        sample_rate=config.federation.clients_per_round / config.data.clients,
        norm=norm,
    )
    finisher = CanaryAudit(
        canaries=audit.canaries,
        initial_params=setup.spec.flatten(setup.make_model()),
        delta=dp.delta if dp is not None else DEFAULT_DELTA,
    )
    return Contribution(client_transforms=((Slot.AUDIT, clients),), finishers=(finisher,))


__all__ = ["CanaryAudit", "CanaryClients", "canary_audit_stages", "canary_directions", "cosines"]
