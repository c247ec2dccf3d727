"""q-FFL trained with q-FedAvg (Li, Sanjabi, Beirami and Smith, "Fair Resource Allocation in
Federated Learning", ICLR 2020, Algorithm 2; reference code github.com/litian96/fair_flearn,
``flearn/trainers/qffedavg.py``).

q-FFL minimizes ``sum_k p_k / (q + 1) * F_k(w)^(q + 1)``: the larger ``q``, the more weight on
the clients with a large loss, and so the more uniform the clients' accuracies. q-FedAvg's round,
for the sampled clients ``k`` with local models ``w_bar_k`` trained from ``w`` and ``L = 1 / lr``
(the paper's Lipschitz estimate):

    Delta w_k = L (w - w_bar_k)
    Delta_k   = F_k(w)^q Delta w_k
    h_k       = q F_k(w)^(q - 1) ||Delta w_k||^2 + L F_k(w)^q
    w        <- w - sum_k n_k Delta_k / sum_k n_k h_k

``F_k(w)`` is client ``k``'s loss on its local training data at the global model ``w``, before
local training; as the reference code does, ``F_k + 1e-10`` is raised to the powers.

**The weights n_k.** The paper's objective weighs client ``k`` by ``p_k = n_k / n`` (its share
of the examples); Algorithm 2 samples clients with probability ``p_k`` and sums ``Delta_k`` and
``h_k`` unweighted. privfl samples clients uniformly, so the same objective needs the sums
weighted by ``n_k`` (both are unbiased for ``sum_k p_k F_k^q grad F_k`` and its Lipschitz
bound). With ``q = 0`` the step is then ``w <- sum_k n_k w_bar_k / sum_k n_k``, exactly FedAvg:
the reduction the paper states. Equal weights (``n_k = 1``) give the reference code's uniform
baseline instead (``--sampling=1``).

In privfl the step lives in the aggregation stage (:class:`QFFLAggregator`), since it needs each
client's update and loss; ``[federation] server_optimizer = "qffl"`` selects it, and the server
optimizer then adds the aggregate as it is (:class:`privfl.server_optim.FedAvg` at ``lr = 1``).
The clients report ``F_k(w)`` as the update metric ``start_loss`` (:func:`client_start_losses`),
which the server sees in plaintext: q-FFL reveals every sampled client's loss each round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from privfl.errors import PrivflError
from privfl.evaluation import per_example
from privfl.pipeline import Contribution
from privfl.stages import AggregationResult, Aggregator, RoundContext
from privfl.update import ParamSpec, UpdateBatch

if TYPE_CHECKING:
    from privfl.config import Config
    from privfl.data.federated import FederatedData
    from privfl.pipeline import RunSetup

#: The metric in which clients report ``F_k(w^t)``.
START_LOSS = "start_loss"
#: Added to ``F_k`` before the powers, as in the reference code (``loss + 1e-10``).
LOSS_EPS = 1e-10


def qffl_aggregate(
    deltas: torch.Tensor,
    losses: np.ndarray | torch.Tensor,
    q: float,
    lr: float,
    weights: np.ndarray | None = None,
) -> tuple[torch.Tensor, float]:
    """q-FedAvg's move of the global model, ``-sum_k n_k Delta_k / sum_k n_k h_k`` (Li et al.
    2020, Algorithm 2, with the weights of uniform sampling: see the module docstring), as one
    matrix-vector product.

    Args:
        deltas: float32 ``(n, dim)``, the clients' ``w_bar_k - w`` (so ``Delta w_k = -L delta_k``).
        losses: ``(n,)``, ``F_k(w)`` of each client at the global model, non-negative.
        q: the fairness parameter, ``q >= 0``.
        lr: the clients' SGD learning rate; ``L = 1 / lr``.
        weights: ``(n,)`` non-negative ``n_k`` (example counts); None: all 1 (Algorithm 2's
            unweighted sums).
    Returns:
        ``(move, sum_h)``: float32 ``(dim,)`` to add to ``w``, and ``sum_k n_k h_k``.
    """
    if q < 0:
        raise ValueError(f"q must be >= 0, got {q}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    f = torch.as_tensor(np.asarray(losses, dtype=np.float64)) + LOSS_EPS
    big_l = 1.0 / lr
    fq = f**q
    # ||Delta w_k||^2 = L^2 ||delta_k||^2; the norms accumulate in float64.
    sq = torch.linalg.vector_norm(deltas, dim=1, dtype=torch.float64) ** 2 * big_l**2
    n = torch.ones_like(f) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    h = q * f ** (q - 1) * sq + big_l * fq
    sum_h = float(n @ h)
    if not sum_h > 0:
        raise ValueError(f"sum_k n_k h_k must be positive, got {sum_h}")
    # -sum_k n_k Delta_k / sum n h = sum_k (n_k L F_k^q / sum n h) delta_k
    coef = (n * big_l * fq / sum_h).to(deltas.dtype)
    return (coef @ deltas).contiguous(), sum_h


class QFFLAggregator(Aggregator):
    """q-FedAvg's aggregation (:func:`qffl_aggregate`) of the updates and the ``start_loss``
    each client reports, weighted by the batch's weights (example counts)."""

    #: The federation attaches each client's ``F_k(w^t)`` as ``start_loss`` (zero cost for
    #: the other aggregators, which do not ask).
    needs_start_loss = True

    def __init__(self, q: float, lr: float) -> None:
        self.q, self.lr = float(q), float(lr)

    def aggregate(self, batch: UpdateBatch, ctx: RoundContext) -> AggregationResult:
        losses = batch.metrics.get(START_LOSS)
        if losses is None or not np.isfinite(losses).all() or (losses < 0).any():
            raise PrivflError(
                f"q-FFL round {ctx.round}: every update must carry a finite, non-negative "
                f"'{START_LOSS}' (the client's loss at the global model); got "
                f"{None if losses is None else losses.tolist()}"
            )
        move, sum_h = qffl_aggregate(batch.deltas, losses, self.q, self.lr, batch.weights)
        info = {
            "qffl_start_loss_mean": float(np.mean(losses)),
            "qffl_start_loss_max": float(np.max(losses)),
            "qffl_h_sum": sum_h,
        }
        return AggregationResult(move, info=info)


