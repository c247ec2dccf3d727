"""A client's local training replayed, differentiably, on candidate data.

The server sees model deltas ``Delta = w_K - w_0`` (local minus global), not gradients. For
plain SGD with learning rate ``lr`` the delta of ``K`` steps is ``Delta = -lr * sum_k v_k``,
where ``v_k`` is the step direction (the mini-batch gradient, plus weight decay, FedProx's
proximal term, and momentum's running sum). The attacks therefore work on the *gradient
equivalent* ``G = -Delta / lr = sum_k v_k``: for one step it is exactly the gradient DLG
inverts; for several steps Inverting Gradients (Geiping et al., NeurIPS 2020, §4
"multi-step") matches it with :func:`local_update` run on its candidate data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from privfl.client import LocalTraining


def num_local_steps(training: LocalTraining, n: int) -> int:
    """SGD steps a client holding ``n`` examples takes (as :func:`privfl.client.batch_schedule`)."""
    if training.steps is not None:
        return training.steps
    b = n if training.batch_size is None else min(training.batch_size, n)
    return training.epochs * math.ceil(n / b)


def examples_used(training: LocalTraining, n: int) -> int:
    """How many of a client's ``n`` examples its local training touches: ``min(n, K * B)``
    for ``K`` steps of batch ``B`` (one step of batch 1 touches one example). This is the
    number of images the attack reconstructs."""
    b = n if training.batch_size is None else min(training.batch_size, n)
    return min(n, num_local_steps(training, n) * b)


def local_update(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    training: LocalTraining,
    *,
    steps: int,
    batch_size: int | None,
    create_graph: bool = True,
) -> list[torch.Tensor]:
    """The gradient equivalent ``G = -(w_K - w_0) / lr`` of ``steps`` SGD steps from ``params``.

    Replays :class:`privfl.client.SGDTrainer`: cross-entropy loss (mean over the batch),
    ``torch.optim.SGD`` with ``training``'s momentum and weight decay, FedProx's
    ``mu / 2 * ||w - w_0||^2``. The true client reshuffles its data every epoch; the attacker
    does not know the order, so step ``k`` uses the ``(k mod b)``-th consecutive chunk of
    ``batch_size`` candidates (as Geiping et al.'s ``loss_steps``): the candidates are
    interchangeable, so within one epoch nothing is lost.

    Args:
        model: the architecture; its own weights are not used.
        params: the starting weights by name (``ParamSpec.unflatten`` of the global model).
        x: candidate inputs ``(n, *input_shape)``.
        y: int64 labels ``(n,)`` or class probabilities ``(n, num_classes)`` (DLG's soft
            labels).
        steps: number of SGD steps ``K``.
        batch_size: examples per step; None = all ``n``.
        create_graph: keep the graph so the result can be differentiated w.r.t. ``x``, ``y``.

    Returns:
        One tensor per parameter, in ``params`` order: ``sum_k v_k``.
    """
    names = list(params)
    # The global weights are constants to the attacker; they need requires_grad only so that
    # the step gradients can be taken with respect to them.
    w0 = [p if p.requires_grad else p.detach().requires_grad_(True) for p in params.values()]
    w = list(w0)
    n = len(x)
    b = n if batch_size is None else min(batch_size, n)
    # One chunk covering the batch is passed whole: slicing would add autograd nodes.
    chunks = [slice(i, min(i + b, n)) for i in range(0, n, b)] if b < n else [slice(None)]
    total: list[torch.Tensor] | None = None
    buf: list[torch.Tensor] | None = None
    for k in range(steps):
        part = chunks[k % len(chunks)]
        xb, yb = (x, y) if b == n else (x[part], y[part])
        out = functional_call(model, dict(zip(names, w, strict=True)), (xb,))
        loss = F.cross_entropy(out, yb)
        if training.prox_mu > 0 and k > 0:
            prox = sum(((p - a) ** 2).sum() for p, a in zip(w, w0, strict=True))
            loss = loss + 0.5 * training.prox_mu * prox
        grads = torch.autograd.grad(loss, w, create_graph=create_graph)
        d, buf = _sgd_direction(grads, w, buf, training)
        total = d if total is None else [t + di for t, di in zip(total, d, strict=True)]
        if k + 1 < steps:
            w = [p - training.lr * di for p, di in zip(w, d, strict=True)]
    if total is None:
        raise ValueError("local_update needs at least one step")
    return total


def local_updates(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    training: LocalTraining,
    *,
    steps: int,
    batch_size: int | None,
    create_graph: bool = True,
) -> list[torch.Tensor]:
    """:func:`local_update` for ``T`` independent candidate sets at once, from the same
    ``params``: row ``t`` of each result is ``local_update`` of ``x[t], y[t]``.

    The weights are replicated along a leading target axis and the model is run with
    ``torch.func.vmap`` over (weights, inputs), so the summed loss's gradient with respect to
    the stacked weights is each target's own gradient in its row (the Jacobian is
    block-diagonal across targets); the local steps then move each row separately. The
    gradients are taken with ordinary autograd (``create_graph``), so the result can be
    differentiated with respect to ``x`` and ``y`` as ``local_update``'s can. Needs a model
    without buffers or dropout (vmap cannot update running statistics in place or draw a
    mask per row); the attacks fall back to the per-target loop otherwise
    (:func:`can_batch`).

    Args:
        x: candidate inputs ``(T, n, *input_shape)``.
        y: int64 labels ``(T, n)`` or class probabilities ``(T, n, num_classes)``.

    Returns:
        One tensor ``(T, *shape)`` per parameter, in ``params`` order.
    """
    names = list(params)
    t = len(x)
    # Each target's copy of the global weights: constants to the attacker, leaves that need
    # requires_grad only so that the step gradients can be taken with respect to them.
    w0 = [
        p.detach().unsqueeze(0).expand(t, *p.shape).clone().requires_grad_(True)
        for p in params.values()
    ]
    w = list(w0)
    n = x.shape[1]
    b = n if batch_size is None else min(batch_size, n)
    chunks = [slice(i, min(i + b, n)) for i in range(0, n, b)] if b < n else [slice(None)]

    def forward(weights: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(model, weights, (inputs,))

    batched = vmap(forward)
    total: list[torch.Tensor] | None = None
    buf: list[torch.Tensor] | None = None
    for k in range(steps):
        part = chunks[k % len(chunks)]
        xb, yb = (x, y) if b == n else (x[:, part], y[:, part])
        out = batched(dict(zip(names, w, strict=True)), xb)
        # the mean cross-entropy of each target's batch, summed over the targets
        per_example = F.cross_entropy(out.flatten(0, 1), yb.flatten(0, 1), reduction="none")
        loss = per_example.view(t, -1).mean(dim=1)
        if training.prox_mu > 0 and k > 0:
            prox = sum(((p - a) ** 2).flatten(1).sum(1) for p, a in zip(w, w0, strict=True))
            loss = loss + 0.5 * training.prox_mu * prox
        grads = torch.autograd.grad(loss.sum(), w, create_graph=create_graph)
        d, buf = _sgd_direction(grads, w, buf, training)
        total = d if total is None else [s + di for s, di in zip(total, d, strict=True)]
        if k + 1 < steps:
            w = [p - training.lr * di for p, di in zip(w, d, strict=True)]
    if total is None:
        raise ValueError("local_updates needs at least one step")
    return total


def can_batch(model: nn.Module) -> str | None:
    """Why :func:`local_updates` cannot run ``model`` (None when it can): buffers (batch
    norm's running statistics) or dropout, which vmap cannot batch in the attack's replay."""
    if any(True for _ in model.buffers()):
        return "the model has buffers"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()):
        return "the model has dropout"
    return None


def gradient_equivalent(delta: torch.Tensor, lr: float) -> torch.Tensor:
    """``G = -Delta / lr``: the sum of the local step directions, shape as ``delta``."""
    return -delta / lr


def single_gradient_target(
    update: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    training: LocalTraining,
    n: int,
) -> list[torch.Tensor]:
    """DLG's reading of an update as one gradient on the ``D = examples_used(n)`` examples.

    With ``K`` local steps of batch ``B`` (``B <= n``) the step gradients sum to about
    ``(K * B / D)`` times the gradient of the mean loss over the ``D`` examples, and weight
    decay adds ``K * wd * w_0``; so the single gradient is
    ``(G - K * wd * w_0) * D / (K * B)``. For one step (the papers' setting) this is exact:
    ``G - wd * w_0``, the gradient itself. For several steps it is the FedSGD approximation
    DLG and iDLG make; Inverting Gradients replays the steps instead.

    Args:
        update: the gradient equivalent ``G`` per parameter.
        params: the global weights ``w_0`` per parameter.
    """
    k = num_local_steps(training, n)
    b = n if training.batch_size is None else min(training.batch_size, n)
    scale = examples_used(training, n) / (k * b)
    wd = training.weight_decay
    return [
        (g - k * wd * w) * scale if wd else g * scale for g, w in zip(update, params, strict=True)
    ]


def _sgd_direction(
    grads: Sequence[torch.Tensor],
    w: Sequence[torch.Tensor],
    buf: list[torch.Tensor] | None,
    training: LocalTraining,
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """``torch.optim.SGD``'s step direction (weight decay, then momentum with the first-step
    buffer, no dampening or Nesterov) and the new momentum buffer, differentiably."""
    d = [
        g + training.weight_decay * p if training.weight_decay else g
        for g, p in zip(grads, w, strict=True)
    ]
    if training.momentum:
        buf = (
            d if buf is None else [training.momentum * m + di for m, di in zip(buf, d, strict=True)]
        )
        d = buf
    return d, buf


__all__ = [
    "can_batch",
    "examples_used",
    "gradient_equivalent",
    "local_update",
    "local_updates",
    "num_local_steps",
    "single_gradient_target",
]
