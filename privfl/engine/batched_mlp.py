"""A cohort's local SGD step for multilayer perceptrons, written out as batched matrix products.

The vectorized engine's general path (``vmap(functional_call)`` and one reverse pass) works for
any model torch.func can trace. For the multilayer perceptron (``Flatten``, then ``Linear``
layers with ReLU, tanh or sigmoid between them, the shape of :class:`privfl.models.MLPConfig`)
this module does the same arithmetic by hand, for two reasons measured on W1 (MLP
784-200-200-10, 20 clients, batch 10, one thread; ``benchmarks/perf/throughput.py``):

- with batches of ten examples a step is bound by memory traffic over the cohort's stacked
  weights (20 clients x 784 x 200 floats = 12.5 MB for the first layer alone, past the L2
  cache), not by arithmetic: autograd writes each client's gradient, the SGD step reads it
  back and reads and writes the weights, every step;
- autograd's and functorch's per-operation bookkeeping is paid once per layer, not per client.

Plain SGD (:class:`CohortSGD`) goes further: a step's weight update ``-lr g^T a`` has rank at
most B (the batch), so a client's weights after ``t`` steps are the round's *shared* start
weights plus a low-rank sum, ``W_i = W + G_i^T A_i`` (``A_i``: the layer inputs of its steps,
``G_i``: ``-lr`` times their output gradients). The forward pass is then one matrix product of
the whole cohort's batch with the shared ``W`` (read once, cache-resident) plus
``(x A_i^T) G_i``; the backward pass likewise; the update only appends ``a`` and ``-lr g``.
Each client's weights are formed once, at the end of the round, as its update
``G_i^T A_i``. When the pending rank would pass half of ``min(in, out)`` the factors are
folded into per-client weights and collection starts again, so a step never costs more than
about twice the dense one; layers too narrow for it (the 10-logit output) are updated densely.

A whole round (:meth:`CohortSGD.run`) goes further still for the first layer, whose inputs are
the data and so known before the round starts (:class:`_Windowed`): the forward products of
all its steps are one ``(c T B x in) @ (in x out)`` product, the low-rank corrections need
only each client's Gram matrix ``X X^T`` (one batched product), and a step touches nothing
``in`` wide. What is left per step is the narrower layers; the round's weight gradients of the
first layer are one batched ``G^T X`` at the end, written straight into the cohort's flat
``(c, dim)`` update. On W1 about three quarters of the arithmetic is then in four large
products (the first layer's forward, its updates, the Gram matrices, the second layer's
updates).

Inside :meth:`CohortSGD.run` a step does nothing but its products and an activation each way:
each layer's input and output gradient are written by the operation that makes them straight
into the deferred factors' buffers (:class:`_RoundDeferred`), the bias rides in the factors as
a constant input 1, ``-lr`` (and an unpadded batch's ``1 / B``) is the products' scale rather
than a pass over the gradients, and the losses are reduced once a round from each example's
log-likelihood.

The arithmetic is SGD's (the same sums, in another order, so equal to float rounding): the
gradient of each client's mean cross-entropy over its real (unmasked) examples.
``tests/engine/test_batched_mlp.py`` checks both against ``torch.func`` and plain SGD, and the
vectorized engine against the sequential one. Written by hand because no library offers a
client-batched SGD step for deferred low-rank updates; everything else stays torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from privfl.engine.factored import Dense, FactoredDeltas, LowRank, cohort_rows
from privfl.engine.gemm import bmm_into, linear, matmul

if TYPE_CHECKING:
    from privfl.update import ParamSpec

Params = dict[str, torch.Tensor]

#: Activations supported, each with its derivative written in terms of its output ``y``.
_DERIVATIVES = {
    nn.ReLU: lambda y: (y > 0).to(y.dtype),
    nn.Tanh: lambda y: 1 - y * y,
    nn.Sigmoid: lambda y: y * (1 - y),
}


def _activation_backward(module: nn.Module, g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``g`` times the derivative of ``module`` at its output ``y`` (ReLU: one fused kernel,
    ReLU's own backward, since ``y > 0`` exactly where its input is)."""
    if type(module) is nn.ReLU:
        return torch.ops.aten.threshold_backward(g, y, 0)
    return g * _DERIVATIVES[type(module)](y)