def client_start_losses(
    model: nn.Module,
    spec: ParamSpec,
    params: torch.Tensor,
    data: FederatedData,
    clients: list[int],
    batch_size: int = 1024,
) -> np.ndarray:
    """``F_k(w)``: each client's mean cross-entropy on its local training data at the global
    parameters ``params``, exactly (every example, the training loss without FedProx's term),
    float64 ``(len(clients),)``; 0 for a client without training data.

    The global model is the same for every client, so all the cohort's examples go through it
    in one pass and each client's loss is a segmented mean (no per-client loop)."""
    indices = [np.asarray(data.partition.indices[c]) for c in clients]
    sizes = np.array([len(i) for i in indices])
    out = np.zeros(len(clients))
    if not sizes.any():
        return out
    spec.load_into(model, params)
    idx = torch.from_numpy(np.concatenate(indices).astype(np.int64))
    train = data.bundle.train
    loss, _ = per_example(model, train.x[idx], train.y[idx], batch_size)
    keep = sizes > 0
    starts = np.concatenate([[0], np.cumsum(sizes[keep])[:-1]])
    out[keep] = np.add.reduceat(loss.numpy(), starts) / sizes[keep]
    return out


def qffl_stages(config: Config, setup: RunSetup) -> Contribution:
    """What ``[federation] server_optimizer = "qffl"`` adds to a run: the q-FedAvg aggregator
    with ``q = server_q`` and ``L = 1 / lr``."""
    f = config.federation
    return Contribution(aggregator=QFFLAggregator(f.server_q, f.lr))


__all__ = [
    "LOSS_EPS",
    "QFFLAggregator",
    "START_LOSS",
    "client_start_losses",
    "qffl_aggregate",
    "qffl_stages",
]
