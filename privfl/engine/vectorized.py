"""The vectorized engine: a round's cohort trained as one batched computation (torch.func).

Every client keeps its own copy of the parameters, stacked along a leading client axis; one
local step of all clients is one forward pass ``vmap(functional_call)`` over that axis (the run's
own module on each client's parameters), one reverse pass giving every client's gradient, and
the SGD update written on the stacked tensors. The arithmetic is the sequential engine's:

- each client's mini-batches are exactly those of :func:`privfl.client.batch_schedule` on its
  stream ``(seed, "client", round, cid)`` (see :mod:`privfl.engine.schedule`);
- batches of unequal size are padded and the loss is the mean over the real examples only
  (``sum(mask * ce) / sum(mask)``), so padding contributes exactly zero gradient;
- clients with fewer steps stop early: clients are sorted by step count, and step ``t`` only
  computes the first ``active[t]`` rows, so no client takes an extra step;
- the update is ``torch.optim.SGD``'s (weight decay, momentum with the first-step buffer, no
  dampening, no Nesterov) plus FedProx's proximal gradient ``mu (w - w_global)``.

It agrees with :class:`~privfl.engine.sequential.SequentialEngine` to float rounding (the
batched matrix products sum in another order); ``tests/engine/test_vectorized_engine.py``
checks the models after several rounds.

Trainers other than :class:`privfl.client.SGDTrainer` (DP-SGD, a poisoner's trainer) and models
torch.func cannot run are trained by the sequential engine instead, with the reason logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from privfl.client import LocalTrainer, LocalTraining, SGDTrainer
from privfl.data.federated import FederatedData
from privfl.engine.base import Engine
from privfl.engine.batched_cnn import BatchedCNN, CohortCNNSGD
from privfl.engine.batched_mlp import (
    BatchedMLP,
    ClientGrams,
    CohortSGD,
    cohort_rows,
    stacked_params,
)
from privfl.engine.factored import FactoredDeltas
from privfl.engine.groups import side_by_side
from privfl.engine.schedule import CohortSchedule, cohort_schedule
from privfl.engine.sequential import SequentialEngine
from privfl.engine.vectorized_dp import CohortDPSGD
from privfl.update import ParamSpec, Update, UpdateBatch

if TYPE_CHECKING:
    from privfl.config import FederationConfig


def _dpsgd_trainer_type() -> type:
    # Deferred: privfl.defenses imports the config, which imports the engines.
    from privfl.defenses.dp.dpsgd import DPSGDTrainer

    return DPSGDTrainer


log = logging.getLogger(__name__)

Params = dict[str, torch.Tensor]


def sgd_update(
    live: Params,
    grads: Params,
    start: Params,
    momentum: Params,
    cfg: LocalTraining,
    *,
    first: bool,
) -> None:
    """One ``torch.optim.SGD`` step on the stacked parameters of ``k`` clients, in place.

    ``d = g + mu (w - w_global) + wd w``; with momentum ``b = d`` on the first step, else
    ``b = momentum b + d`` (no dampening, no Nesterov), ``d = b``; ``w -= lr d``.

    Args:
        live: each ``(k, *shape)``, views of the first ``k`` rows of the cohort's parameters.
        grads: the clients' gradients, same shapes.
        start: the global parameters (FedProx's anchor), each ``shape``; or each client's own
            start, each ``(c, *shape)`` in the rows' order (per-client starts).
        momentum: the cohort's buffers, filled on the first step (rows ``[0, k)`` used later).
    """
    with torch.no_grad():
        for n, w in live.items():
            k = len(w)
            d = grads[n]
            if cfg.prox_mu > 0:
                anchor = start[n][:k] if start[n].ndim == w.ndim else start[n]
                d = d.add(w - anchor, alpha=cfg.prox_mu)
            if cfg.weight_decay:
                d = d.add(w, alpha=cfg.weight_decay)
            if cfg.momentum:
                if first:
                    momentum[n] = d.clone()
                else:
                    buf = momentum[n][:k]
                    buf.mul_(cfg.momentum).add_(d)
                    d = buf
            w.add_(d, alpha=-cfg.lr)  # a view: updates rows [0, k) of the cohort's tensor


class VectorizedEngine(Engine):
    """Trains a round's cohort in lock-step with ``torch.func.vmap`` over clients.

    CNNs (``nn.Sequential`` stacks of ``Conv2d``, affine GroupNorm, ReLU/tanh/sigmoid,
    max/average pooling, ``Flatten`` and ``Linear``: :class:`privfl.models.CNNConfig`) take
    the hand-written kernel :class:`~privfl.engine.batched_cnn.BatchedCNN`: the layers before
    ``Flatten`` run client by client on PyTorch's own convolution, normalization and pooling
    kernels (no autograd, no optimizer), the dense head, loss and updates batched over the
    cohort, with DP-SGD's per-example norms by mixed ghost clipping. Other models with
    convolutions (grouped convolutions, ...) are trained by the sequential engine (logged): vmap
    turns a convolution with per-client weights into a grouped convolution, which PyTorch's
    CPU kernels run slower than the per-client loop (W2's CNN: 0.4x). Set
    :attr:`vectorize_convolutions` to vectorize those with torch.func anyway (same numbers).

    Memory: the cohort's parameters (and momentum buffers) as ``(c, *shape)`` tensors plus one
    step's batch ``(c, B, *input_shape)``; client data stay index arrays until their batch is
    gathered.
    """

    name = "vectorized"
    #: How loudly a fallback to the sequential loop is logged (asked for, so a warning).
    fallback_log_level: int = logging.WARNING
    vectorize_convolutions: bool = False
    #: Split a plain-SGD CNN cohort into one group per torch thread (:meth:`_split_round`).
    split_cohort: bool = True
    #: Train multilayer perceptrons with :class:`~privfl.engine.batched_mlp.BatchedMLP`
    #: (False: with torch.func like every other model; the tests compare the two).
    use_batched_mlp: bool = True
    #: Train CNNs with :class:`~privfl.engine.batched_cnn.BatchedCNN` (False: convolutions
    #: fall back to the sequential engine unless :attr:`vectorize_convolutions`).
    use_batched_cnn: bool = True
    #: Keep plain-SGD MLP updates factored (:class:`~privfl.engine.factored.FactoredDeltas`;
    #: False: write every client's row, as before; benchmarks compare the two).
    factored_updates: bool = True

    def __init__(
        self,
        make_model: Callable[[], nn.Module],
        spec: ParamSpec,
        data: FederatedData,
        trainer: LocalTrainer,
        seed: int,
        federation: FederationConfig | None = None,
    ) -> None:
        super().__init__(make_model, spec, data, trainer, seed, federation)
        self._model = make_model()
        self._fallback: SequentialEngine | None = None
        # The run's own module, called on each client's parameter rows (vmap over clients).
        self._forward = vmap(lambda p, x: functional_call(self._model, p, (x,)))
        reason = self._unsupported_reason()
        if reason is not None:
            log.log(
                self.fallback_log_level,
                "engine = %r: %s; training clients sequentially",
                self.name,
                reason,
            )
            self._fallback = SequentialEngine(make_model, spec, data, trainer, seed, federation)
            return
        # Multilayer perceptrons take the hand-written batched path (same arithmetic, faster
        # on CPU: see privfl.engine.batched_mlp); other models the torch.func one.
        self._mlp = BatchedMLP.of(self._model) if self.use_batched_mlp else None
        self._cnn = BatchedCNN.of(self._model) if self.use_batched_cnn else None
        self._dp: CohortDPSGD | None = None
        dp = _dpsgd_trainer_type()
        if isinstance(trainer, dp):
            self._training = trainer.training
            self._dp = CohortDPSGD(
                self._model,
                spec,
                trainer.training,
                clip=trainer.clip,
                noise_multiplier=trainer.noise_multiplier,
                sgd_update=sgd_update,
                mlp=self._mlp,
                cnn=self._cnn,
            )
        else:
            self._training = trainer.config  # type: ignore[attr-defined]

    def _batched_grads(
        self, params: Params, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[Params, torch.Tensor]:
        """Each client's gradient of its mean cross-entropy, and that loss.

        The forward pass is ``vmap(functional_call)`` over the client axis; the gradients come
        from one reverse pass over the *sum* of the clients' losses, which is exact: client
        ``i``'s loss depends only on its own parameter rows, so the gradient of the sum with
        respect to row ``i`` is client ``i``'s gradient. (``vmap(grad(...))`` gives the same
        numbers but was 2x slower on the quickstart's small MLP: functorch's per-operation
        bookkeeping, not arithmetic, dominates there; see docs/design.md.)

        Args:
            params: each ``(k, *shape)``, the first ``k`` clients' parameters.
            x: ``(k, B, *input_shape)``; y: ``(k, B)`` labels.
            mask: ``(k, B)``, 1 for real examples, 0 for padding; None when no batch is padded.
        Returns:
            ``(grads, loss)``: grads with the shapes of ``params``; loss float32 ``(k,)``.
        """
        k, b = y.shape
        leaves = {n: w.detach().requires_grad_(True) for n, w in params.items()}
        logits = self._forward(leaves, x)
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, b)
        loss = ce.mean(1) if mask is None else (ce * mask).sum(1) / mask.sum(1)
        grads = torch.autograd.grad(loss.sum(), list(leaves.values()))
        return dict(zip(leaves, grads, strict=True)), loss

    def _split_round(
        self,
        group: Callable[..., tuple[torch.Tensor, torch.Tensor]],
        start: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        index: torch.Tensor,
        mask: torch.Tensor | None,
        sched: CohortSchedule,
        lr: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain SGD for the whole cohort by ``group`` (:meth:`_cnn_group`, or any function
        of that signature): float64 losses ``(T, c)`` and the deltas ``(c, dim)``, rows in
        the schedule's order.

        On the CPU with ``n > 1`` torch threads (and :attr:`split_cohort`) the cohort is dealt
        into ``n`` groups (rows ``g, g + n, ...``, so each keeps the non-increasing step
        order) trained side by side by ``n`` Python threads, each single-threaded inside
        torch. The clients are independent, so the numbers are the one-group run's. A
        client's convolutions are too small for torch's intra-op threads: on an idle machine
        W2's round took 1.38 s split against 1.72 s as one group on two threads (and under
        load the gap is far larger: every intra-op barrier waits for a busy core). W1's MLP
        rounds are not split: there one group on two threads was faster (21 ms against
        28 ms split, idle)."""
        c = len(sched.steps)
        split = self.split_cohort and x.device.type == "cpu"
        groups = min(torch.get_num_threads(), c // 2) if split else 1
        if groups <= 1:
            return group(start, x, y, index, mask, sched.steps, lr)
        rows = [np.arange(g, c, groups) for g in range(groups)]
        # Each group writes its clients' deltas straight into their rows (a strided view).
        deltas = cohort_rows(c, self.spec.dim, x.new_empty(0, dtype=torch.float32))

        def work(g: int) -> torch.Tensor:
            sel = torch.from_numpy(rows[g])
            m = None if mask is None else mask[:, sel]
            steps = sched.steps[rows[g]]
            return group(start, x, y, index[:, sel], m, steps, lr, out=deltas[g::groups])[0]

        parts = side_by_side(groups, work)
        losses = torch.zeros((index.shape[0], c), dtype=torch.float64)
        for g, loss in enumerate(parts):
            losses[: len(loss), g::groups] = loss
        return losses, deltas

    def _mlp_group(
        self,
        start: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        index: torch.Tensor,
        mask: torch.Tensor | None,
        steps: np.ndarray,
        lr: float,
        out: torch.Tensor | None = None,
        grams: Callable[[int, int], torch.Tensor | None] | None = None,
        factored: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | FactoredDeltas]:
        """:meth:`CohortSGD.run` on the rows of ``index`` (their ``steps``, non-increasing):
        losses ``(T_group, rows)`` float64 and deltas ``(rows, dim)`` (written into ``out``
        when given; kept factored with ``factored``)."""
        t_max, k, width = int(steps.max(initial=0)), index.shape[1], index.shape[2]
        if t_max == 0:
            return self._untrained(k, x.device, out)
        active = [int((steps > t).sum()) for t in range(t_max)]
        cohort = CohortSGD(self._mlp, start, k, width, rows=t_max * width)
        m = None if mask is None else mask[:t_max]
        losses = cohort.run(x, y, index[:t_max], m, active, lr, grams)
        names = list(self.spec.names)
        return losses.double(), cohort.factored(names) if factored else cohort.deltas(names, out)

    def _cnn_group(
        self,
        start: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        index: torch.Tensor,
        mask: torch.Tensor | None,
        steps: np.ndarray,
        lr: float,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:class:`CohortCNNSGD` steps on the rows of ``index`` (their ``steps``,
        non-increasing): losses ``(T_group, rows)`` float64 and deltas ``(rows, dim)``
        (written into ``out`` when given)."""
        t_max, k = int(steps.max(initial=0)), index.shape[1]
        if t_max == 0:
            return self._untrained(k, x.device, out)
        losses = torch.zeros((t_max, k), dtype=torch.float64, device=x.device)
        cohort = CohortCNNSGD(self._cnn, start, k, index.shape[2])
        for t in range(t_max):
            a = int((steps > t).sum())
            rows = index[t, :a]
            m = None if mask is None else mask[t, :a]
            losses[t, :a] = cohort.step(x[rows], y[rows], m, lr).double()
        return losses, cohort.deltas(list(self.spec.names), out)

    def _client_grams(self, train_x: torch.Tensor) -> ClientGrams:
        """The run's cache of each client's Gram matrix (made on first use)."""
        cache = getattr(self, "_grams", None)
        if cache is None:
            cache = self._grams = ClientGrams(train_x, self.data.partition.indices)
        return cache

    def _untrained(
        self, k: int, device: torch.device, out: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A group in which nobody trains (clients without examples): no losses ``(0, k)``
        and zero deltas ``(k, dim)`` (``out`` zeroed when given)."""
        losses = torch.zeros((0, k), dtype=torch.float64, device=device)
        if out is None:
            return losses, torch.zeros((k, self.spec.dim), device=device)
        return losses, out.zero_()

    def _train_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training tensors on the engine's device (copied there once per run)."""
        b = self.data.bundle.train
        if self.device.type == "cpu":
            return b.x, b.y
        if getattr(self, "_device_train", None) is None:
            self._device_train = (b.x.to(self.device), b.y.to(self.device))
        return self._device_train

    @property
    def falls_back(self) -> bool:
        """True when this engine hands every round to the sequential engine."""
        return self._fallback is not None

    @property
    def trains_with(self) -> str:
        return "sequential" if self._fallback is not None else "vectorized"

    def _unsupported_reason(self) -> str | None:
        """Why this run cannot be vectorized, or None when it can."""
        if getattr(self.trainer, "secure_rng", False):
            return (
                "DP-SGD with defense.dp.secure_rng = true draws its lots and noise from the OS "
                "client by client; the batched DP-SGD path draws them from the seeded streams"
            )
        if type(self.trainer) not in (SGDTrainer, _dpsgd_trainer_type()):
            return (
                f"its trainer {type(self.trainer).__name__} is neither the plain SGD trainer "
                "nor the DP-SGD trainer (the two with a vectorized path)"
            )
        if type(self.trainer) is not SGDTrainer:
            from privfl.defenses.dp.dpsgd import check_model

            check_model(self._model)  # as DPSGDTrainer would: BatchNorm etc. are errors
        if self.data.bundle.train.x.dtype == torch.int64:
            return (
                "the data are token windows for a recurrent model: the batched kernels take "
                "float inputs, and vmap has no batching rule for the fused LSTM kernel"
            )
        convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
        if not self.vectorize_convolutions and any(
            isinstance(m, convs) for m in self._model.modules()
        ):
            why = (
                BatchedCNN.unsupported(self._model)
                if self.use_batched_cnn
                else "the batched CNN kernel is switched off"
            )
            if why is not None:
                return (
                    f"the model has convolutions the batched CNN kernel does not take ({why}), "
                    "and vmap turns them into grouped convolutions that run slower on CPU than "
                    "the per-client loop"
                )
        names = set(self.spec.names)
        if any(True for _ in self._model.buffers()):
            return "the model has buffers (running statistics), which differ per client"
        if any(n not in names for n, _ in self._model.named_parameters()):
            return "the model has frozen parameters"
        # Probe torch.func on two clients with one example each: any operation vmap or grad
        # cannot batch shows up here, once, instead of in the middle of a run.
        try:
            x = torch.zeros((2, 1, *self.data.bundle.input_shape))
            y = torch.zeros((2, 1), dtype=torch.int64)
            p = {n: q.detach().expand(2, *q.shape) for n, q in self._model.named_parameters()}
            self._batched_grads(p, x, y, torch.ones(2, 1))
        except Exception as e:  # noqa: BLE001 - the reason is logged, the run falls back
            return f"torch.func cannot vectorize the model ({type(e).__name__}: {e})"
        return None

    def train(
        self,
        global_params: torch.Tensor,
        clients: Sequence[int],
        round: int,
        *,
        starts: torch.Tensor | None = None,
    ) -> list[Update]:
        if self._fallback is not None:
            return self._fallback.train(global_params, clients, round, starts=starts)
        return list(self.train_batch(global_params, clients, round, starts=starts))

    def train_batch(
        self,
        global_params: torch.Tensor,
        clients: Sequence[int],
        round: int,
        *,
        starts: torch.Tensor | None = None,
    ) -> UpdateBatch:
        """:meth:`train`'s updates as one batch. Plain SGD on an MLP keeps them factored
        (:class:`~privfl.engine.factored.FactoredDeltas`): FedAvg's mean is then one product
        of the cohort's factors, and the rows are written only if a stage reads them."""
        if self._fallback is not None:
            return self._fallback.train_batch(global_params, clients, round, starts=starts)
        clients = [int(c) for c in clients]
        if not clients:
            return UpdateBatch.stack([], self.spec.dim)
        dev = self.device  # everything below is on it; the updates go back to the CPU
        global_params = global_params.to(dev)
        starts = None if starts is None else starts.to(dev)
        train_x, train_y = self._train_data()
        if self._dp is not None:
            parts = [self.data.partition.indices[cid] for cid in clients]
            deltas, metrics = self._dp.train(
                global_params, parts, train_x, train_y, self.seed, round, clients, starts=starts
            )
            deltas = deltas.cpu()
            updates = [
                Update(cid, deltas[i], len(parts[i]), metrics[i]) for i, cid in enumerate(clients)
            ]
            return UpdateBatch.stack(updates, self.spec.dim)
        c, cfg = len(clients), self._training
        sched = cohort_schedule(self.data.partition.indices, clients, cfg, self.seed, round)
        start = self.spec.unflatten(global_params)
        index, mask_all = sched.index.to(dev), sched.mask.to(dev)
        losses = torch.zeros((len(sched.active), c), dtype=torch.float64, device=dev)
        batches = (
            (t, k, train_x[index[t, :k]], train_y[index[t, :k]]) for t, k in enumerate(sched.active)
        )
        mask_of = lambda t, k: mask_all[t, :k] if sched.padded else None  # noqa: E731
        plain = not (cfg.momentum or cfg.weight_decay or cfg.prox_mu > 0)
        if self._mlp is not None and plain and starts is None:
            # Plain SGD on an MLP from one shared start: deferred low-rank updates
            # (privfl.engine.batched_mlp); per-client starts take the dense path below.
            mask = mask_all if sched.padded else None
            rows = [clients[i] for i in sched.order.tolist()]
            positions = sched.positions

            def grams(t0: int, t1: int) -> torch.Tensor | None:
                window = positions[t0:t1].transpose(0, 1).reshape(c, -1)
                return self._client_grams(train_x).window(rows, window)

            # One group on torch's own threads: on an idle machine W1's round took 21 ms so
            # against 28 ms split into a group per thread (the CNN rounds below split).
            losses, deltas = self._mlp_group(  # type: ignore[assignment]
                start,
                train_x,
                train_y,
                index,
                mask,
                sched.steps,
                cfg.lr,
                grams=grams,
                factored=self.factored_updates,
            )
        elif self._cnn is not None and plain and starts is None:
            # Plain SGD on a CNN from one shared start (privfl.engine.batched_cnn): the first
            # step's convolutions are one GEMM, the dense head's updates deferred.
            mask = mask_all if sched.padded else None
            losses, deltas = self._split_round(
                self._cnn_group, start, train_x, train_y, index, mask, sched, cfg.lr
            )
        else:
            if starts is None:
                params = {n: w.unsqueeze(0).repeat(c, *([1] * w.ndim)) for n, w in start.items()}
            else:  # rows in the schedule's order (most steps first), each its client's start
                origin = starts[torch.as_tensor(sched.order)]
                start = stacked_params(self.spec, origin)  # FedProx's anchor: own start
                params = {n: w.clone() for n, w in start.items()}
            momentum: Params = {}
            for t, k, xb, yb in batches:
                live = {n: w[:k] for n, w in params.items()}
                if self._mlp is not None:
                    grads, loss = self._mlp.gradients(live, xb, yb, mask_of(t, k))
                elif self._cnn is not None:
                    grads, loss = self._cnn.gradients(live, xb, yb, mask_of(t, k))
                else:
                    grads, loss = self._batched_grads(live, xb, yb, mask_of(t, k))
                sgd_update(live, grads, start, momentum, cfg, first=t == 0)
                losses[t, :k] = loss.detach().double()
            flat = torch.cat([params[n].reshape(c, -1) for n in self.spec.names], dim=1)
            deltas = flat - (global_params if starts is None else origin)
        # Row ``row`` of the schedule is client ``order[row]``: the batch is in ``clients``' order.
        row_of = np.empty(c, dtype=np.int64)
        row_of[sched.order] = np.arange(c)
        mean_loss = ((losses.cpu() * sched.sizes).sum(dim=0) / sched.sizes.sum(dim=0)).numpy()
        steps = sched.steps[row_of].astype(np.float64)
        ids = np.asarray(clients, dtype=np.int64)
        weights = np.array([len(self.data.partition.indices[i]) for i in clients], dtype=np.float64)
        figures = {"loss": np.where(steps > 0, mean_loss[row_of], np.nan), "steps": steps}
        if isinstance(deltas, FactoredDeltas):
            factors = deltas.take(row_of)
            return UpdateBatch(ids, None, weights, figures, factors=factors)  # type: ignore[arg-type]
        written = deltas.cpu()  # one transfer (none on the CPU)
        if not np.array_equal(row_of, np.arange(c)):
            written = written[torch.from_numpy(row_of)]
        return UpdateBatch(ids, written, weights, figures)


class AutoEngine(VectorizedEngine):
    """``engine = "auto"`` (the default): the vectorized engine where it supports the run's
    model and trainer, the sequential one otherwise, the reason logged once at INFO level
    (``privfl run -v`` shows it; ``timings.jsonl`` records the engine used each round)."""

    name = "auto"
    fallback_log_level = logging.INFO


__all__ = ["AutoEngine", "VectorizedEngine"]