def _logit_gradient(
    h: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, per_example: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of the loss with respect to the logits ``h`` ``(k, B, classes)`` and the
    loss: each client's mean cross-entropy over its real examples (``(k,)``), or with
    ``per_example`` each example's own (``(k, B)``, unscaled gradient, ``mask`` ignored)."""
    k, b = y.shape
    logp = torch.log_softmax(h, dim=2)
    ce = -logp.gather(2, y.unsqueeze(2)).squeeze(2)  # (k, B)
    # d loss_i / d logits = (softmax - onehot) / (real examples of client i)
    g = logp.exp_()
    g.scatter_add_(2, y.unsqueeze(2), torch.full((k, b, 1), -1.0, dtype=g.dtype, device=g.device))
    if per_example:
        return g, ce
    if mask is None:
        return g.mul_(1.0 / b), ce.mean(1)
    count = mask.sum(1, keepdim=True)
    g.mul_((mask / count).unsqueeze(2))
    return g, (ce * mask).sum(1) / count.squeeze(1)


@dataclass(frozen=True)
class _Linear:
    weight: str
    bias: str | None


@dataclass(frozen=True)
class _Activation:
    module: nn.Module


def stacked_params(spec: ParamSpec, flat: torch.Tensor) -> Params:
    """The rows of ``flat`` (float32 ``(c, dim)``, one flat parameter vector per client) as
    ``{name: (c, *shape)}`` views, the layout the cohort's SGD steps work on."""
    c = len(flat)
    return {
        n: flat[:, o : o + math.prod(shape)].reshape(c, *shape)
        for n, shape, o in zip(spec.names, spec.shapes, spec.offsets, strict=True)
    }


class _Dense:
    """A Linear layer's per-client weights as a stacked ``(c, out, in)`` tensor."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.bmm(h, self.weight[: len(h)].transpose(1, 2))

    def below(self, g: torch.Tensor) -> torch.Tensor:
        return torch.bmm(g, self.weight[: len(g)])

    def gradient(self, g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return torch.bmm(g.transpose(1, 2), a)

    def descend(self, g: torch.Tensor, a: torch.Tensor, lr: float) -> None:
        self.weight[: len(g)].baddbmm_(g.transpose(1, 2), a, alpha=-lr)

    def delta(self, start: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sub(self.weight, start, out=out)


class _Deferred:
    """A Linear layer's per-client weights as ``base + G^T A``: ``base`` the shared start
    weights ``(out, in)`` (until the first fold, then a ``(c, out, in)`` stack), ``A``
    ``(c, R, in)`` and ``G`` ``(c, R, out)`` the pending steps' inputs and ``-lr`` times their
    output gradients, of which the first ``rank`` columns are filled."""

    def __init__(self, start: torch.Tensor, clients: int, capacity: int) -> None:
        out, inp = start.shape
        self.base = start
        self.stacked = False
        # Uninitialized: a column is written (zeros for clients that stopped) before it is read.
        self.a = start.new_empty((clients, capacity, inp))
        self.g = start.new_empty((clients, capacity, out))
        self.rank = 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        k, b, _ = h.shape
        if self.stacked:
            out = torch.bmm(h, self.base[:k].transpose(1, 2))
        else:  # one product for the whole cohort's batch
            out = linear(h.reshape(k * b, -1), self.base).view(k, b, -1)
        if self.rank:
            r = self.rank
            out.baddbmm_(torch.bmm(h, self.a[:k, :r].transpose(1, 2)), self.g[:k, :r])
        return out

    #: The scale of ``G``'s rows where they are read (1: they hold ``-lr`` times the output
    #: gradients; :class:`_RoundDeferred` keeps the gradients and ``-lr`` here).
    alpha: float = 1.0

    def below(self, g: torch.Tensor) -> torch.Tensor:
        """The gradient of the layer's input from its output's ``g`` (the current weights)."""
        k, b, _ = g.shape
        if self.stacked:
            out = torch.bmm(g, self.base[:k])
        else:
            out = matmul(g.reshape(k * b, -1), self.base).view(k, b, -1)
        if self.rank:
            r = self.rank
            out.baddbmm_(
                torch.bmm(g, self.g[:k, :r].transpose(1, 2)), self.a[:k, :r], alpha=self.alpha
            )
        return out

    def descend(self, g: torch.Tensor, a: torch.Tensor, lr: float) -> None:
        k, b, _ = g.shape
        if self.rank + b > self.a.shape[1]:
            self._fold()
        cols = slice(self.rank, self.rank + b)
        self.a[:k, cols] = a
        torch.mul(g, -lr, out=self.g[:k, cols])
        if k < len(self.a):  # clients that stopped take no step
            self.a[k:, cols] = 0
            self.g[k:, cols] = 0
        self.rank += b

    def _fold(self) -> None:
        """Add the pending steps into per-client weights and start collecting again."""
        if not self.stacked:
            self.base = self.base.expand(len(self.a), *self.base.shape).clone()
            self.stacked = True
        r = self.rank
        self.base.baddbmm_(self.g[:, :r].transpose(1, 2), self.a[:, :r], alpha=self.alpha)
        self.rank = 0

    def delta(self, start: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Each client's weights minus ``start``, ``(c, out, in)`` (into ``out`` if given)."""
        r = self.rank
        g, a = self.g[:, :r].transpose(1, 2), self.a[:, :r]
        if out is None:
            out = torch.bmm(g, a).mul_(self.alpha)
        else:
            bmm_into(out, g, a, alpha=self.alpha)
        return out.add_(self.base).sub_(start) if self.stacked else out


class _Windowed:
    """The first Linear layer (on the data themselves) under plain SGD, a window of steps at a
    time: its inputs are known before the window starts, so everything that touches them is
    done in a few large products instead of at every step.

    A client's weights at step ``j`` of the window are ``W + alpha G_{<j}^T X_{<j}`` (``X``:
    its window's examples, ``G``: their output gradients, ``alpha``: minus the step size), and
    its bias ``b + alpha 1^T G_{<j}``. The layer's output on step ``j``'s batch ``X_j`` is
    therefore ``P_j + alpha (X_j X_{<j}^T + 1) G_{<j}`` with ``P = X W^T + b`` computed for
    the whole window at once (one matrix product of all clients' examples with the shared
    ``W``) and ``X X^T + 1`` each client's Gram matrix of its window (one batched product). A
    step costs one ``(B x jB) @ (jB x out)`` product per client, whatever the input width; the
    update only writes ``G``'s rows (:meth:`slot`, where the layer above's backward writes
    them). At the end of a window the pending steps are folded into per-client weights ``W_i
    += alpha G_i^T X_i`` (one batched product: the round's weight gradients, in one piece).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, alpha: float) -> None:
        self.weight, self.bias, self.alpha = weight, bias, alpha
        self.stacked = False
        self.x: torch.Tensor | None = None
        self.g: torch.Tensor | None = None
        self.p: torch.Tensor | None = None
        self.gram: torch.Tensor | None = None
        self._known: torch.Tensor | None = None

    def begin(self, x: torch.Tensor, gram: torch.Tensor | None = None) -> None:
        """Start a window on the clients' inputs ``x`` ``(c, R, in)`` (its steps' batches,
        in order); ``gram``: their Gram matrices ``X X^T`` ``(c, R, R)`` when known (from
        :class:`ClientGrams`), else worked out here when first needed."""
        c, r, inp = x.shape
        w, b = self.weight, self.bias
        if self.stacked:
            p = torch.bmm(x, w.transpose(1, 2))
            if b is not None:
                p.add_(b.unsqueeze(1))
        else:  # one product of the whole cohort's window with the shared weights
            flat = x.reshape(c * r, inp)
            p = linear(flat, w, b).view(c, r, -1)
        self.x, self.p, self.gram = x, p, None
        self._known = gram
        # Uninitialized: every step writes its rows (zeros for the clients that stopped).
        self.g = x.new_empty((c, r, p.shape[2]))

    def _gram(self, b: int) -> torch.Tensor:
        """The window's Gram matrices where a step reads them: rows past the first batch,
        columns before the last (``X_{>=1} X_{<last}^T + 1``), one batched product."""
        if self.gram is None:
            assert self.x is not None
            r = self.x.shape[1]
            if self._known is not None:
                gram = self._known[:, b:, : r - b]  # this window's own tensor: written below
            else:
                gram = torch.bmm(self.x[:, b:], self.x[:, : r - b].transpose(1, 2))
            if self.bias is not None:
                gram.add_(1.0)  # the bias: a constant input 1
            self.gram = gram
        return self.gram

    def forward(self, j: int, k: int, b: int) -> torch.Tensor:
        """The layer's output on step ``j``'s batches (``b`` rows) of the first ``k``
        clients, ``(k, b, out)`` (step 0: a view of the window's products; not to be
        written)."""
        lo = j * b
        assert self.p is not None and self.g is not None
        now = self.p[:k, lo : lo + b]
        if j == 0:
            return now
        gram = self._gram(b)[:k, lo - b : lo, :lo]
        return torch.baddbmm(now, gram, self.g[:k, :lo], alpha=self.alpha)

    def slot(self, j: int, k: int, b: int) -> torch.Tensor:
        """Where step ``j``'s output gradients of the first ``k`` clients go, ``(k, b, out)``
        (the others' rows are zeroed: they take no step)."""
        assert self.g is not None
        rows = self.g[:, j * b : (j + 1) * b]
        if k < len(rows):
            rows[k:].zero_()
        return rows[:k]

    def fold(self) -> None:
        """Add the window's steps into per-client weights (before the next window)."""
        assert self.g is not None and self.x is not None
        c = len(self.g)
        if not self.stacked:
            self.weight = self.weight.expand(c, *self.weight.shape).clone()
            if self.bias is not None:
                self.bias = self.bias.expand(c, -1).clone()
            self.stacked = True
        self.weight.baddbmm_(self.g.transpose(1, 2), self.x, alpha=self.alpha)
        if self.bias is not None:
            self.bias.add_(self.g.sum(1), alpha=self.alpha)
        self.x = self.g = self.p = self.gram = self._known = None


class _RoundDeferred(_Deferred):
    """A hidden Linear layer's per-client weights during :meth:`CohortSGD.run`, as
    :class:`_Deferred` keeps them (``W + alpha G^T A``, ``b + alpha 1^T G``) but with the
    step's inputs and output gradients written straight into the factors' buffers by the
    layers around it (:meth:`input_slot`, :meth:`grad_slot`), the bias carried by the same
    factors (a constant input 1), and ``alpha`` (minus the step size, over the batch when no
    example is padded) applied where the factors are read: a step costs three products each
    way and nothing else."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        clients: int,
        capacity: int,
        alpha: float,
    ) -> None:
        super().__init__(weight, clients, capacity)
        self.start_weight, self.start_bias = weight, bias
        self.bias = bias
        self.alpha = alpha
        self._ones = weight.new_ones((1, 1, 1))

    def descend(self, g: torch.Tensor, a: torch.Tensor, lr: float) -> None:
        raise TypeError(
            "_RoundDeferred takes its steps through input_slot, grad_slot and commit (its "
            "factors hold the gradients, -lr is alpha), not descend"
        )

    def prepare(self, b: int) -> None:
        """Make room for a step of ``b`` rows (folding the pending steps if it is full)."""
        if self.rank + b > self.a.shape[1]:
            self._fold()

    def input_slot(self, k: int, b: int) -> torch.Tensor:
        return self.a[:k, self.rank : self.rank + b]

    def grad_slot(self, k: int, b: int) -> torch.Tensor:
        return self.g[:k, self.rank : self.rank + b]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        k, b, _ = h.shape
        if self.stacked:
            base = self.base[:k].transpose(1, 2)
            out = (
                torch.bmm(h, base)
                if self.bias is None
                else torch.baddbmm(self.bias[:k].unsqueeze(1), h, base)
            )
        else:  # one product for the whole cohort's batch
            flat = h.reshape(k * b, -1)
            out = (
                flat @ self.base.t()
                if self.bias is None
                else torch.addmm(self.bias, flat, self.base.t())
            )
            out = out.view(k, b, -1)
        if self.rank:
            r = self.rank
            a = self.a[:k, :r].transpose(1, 2)
            inner = (
                torch.bmm(h, a)
                if self.bias is None
                else torch.baddbmm(self._ones.expand(k, b, r), h, a)
            )
            out.baddbmm_(inner, self.g[:k, :r], alpha=self.alpha)
        return out

    def commit(self, k: int, b: int) -> None:
        """The step's inputs and output gradients of the first ``k`` clients are in their
        slots: take the step (the other clients' rows zeroed: they take no step)."""
        if k < len(self.a):
            self.a[k:, self.rank : self.rank + b].zero_()
            self.g[k:, self.rank : self.rank + b].zero_()
        self.rank += b

    def _fold(self) -> None:
        """:meth:`_Deferred._fold`, with the bias (the buffers are written over by the next
        steps)."""
        if self.bias is not None:
            if not self.stacked:
                self.bias = self.bias.expand(len(self.a), -1).clone()
            self.bias.add_(self.g[:, : self.rank].sum(1), alpha=self.alpha)
        super()._fold()


class _RoundDense:
    """A Linear layer too narrow to defer (the logits), per-client weights updated at every
    step of :meth:`CohortSGD.run` (bias fused into the products)."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, clients: int, alpha: float
    ) -> None:
        self.start_weight, self.start_bias = weight, bias
        self.weight = weight.expand(clients, *weight.shape).clone()
        self.bias = None if bias is None else bias.expand(clients, -1).clone()
        self.alpha = alpha
        self._ones = weight.new_ones((1, 1, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        k = len(h)
        w = self.weight[:k].transpose(1, 2)
        if self.bias is None:
            return torch.bmm(h, w)
        return torch.baddbmm(self.bias[:k].unsqueeze(1), h, w)

    def below(self, g: torch.Tensor) -> torch.Tensor:
        return torch.bmm(g, self.weight[: len(g)])

    def descend(self, g: torch.Tensor, a: torch.Tensor) -> None:
        k, b, _ = g.shape
        self.weight[:k].baddbmm_(g.transpose(1, 2), a, alpha=self.alpha)
        if self.bias is not None:
            self.bias[:k].unsqueeze(1).baddbmm_(self._ones.expand(k, 1, b), g, alpha=self.alpha)


def _activate(module: nn.Module, h: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``module(h)``, written into ``out`` when given."""
    if out is None:
        return module(h)
    if type(module) is nn.ReLU:
        return torch.clamp_min(h, 0, out=out)
    return out.copy_(module(h))


def _activation_backward_into(
    module: nn.Module | None, g: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None
) -> torch.Tensor:
    """:func:`_activation_backward` (``g`` itself without an activation), written into
    ``out`` when given."""
    if module is None:
        return g if out is None else out.copy_(g)
    if out is None:
        return _activation_backward(module, g, y)
    if type(module) is nn.ReLU:
        return torch.ops.aten.threshold_backward.grad_input(g, y, 0, grad_input=out)
    return torch.mul(g, _DERIVATIVES[type(module)](y), out=out)


class ClientGrams:
    """Each client's Gram matrix ``X X^T`` of its (flattened) examples, worked out once per
    run: :class:`_Windowed` reads a window's ``X_{>=1} X_{<last}^T`` at every step, and a
    client's examples stay the same from round to round (only their order changes), so a
    round gathers those entries from the cached matrices (one ``take``) instead of one
    batched product over the input width. The matrices live in one ``(clients, n, n)``
    table (``n`` the largest client), made only when it fits in ``budget`` bytes; past it
    every window is worked out from the examples, as without this cache.

    Args:
        x: the train inputs ``(n, *input_shape)``.
        parts: each client's example indices into ``x``.
    """

    def __init__(self, x: torch.Tensor, parts: Sequence[np.ndarray], budget: int = 64 << 20):
        self._x, self._parts = x, parts
        self._n = max((len(p) for p in parts), default=0)
        fits = len(parts) * self._n**2 * x.element_size() <= budget
        self._table = x.new_zeros((len(parts), self._n, self._n)) if fits else None
        self._filled = np.zeros(len(parts), dtype=bool)

    def window(self, clients: Sequence[int], positions: torch.Tensor) -> torch.Tensor | None:
        """The Gram matrices ``(c, R, R)`` of the examples at ``positions`` ``(c, R)`` (each
        row: positions in that client's example list), or None past the budget."""
        table = self._table
        if table is None:
            return None
        ids = np.asarray(clients, dtype=np.int64)
        self._fill(np.unique(ids[~self._filled[ids]]))
        n = self._n
        pos = positions.to(table.device)
        where = torch.as_tensor(ids, device=table.device).mul_(n * n).view(-1, 1, 1)
        where = where + pos.unsqueeze(2) * n + pos.unsqueeze(1)
        return table.take(where)

    def _fill(self, missing: np.ndarray) -> None:
        """Work out the Gram matrices of the clients ``missing``, those of one size in one
        batched product (a product per client cost W1's first rounds 1-4 ms)."""
        table = self._table
        assert table is not None
        sizes = np.array([len(self._parts[c]) for c in missing.tolist()], dtype=np.int64)
        for m in np.unique(sizes).tolist():
            group = missing[sizes == m]
            if m == 0:
                continue
            rows = np.concatenate([np.asarray(self._parts[c], dtype=np.int64) for c in group])
            index = torch.as_tensor(rows, device=self._x.device)
            x = self._x.index_select(0, index).reshape(len(group), m, -1)
            where = torch.as_tensor(group, device=table.device)
            table[where, :m, :m] = torch.bmm(x, x.transpose(1, 2))
        self._filled[missing] = True


class BatchedMLP:
    """Forward and backward passes of a ``Flatten -> (Linear -> activation)* -> Linear`` model
    for ``k`` clients at once, each with its own parameters stacked along a leading axis.

    Build it with :meth:`of`, which returns None for any other model.
    """

    def __init__(self, layers: list[_Linear | _Activation]) -> None:
        self._layers = layers
        #: The activation after each Linear layer but the last (None where one Linear feeds
        #: the next directly).
        self.activations: list[nn.Module | None] = []
        for layer in layers[:-1]:
            if isinstance(layer, _Linear):
                self.activations.append(None)
            else:
                self.activations[-1] = layer.module

    @classmethod
    def of(cls, model: nn.Module) -> BatchedMLP | None:
        """The kernel for ``model``, or None unless it is an ``nn.Sequential`` of an optional
        leading ``Flatten`` (the default one), ``Linear`` layers and ReLU/Tanh/Sigmoid between
        them, ending with a ``Linear`` layer (the logits)."""
        if type(model) is not nn.Sequential:
            return None
        layers: list[_Linear | _Activation] = []
        for i, (name, m) in enumerate(model.named_children()):
            if type(m) is nn.Flatten and i == 0 and (m.start_dim, m.end_dim) == (1, -1):
                continue
            if type(m) is nn.Linear:
                layers.append(_Linear(f"{name}.weight", None if m.bias is None else f"{name}.bias"))
            elif type(m) in _DERIVATIVES and layers and isinstance(layers[-1], _Linear):
                layers.append(_Activation(m))
            else:
                return None
        if not layers or not isinstance(layers[-1], _Linear):
            return None
        return cls(layers)

    @property
    def linear_layers(self) -> list[_Linear]:
        return [layer for layer in self._layers if isinstance(layer, _Linear)]

    def gradients(
        self, params: Params, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[Params, torch.Tensor]:
        """Each client's gradient of its mean cross-entropy, and that loss.

        Args:
            params: each ``(k, *shape)``, the first ``k`` clients' parameters.
            x: ``(k, B, *input_shape)``; y: ``(k, B)`` labels.
            mask: ``(k, B)``, 1 for real examples, 0 for padding; None when none is padded.
        Returns:
            ``(grads, loss)``: grads with the shapes of ``params``; loss float32 ``(k,)``.
        """
        grads: Params = {}
        weights = {layer.weight: _Dense(params[layer.weight]) for layer in self.linear_layers}
        biases = {layer.bias: params[layer.bias] for layer in self.linear_layers if layer.bias}

        def take(layer: _Linear, g: torch.Tensor, a: torch.Tensor) -> None:
            grads[layer.weight] = weights[layer.weight].gradient(g, a)
            if layer.bias is not None:
                grads[layer.bias] = g.sum(1)

        loss = self._pass(weights, biases, x, y, mask, take)
        return grads, loss

    def _pass(
        self,
        weights: dict[str, _Dense | _Deferred],
        biases: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None,
        take: Callable[[_Linear, torch.Tensor, torch.Tensor], None],
        *,
        per_example: bool = False,
    ) -> torch.Tensor:
        """Forward, loss and backward for the first ``k = len(y)`` clients; hands each Linear
        layer's output gradient ``g`` and input ``a`` to ``take`` (after the gradient for the
        layer below was computed from its weights as they were); returns the losses.

        ``per_example``: differentiate each example's own cross-entropy (``g`` then holds
        every example's gradient, unscaled, ``mask`` is ignored) and return the ``(k, B)``
        per-example losses, instead of each client's mean over its real examples."""
        k, b = y.shape
        h = x.reshape(k, b, -1)
        inputs: list[torch.Tensor] = []  # the input of each layer
        with torch.no_grad():
            for layer in self._layers:
                inputs.append(h)
                if isinstance(layer, _Linear):
                    h = weights[layer.weight].forward(h)
                    if layer.bias is not None:
                        h.add_(biases[layer.bias][:k].unsqueeze(1))
                else:
                    h = layer.module(h)
            g, loss = _logit_gradient(h, y, mask, per_example)
            for i in range(len(self._layers) - 1, -1, -1):
                layer = self._layers[i]
                if isinstance(layer, _Activation):
                    g = _activation_backward(layer.module, g, inputs[i + 1])
                    continue
                below = weights[layer.weight].below(g) if i > 0 else None
                take(layer, g, inputs[i])
                if below is not None:
                    g = below
        return loss

    def clipped_gradient_sums(
        self,
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        factor_of: Callable[[torch.Tensor], torch.Tensor],
    ) -> tuple[Params, torch.Tensor, torch.Tensor]:
        """DP-SGD's sums of clipped per-example gradients (Abadi et al. 2016), without forming
        any per-example gradient.

        For a Linear layer the gradient of example ``j`` is the outer product ``g_j a_j^T`` of
        its output gradient and its input, so its squared norm is ``|g_j|^2 |a_j|^2`` (plus
        ``|g_j|^2`` for the bias) and the sum of the clipped gradients is one product,
        ``(c * G)^T A`` (the "ghost norm" of Goodfellow 2015 and Li et al. 2022).

        Args:
            params: each ``(k, *shape)``; x ``(k, L, *input_shape)``; y ``(k, L)``.
            factor_of: each example's clipping factor ``c_j`` from the ``(k, L)`` norms of
                the whole per-example gradients (all layers), 0 for padding.
        Returns:
            ``(sums, losses, norms)``: the clipped sums with the shapes of ``params``, each
            example's loss and gradient norm, ``(k, L)``.
        """
        weights = {layer.weight: _Dense(params[layer.weight]) for layer in self.linear_layers}
        biases = {layer.bias: params[layer.bias] for layer in self.linear_layers if layer.bias}
        taken: list[tuple[_Linear, torch.Tensor, torch.Tensor]] = []
        losses = self._pass(
            weights, biases, x, y, None, lambda *t: taken.append(t), per_example=True
        )
        with torch.no_grad():
            squared = torch.zeros_like(losses)
            for layer, g, a in taken:
                g2 = g.square().sum(2)
                squared += g2 * a.square().sum(2)
                if layer.bias is not None:
                    squared += g2
            norms = squared.sqrt()
            factor = factor_of(norms)
            sums: Params = {}
            for layer, g, a in taken:
                scaled = g * factor.unsqueeze(2)
                sums[layer.weight] = torch.bmm(scaled.transpose(1, 2), a)
                if layer.bias is not None:
                    sums[layer.bias] = scaled.sum(1)
        return sums, losses, norms


class CohortSGD:
    """Plain SGD (no momentum, weight decay or proximal term) for a cohort of clients that
    start a round from the same weights, with deferred low-rank weight updates (see the
    module's docstring).

    Train a round with :meth:`run` (the first layer a window of steps at a time, see
    :class:`_Windowed`), or step by step with :meth:`step` (each layer deferred or dense);
    not both on one instance.

    Args:
        mlp: the kernel of the run's model.
        start: the round's global parameters, unstacked (``shape``, not ``(c, *shape)``).
        clients: ``c``, the cohort's size.
        batch: the largest mini-batch (the rank of one step's update).
        rows: the most rows of pending updates the round can collect (its steps times
            ``batch``), which bounds the deferred factors' buffers; None: no bound.
    """

    def __init__(
        self,
        mlp: BatchedMLP,
        start: Params,
        clients: int,
        batch: int,
        rows: int | None = None,
    ) -> None:
        self._mlp, self._start, self._clients, self._batch = mlp, start, clients, batch
        self._rows = rows
        self._weights: dict[str, _Dense | _Deferred] = {}
        self._biases: Params = {}
        self._first = mlp.linear_layers[0]
        self._windowed: _Windowed | None = None
        self._round: list[_RoundDeferred | _RoundDense] = []  # layers 2.. under run()

    def _capacity(self, weight: torch.Tensor) -> int:
        """Rows of pending updates a layer collects before folding them (a multiple of the
        batch, up to half the layer's narrower side: past it a step costs more than the
        dense one)."""
        capacity = (min(weight.shape) // 2 // self._batch) * self._batch
        if self._rows is not None:
            capacity = min(capacity, -(-self._rows // self._batch) * self._batch)
        return capacity

    def _layer(self, w: torch.Tensor) -> _Dense | _Deferred:
        capacity = self._capacity(w)
        c = self._clients
        return _Deferred(w, c, capacity) if capacity else _Dense(w.expand(c, *w.shape).clone())

    def step(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, lr: float
    ) -> torch.Tensor:
        """One SGD step of the first ``k = len(y)`` clients (the rest have stopped); returns
        their mean losses ``(k,)``. Arguments as :meth:`BatchedMLP.gradients`."""
        if self._windowed is not None:
            raise RuntimeError("CohortSGD.step after CohortSGD.run on the same cohort")
        if not self._weights:
            for layer in self._mlp.linear_layers:
                self._weights[layer.weight] = self._layer(self._start[layer.weight])
                if layer.bias is not None:
                    b = self._start[layer.bias]
                    self._biases[layer.bias] = b.expand(self._clients, -1).clone()

        def take(layer: _Linear, g: torch.Tensor, a: torch.Tensor) -> None:
            self._weights[layer.weight].descend(g, a, lr)
            if layer.bias is not None:
                self._biases[layer.bias][: len(g)].sub_(g.sum(1), alpha=lr)

        return self._mlp._pass(self._weights, self._biases, x, y, mask, take)

    def run(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        index: torch.Tensor,
        mask: torch.Tensor | None,
        active: list[int],
        lr: float,
        grams: Callable[[int, int], torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """The round's SGD steps: at step ``t`` the first ``active[t]`` clients train on the
        examples ``index[t, i]`` of ``(x, y)``.

        Each step writes every layer's input and output gradient straight where the next
        product reads them (the deferred factors' buffers), folds ``-lr`` (and the
        ``1 / B`` of an unpadded batch's mean) into the products' scale instead of scaling
        gradients, and keeps each example's log-likelihood for one loss reduction at the
        end: what is left per step is the products themselves and an activation each way.

        Args:
            x, y: the train set (``(n, *input_shape)``, ``(n,)``).
            index: int64 ``(T, c, B)``, each step's batch of each client (rows of ``x``).
            mask: ``(T, c, B)``, 1 for real examples, 0 for padding; None when none is padded.
            active: ``T`` non-increasing counts.
            grams: ``grams(t0, t1)``, the Gram matrices ``(c, R, R)`` of each client's
                examples of steps ``t0 .. t1-1`` in order (:meth:`ClientGrams.window`), or
                None where unknown (then worked out from the examples).
        Returns:
            float32 ``(T, c)``: each client's mean loss at each step (0 once it stopped).
        """
        if self._weights:
            raise RuntimeError("CohortSGD.run after CohortSGD.step on the same cohort")
        t_max, c, b = index.shape
        index = index.to(x.device)
        labels = y[index]
        if mask is None:  # each client's mean over b examples: 1/b goes into the step size
            scale, alpha = None, -lr / b
        else:
            mask = mask.to(x.device)
            count = mask.sum(2, keepdim=True).clamp_min_(1.0)
            scale, alpha = (mask / count).unsqueeze(3), -lr
        first, *rest = self._mlp.linear_layers
        w = self._start[first.weight]
        self._windowed = windowed = _Windowed(
            w, None if first.bias is None else self._start[first.bias], alpha
        )
        for layer in rest:
            weight = self._start[layer.weight]
            bias = None if layer.bias is None else self._start[layer.bias]
            capacity = self._capacity(weight)
            self._round.append(
                _RoundDeferred(weight, bias, c, capacity, alpha)
                if capacity
                else _RoundDense(weight, bias, c, alpha)
            )
        classes = self._start[self._mlp.linear_layers[-1].weight].shape[0]
        onehot = x.new_zeros((t_max, c, b, classes)).scatter_(3, labels.unsqueeze(3), 1.0)
        likelihood = x.new_zeros((t_max, c, b, 1))  # each example's log p(label)
        window = max(1, self._capacity(w) // b)  # steps
        for t0 in range(0, t_max, window):
            t1 = min(t_max, t0 + window)
            rows = index[t0:t1].transpose(0, 1).reshape(-1)  # client by client, step by step
            known = None if grams is None else grams(t0, t1)
            windowed.begin(x.index_select(0, rows).view(c, (t1 - t0) * b, -1), known)
            for t in range(t0, t1):
                k = active[t]
                self._run_step(
                    t - t0,
                    k,
                    b,
                    labels[t, :k].unsqueeze(2),
                    onehot[t, :k],
                    None if scale is None else scale[t, :k],
                    likelihood[t, :k],
                )
            if t1 < t_max:
                windowed.fold()
        per_example = likelihood.squeeze(3)
        if scale is None:
            return per_example.mean(2).neg_()
        return (per_example * scale.squeeze(3)).sum(2).neg_()

    def _run_step(
        self,
        j: int,
        k: int,
        b: int,
        labels: torch.Tensor,
        onehot: torch.Tensor,
        scale: torch.Tensor | None,
        likelihood: torch.Tensor,
    ) -> None:
        """Step ``j`` of the window for the first ``k`` clients: forward, the logits'
        gradient ``(softmax - onehot) * scale`` and backward, each layer's factors written
        in place (``labels`` ``(k, b, 1)``; ``likelihood`` receives each example's log
        p(label))."""
        mlp, first, layers = self._mlp, self._windowed, self._round
        assert first is not None
        acts = mlp.activations  # the activation after each Linear layer (None: none)
        with torch.no_grad():
            for layer in layers:
                if isinstance(layer, _RoundDeferred):
                    layer.prepare(b)
            h = first.forward(j, k, b)
            inputs = []  # the input of each layer past the first
            for i, layer in enumerate(layers):
                slot = layer.input_slot(k, b) if isinstance(layer, _RoundDeferred) else None
                act = acts[i]
                if act is None:
                    h = h if slot is None else slot.copy_(h)
                else:
                    h = _activate(act, h, slot)
                inputs.append(h)
                h = layer.forward(h)
            logp = torch.log_softmax(h, dim=2)
            torch.gather(logp, 2, labels, out=likelihood)
            g = logp.exp_().sub_(onehot)
            if scale is not None:
                g.mul_(scale)
            top = layers[-1] if layers else first
            if isinstance(top, _RoundDeferred):
                g = top.grad_slot(k, b).copy_(g)
            elif isinstance(top, _Windowed):
                g = top.slot(j, k, b).copy_(g)
            for i in range(len(layers) - 1, -1, -1):
                layer = layers[i]
                below = layer.below(g)
                if isinstance(layer, _RoundDeferred):
                    layer.commit(k, b)
                else:
                    layer.descend(g, inputs[i])
                under = layers[i - 1] if i else first
                if isinstance(under, _RoundDeferred):
                    out = under.grad_slot(k, b)
                elif isinstance(under, _Windowed):
                    out = under.slot(j, k, b)
                else:
                    out = None
                g = _activation_backward_into(acts[i], below, inputs[i], out)

    def factored(self, names: list[str]) -> FactoredDeltas:
        """Each client's update after :meth:`run`, flattened in ``names``' order, in factored
        form (:class:`~privfl.engine.factored.FactoredDeltas`: the rows :meth:`deltas`
        writes, which the server's weighted mean does not need)."""
        if self._windowed is None:
            raise RuntimeError("CohortSGD.factored is for a cohort trained by CohortSGD.run")
        offsets, blocks, offset = {}, [], 0
        for n in names:
            size = self._start[n].numel()
            offsets[n] = offset
            blocks.append((offset, size))
            offset += size
        terms: list[LowRank | Dense] = []

        def add(
            layer: _Linear,
            g: torch.Tensor | None,
            a: torch.Tensor | None,
            alpha: float,
            weight: torch.Tensor | None,
            bias: torch.Tensor | None,
        ) -> None:
            """A layer's terms: its pending steps' factors, then its per-client weights
            (``weight``, ``bias``) minus the start, when it has them."""
            b = None if layer.bias is None else offsets[layer.bias]
            if g is not None and a is not None:
                shape = tuple(self._start[layer.weight].shape)
                terms.append(LowRank(offsets[layer.weight], shape, g, a, alpha, b))  # type: ignore[arg-type]
            if weight is not None:
                terms.append(Dense(offsets[layer.weight], weight, self._start[layer.weight]))
            if bias is not None and b is not None:
                terms.append(Dense(b, bias, self._start[layer.bias]))  # type: ignore[index]

        first, *rest = self._mlp.linear_layers
        w = self._windowed
        stacked = w.stacked
        add(first, w.g, w.x, w.alpha, w.weight if stacked else None, w.bias if stacked else None)
        for layer, state in zip(rest, self._round, strict=True):
            if isinstance(state, _RoundDense):
                add(layer, None, None, state.alpha, state.weight, state.bias)
            else:
                r = state.rank
                held = state.stacked
                add(
                    layer,
                    state.g[:, :r],
                    state.a[:, :r],
                    state.alpha,
                    state.base if held else None,
                    state.bias if held else None,
                )
        return FactoredDeltas(self._clients, offset, terms, blocks)

    def deltas(self, names: list[str], out: torch.Tensor | None = None) -> torch.Tensor:
        """Each client's update (final minus start parameters), flattened in ``names``'
        order: ``(c, dim)``, each layer's block written in place into ``out`` (a new tensor
        if None; rows may be strided, each row's values contiguous)."""
        c = self._clients
        sizes = [self._start[n].numel() for n in names]
        flat = cohort_rows(c, sum(sizes), self._start[names[0]]) if out is None else out
        if self._windowed is not None:
            return self.factored(names).rows(flat)
        views: Params = {}
        offset = 0
        for n, size in zip(names, sizes, strict=True):
            views[n] = flat[:, offset : offset + size].view(c, *self._start[n].shape)
            offset += size
        for n in names:
            if n in self._weights:
                self._weights[n].delta(self._start[n], views[n])
            elif n in self._biases:
                torch.sub(self._biases[n], self._start[n], out=views[n])
            else:  # no step was taken
                views[n].zero_()
        return flat


__all__ = ["BatchedMLP", "ClientGrams", "CohortSGD", "cohort_rows"]
