"""DP-SGD for a whole cohort in one batched graph: the vectorized engine's private path.

The same algorithm, step for step, as :class:`privfl.defenses.dp.dpsgd.DPSGDTrainer` on
Opacus (Abadi et al. 2016, Algorithm 1, with Opacus' ``DPOptimizer`` arithmetic):

1. Poisson lot: ``rand(n) < q`` on the client's own generator;
2. per-example gradients by nested ``vmap`` (over clients, then over the lot's examples) of
   ``grad`` of one example's cross-entropy (Opacus' per-sample gradients of a mean loss); for
   MLPs, only their norms, from the batched kernel's ghost norms; for CNNs, each layer's norms
   by mixed ghost clipping (Bu et al. 2022: the ghost norm or the formed per-example gradient,
   whichever is smaller; :meth:`privfl.engine.batched_cnn.BatchedCNN.clipped_gradient_sums`);
3. flat clipping: factor ``min(1, C / (||g_j|| + 1e-6))`` over all layers (Opacus' formula),
   padded examples get factor 0; the clipped gradients are summed;
4. noise ``N(0, (sigma C)^2)`` per parameter tensor drawn with ``torch.normal`` on the client's
   generator right after its lot, in parameter order (what Opacus' ``_generate_noise`` draws),
   so each client's random stream is consumed exactly as on the sequential path;
5. division by the expected lot size ``q n``, then FedProx's term and the SGD step.

Hence for the same seed the model equals the Opacus path's to float rounding: same lots, same
noise. Privacy is accounted exactly as on that path: each update reports ``dp_sample_rate``,
``dp_noise_multiplier`` and ``dp_steps``, which :class:`RecordExampleLevelSpending` turns into
ledger events (Opacus' accountants compute epsilon from them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from privfl.client import LocalTraining
from privfl.engine.batched_cnn import BatchedCNN
from privfl.engine.batched_mlp import BatchedMLP, stacked_params
from privfl.seeding import torch_generator
from privfl.update import ParamSpec

Params = dict[str, torch.Tensor]
# Opacus' clipping denominator guard: C / (||g|| + 1e-6) (opacus/optimizers/optimizer.py).
_NORM_EPS = 1e-6


class CohortDPSGD:
    """Trains a cohort with DP-SGD on stacked parameters (see the module docstring).

    Args:
        model: the run's module (its parameters are replaced by each client's rows).
        spec: the flat layout; its order is the noise-draw order.
        training: lr, momentum, weight decay, epochs/steps, batch size, FedProx mu.
        clip: C; noise_multiplier: sigma.
        sgd_update: the engine's SGD step on stacked parameters.
        mlp: the batched MLP kernel of the model, if it has one: step 2-3 then come from
            its ghost norms (:meth:`BatchedMLP.clipped_gradient_sums`), with no per-example
            gradient formed; otherwise from nested ``vmap``.
        cnn: the batched CNN kernel of the model, if it has one (and no MLP kernel): steps
            2-3 from its mixed ghost clipping.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ParamSpec,
        training: LocalTraining,
        *,
        clip: float,
        noise_multiplier: float,
        sgd_update: Callable[..., None],
        mlp: BatchedMLP | None = None,
        cnn: BatchedCNN | None = None,
    ) -> None:
        self.spec, self.training, self.clip, self.sigma = spec, training, clip, noise_multiplier
        self._sgd_update = sgd_update
        self._mlp = mlp
        self._cnn = cnn

        def one_example(p: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = functional_call(model, p, (x.unsqueeze(0),))
            return F.cross_entropy(logits, y.unsqueeze(0))

        # (k clients) x (L examples) gradients: params batched over clients only.
        self._per_example = vmap(
            vmap(grad_and_value(one_example), in_dims=(None, 0, 0)), in_dims=(0, 0, 0)
        )

    def train(
        self,
        global_params: torch.Tensor,
        parts: Sequence[np.ndarray],
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        seed: int,
        round: int,
        clients: Sequence[int],
        *,
        starts: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[dict[str, float]]]:
        """DP-SGD for ``clients`` (each with example indices ``parts[i]``) from the global model
        (or from each client's own row of ``starts``, float32 ``(c, dim)``).

        Returns:
            ``(deltas, metrics)``: float32 ``(c, dim)`` in the order of ``clients``, and each
            client's metrics (those of :class:`DPSGDTrainer`).
        """
        from privfl.defenses.dp.dpsgd import client_schedule

        cfg, c = self.training, len(clients)
        plans = [client_schedule(len(p), cfg) for p in parts]
        steps = np.array([p.steps for p in plans])
        order = np.argsort(-steps, kind="stable")  # most steps first: active rows are a prefix
        gens = [torch_generator(seed, "client", round, int(clients[i])) for i in order]
        idx_parts = [torch.from_numpy(np.asarray(parts[i], dtype=np.int64)) for i in order]
        q = [plans[i].sample_rate for i in order]
        denom = torch.tensor(
            [float(plans[i].expected_batch_size) for i in order], device=global_params.device
        )
        start = self.spec.unflatten(global_params)
        params = {n: w.unsqueeze(0).repeat(c, *([1] * w.ndim)) for n, w in start.items()}
        anchor = start  # FedProx's: the global model, or each row's own start
        if starts is not None:  # rows in ``order``, each its client's own start
            origin = starts[torch.from_numpy(order)]
            anchor = stacked_params(self.spec, origin)
            params = {n: w.clone() for n, w in anchor.items()}
        momentum: Params = {}
        loss_sum, seen, clipped = np.zeros(c), np.zeros(c, dtype=np.int64), np.zeros(c)
        sorted_steps = steps[order]
        for t in range(int(sorted_steps.max(initial=0))):
            k = int((sorted_steps > t).sum())
            lots = [  # step 1, on each client's own stream
                torch.nonzero(torch.rand(len(idx_parts[r]), generator=gens[r]) < q[r])[:, 0]
                for r in range(k)
            ]
            live = {n: w[:k] for n, w in params.items()}
            summed = self._clipped_sums(live, lots, idx_parts, train_x, train_y)
            if summed is None:  # every lot empty: only noise
                summed = {n: torch.zeros_like(w) for n, w in live.items()}
            else:
                summed, lsum, nclip = summed
                loss_sum[:k] += lsum
                clipped[:k] += nclip
            seen[:k] += [len(lot) for lot in lots]
            with torch.no_grad():
                if self.sigma > 0:  # step 4: per client, per tensor, as Opacus draws them
                    std = self.sigma * self.clip
                    noises = [
                        [
                            torch.normal(0, std, size=start[n].shape, generator=gens[r])
                            for n in self.spec.names
                        ]
                        for r in range(k)
                    ]
                    for j, n in enumerate(self.spec.names):  # drawn on the CPU streams
                        noise = torch.stack([noises[r][j] for r in range(k)])
                        summed[n] = summed[n] + noise.to(summed[n].device)
                scale = denom[:k]
                grads = {n: g / scale.view(k, *([1] * (g.ndim - 1))) for n, g in summed.items()}
            self._sgd_update(live, grads, anchor, momentum, cfg, first=t == 0)
        flat = torch.cat([params[n].reshape(c, -1) for n in self.spec.names], dim=1)
        deltas_sorted = flat - (global_params if starts is None else origin)
        deltas = torch.empty_like(deltas_sorted)
        deltas[torch.from_numpy(order)] = deltas_sorted
        metrics: list[dict[str, float]] = [{}] * c
        for row, i in enumerate(order.tolist()):
            s = int(seen[row])
            metrics[i] = {
                "loss": loss_sum[row] / s if s else float("nan"),
                "steps": float(plans[i].steps),
                "dp_sample_rate": plans[i].sample_rate,
                "dp_noise_multiplier": self.sigma,
                "dp_steps": float(plans[i].steps),
                "dp_clipped_fraction": clipped[row] / s if s else float("nan"),
            }
        return deltas, metrics

    def _clipped_sums(
        self,
        live: Params,
        lots: list[torch.Tensor],
        idx_parts: list[torch.Tensor],
        train_x: torch.Tensor,
        train_y: torch.Tensor,
    ) -> tuple[Params, np.ndarray, np.ndarray] | None:
        """Steps 2-3 for the ``k`` active clients: the sums of their clipped per-example
        gradients (each ``(k, *shape)``), their per-example loss sums and clipped counts;
        None when every lot is empty."""
        k = len(lots)
        width = max(len(lot) for lot in lots)
        if width == 0:
            return None
        index = torch.zeros((k, width), dtype=torch.int64)
        mask = torch.zeros((k, width))
        for r, lot in enumerate(lots):
            glob = idx_parts[r][lot] if len(lot) else idx_parts[r][:1]
            index[r, : len(lot)] = glob[: len(lot)]
            index[r, len(lot) :] = glob[0]  # a valid example, masked out
            mask[r, : len(lot)] = 1.0
        mask = mask.to(train_x.device)
        x, y = train_x[index], train_y[index]

        def factor_of(norms: torch.Tensor) -> torch.Tensor:  # step 3, Opacus' flat clipping
            return (self.clip / (norms + _NORM_EPS)).clamp(max=1.0) * mask

        kernel = self._mlp if self._mlp is not None else self._cnn
        if kernel is not None:
            summed, losses, norms = kernel.clipped_gradient_sums(live, x, y, factor_of)
        else:
            grads, losses = self._per_example(live, x, y)  # (k, L, *shape), (k, L)
            with torch.no_grad():
                norms = torch.stack(
                    [g.flatten(2).norm(2, dim=-1) for g in grads.values()], dim=2
                ).norm(2, dim=2)  # (k, L), over all layers
                factor = factor_of(norms)
                summed = {n: torch.einsum("kl,kl...->k...", factor, g) for n, g in grads.items()}
        with torch.no_grad():
            loss_sum = (losses * mask).sum(1).double().cpu().numpy()
            n_clipped = ((norms > self.clip) & (mask > 0)).sum(1).double().cpu().numpy()
        return summed, loss_sum, n_clipped


__all__ = ["CohortDPSGD"]
