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

The arithmetic is SGD's (the same sums, in another order, so equal to float rounding): the
gradient of each client's mean cross-entropy over its real (unmasked) examples.
``tests/engine/test_batched_mlp.py`` checks both against ``torch.func`` and plain SGD, and the
vectorized engine against the sequential one. Written by hand because no library offers a
client-batched SGD step for deferred low-rank updates; everything else stays torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from privfl.update import ParamSpec

Params = dict[str, torch.Tensor]

#: Activations supported, each with its derivative written in terms of its output ``y``.
_DERIVATIVES = {
    nn.ReLU: lambda y: (y > 0).to(y.dtype),
    nn.Tanh: lambda y: 1 - y * y,
    nn.Sigmoid: lambda y: y * (1 - y),
}


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

    def delta(self, start: torch.Tensor) -> torch.Tensor:
        return self.weight - start


class _Deferred:
    """A Linear layer's per-client weights as ``base + G^T A``: ``base`` the shared start
    weights ``(out, in)`` (until the first fold, then a ``(c, out, in)`` stack), ``A``
    ``(c, R, in)`` and ``G`` ``(c, R, out)`` the pending steps' inputs and ``-lr`` times their
    output gradients, of which the first ``rank`` columns are filled."""

    def __init__(self, start: torch.Tensor, clients: int, capacity: int) -> None:
        out, inp = start.shape
        self.base = start
        self.stacked = False
        self.a = torch.zeros((clients, capacity, inp), dtype=start.dtype)
        self.g = torch.zeros((clients, capacity, out), dtype=start.dtype)
        self.rank = 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        k, b, _ = h.shape
        if self.stacked:
            out = torch.bmm(h, self.base[:k].transpose(1, 2))
        else:  # one product for the whole cohort's batch
            out = (h.reshape(k * b, -1) @ self.base.t()).view(k, b, -1)
        if self.rank:
            r = self.rank
            out.baddbmm_(torch.bmm(h, self.a[:k, :r].transpose(1, 2)), self.g[:k, :r])
        return out

    def below(self, g: torch.Tensor) -> torch.Tensor:
        k, b, _ = g.shape
        if self.stacked:
            out = torch.bmm(g, self.base[:k])
        else:
            out = (g.reshape(k * b, -1) @ self.base).view(k, b, -1)
        if self.rank:
            r = self.rank
            out.baddbmm_(torch.bmm(g, self.g[:k, :r].transpose(1, 2)), self.a[:k, :r])
        return out

    def descend(self, g: torch.Tensor, a: torch.Tensor, lr: float) -> None:
        k, b, _ = g.shape
        if self.rank + b > self.a.shape[1]:
            self._fold()
        cols = slice(self.rank, self.rank + b)
        self.a[:k, cols] = a
        torch.mul(g, -lr, out=self.g[:k, cols])
        self.g[k:, cols] = 0  # clients that stopped take no step
        self.rank += b

    def _fold(self) -> None:
        """Add the pending steps into per-client weights and start collecting again."""
        if not self.stacked:
            self.base = self.base.expand(len(self.a), *self.base.shape).clone()
            self.stacked = True
        r = self.rank
        self.base.baddbmm_(self.g[:, :r].transpose(1, 2), self.a[:, :r])
        self.rank = 0

    def delta(self, start: torch.Tensor) -> torch.Tensor:
        r = self.rank
        pending = torch.bmm(self.g[:, :r].transpose(1, 2), self.a[:, :r])
        return pending.add_(self.base - start) if self.stacked else pending


class BatchedMLP:
    """Forward and backward passes of a ``Flatten -> (Linear -> activation)* -> Linear`` model
    for ``k`` clients at once, each with its own parameters stacked along a leading axis.

    Build it with :meth:`of`, which returns None for any other model.
    """

    def __init__(self, layers: list[_Linear | _Activation]) -> None:
        self._layers = layers

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
            logp = torch.log_softmax(h, dim=2)
            ce = -logp.gather(2, y.unsqueeze(2)).squeeze(2)  # (k, B)
            # d loss_i / d logits = (softmax - onehot) / (real examples of client i)
            g = logp.exp_()
            g.scatter_add_(2, y.unsqueeze(2), torch.full((k, b, 1), -1.0, dtype=g.dtype))
            if per_example:
                loss = ce
            elif mask is None:
                loss = ce.mean(1)
                g.mul_(1.0 / b)
            else:
                count = mask.sum(1, keepdim=True)
                loss = (ce * mask).sum(1) / count.squeeze(1)
                g.mul_((mask / count).unsqueeze(2))
            for i in range(len(self._layers) - 1, -1, -1):
                layer = self._layers[i]
                if isinstance(layer, _Activation):
                    g = g * _DERIVATIVES[type(layer.module)](inputs[i + 1])
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

    Args:
        mlp: the kernel of the run's model.
        start: the round's global parameters, unstacked (``shape``, not ``(c, *shape)``).
        clients: ``c``, the cohort's size.
        batch: the largest mini-batch (the rank of one step's update).
    """

    def __init__(self, mlp: BatchedMLP, start: Params, clients: int, batch: int) -> None:
        self._mlp, self._start = mlp, start
        self._weights: dict[str, _Dense | _Deferred] = {}
        for layer in mlp.linear_layers:
            w = start[layer.weight]
            capacity = (min(w.shape) // 2 // batch) * batch
            self._weights[layer.weight] = (
                _Deferred(w, clients, capacity)
                if capacity
                else _Dense(w.expand(clients, *w.shape).clone())
            )
        self._biases = {
            layer.bias: start[layer.bias].expand(clients, -1).clone()
            for layer in mlp.linear_layers
            if layer.bias is not None
        }

    def step(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, lr: float
    ) -> torch.Tensor:
        """One SGD step of the first ``k = len(y)`` clients (the rest have stopped); returns
        their mean losses ``(k,)``. Arguments as :meth:`BatchedMLP.gradients`."""

        def take(layer: _Linear, g: torch.Tensor, a: torch.Tensor) -> None:
            self._weights[layer.weight].descend(g, a, lr)
            if layer.bias is not None:
                self._biases[layer.bias][: len(g)].sub_(g.sum(1), alpha=lr)

        return self._mlp._pass(self._weights, self._biases, x, y, mask, take)

    def deltas(self, names: list[str]) -> torch.Tensor:
        """Each client's update (final minus start parameters), flattened in ``names``'
        order: ``(c, dim)``."""
        parts = []
        for n in names:
            if n in self._weights:
                d = self._weights[n].delta(self._start[n])
            else:
                d = self._biases[n] - self._start[n]
            parts.append(d.reshape(len(d), -1))
        return torch.cat(parts, dim=1)


__all__ = ["BatchedMLP", "CohortSGD"]
