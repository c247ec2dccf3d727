"""A cohort's local SGD step for multilayer perceptrons, written out as batched matrix products.

The vectorized engine's general path (``vmap(functional_call)`` and one reverse pass) works for
any model torch.func can trace. For the multilayer perceptron (``Flatten``, then ``Linear``
layers with ReLU, tanh or sigmoid between them, the shape of :class:`privfl.models.MLPConfig`)
this module does the same arithmetic by hand, for two reasons measured on W1 (MLP
784-200-200-10, 20 clients, batch 10, one thread; ``benchmarks/perf/throughput.py``):

- with batches of ten examples the step is bound by memory traffic over the cohort's stacked
  weights (20 clients x 784 x 200 floats = 12.5 MB for the first layer alone, well past the
  L2 cache), not by arithmetic. Autograd writes each client's gradient, then the SGD step
  reads it back and reads and writes the weights: five passes over the stack. Here plain SGD
  is fused into the weight-gradient product, ``W.baddbmm_(g^T, a, alpha=-lr)``: one read and
  one write (and one read in the forward pass);
- autograd's and functorch's per-operation bookkeeping is paid once per layer, not per client.

Both give the gradient of each client's mean cross-entropy over its real (unmasked) examples;
``tests/engine/test_batched_mlp.py`` checks them against ``torch.func`` and the vectorized
engine against the sequential one. Written by hand because no library offers a fused,
client-batched SGD step; everything else stays torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

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

    def step(
        self,
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None,
        *,
        lr: float | None = None,
    ) -> tuple[Params, torch.Tensor]:
        """Each client's gradient of its mean cross-entropy, or (with ``lr``) its SGD step.

        Args:
            params: each ``(k, *shape)``, the first ``k`` clients' parameters. With ``lr``
                they are updated in place, ``w -= lr * grad`` (plain SGD, fused).
            x: ``(k, B, *input_shape)``; y: ``(k, B)`` labels.
            mask: ``(k, B)``, 1 for real examples, 0 for padding; None when none is padded.
            lr: the learning rate of a fused plain-SGD step; None to return the gradients.
        Returns:
            ``(grads, loss)``: the gradients with the shapes of ``params`` (empty when ``lr``
            is given) and each client's mean loss, float32 ``(k,)``.
        """
        k, b = y.shape
        h = x.reshape(k, b, -1)
        inputs: list[torch.Tensor] = []  # the input of each layer
        with torch.no_grad():
            for layer in self._layers:
                inputs.append(h)
                if isinstance(layer, _Linear):
                    w = params[layer.weight]  # (k, out, in)
                    if layer.bias is None:
                        h = torch.bmm(h, w.transpose(1, 2))
                    else:
                        h = torch.baddbmm(params[layer.bias].unsqueeze(1), h, w.transpose(1, 2))
                else:
                    h = layer.module(h)
            logp = torch.log_softmax(h, dim=2)
            ce = -logp.gather(2, y.unsqueeze(2)).squeeze(2)  # (k, B)
            # d loss_i / d logits = (softmax - onehot) / (real examples of client i)
            g = logp.exp_()
            g.scatter_add_(2, y.unsqueeze(2), torch.full((k, b, 1), -1.0, dtype=g.dtype))
            if mask is None:
                loss = ce.mean(1)
                g.mul_(1.0 / b)
            else:
                count = mask.sum(1, keepdim=True)
                loss = (ce * mask).sum(1) / count.squeeze(1)
                g.mul_((mask / count).unsqueeze(2))
            grads: Params = {}
            for i in range(len(self._layers) - 1, -1, -1):
                layer, a = self._layers[i], inputs[i]
                if isinstance(layer, _Activation):
                    g = g * _DERIVATIVES[type(layer.module)](inputs[i + 1])
                    continue
                w = params[layer.weight]
                below = torch.bmm(g, w) if i > 0 else None  # with w before its update
                if lr is None:
                    grads[layer.weight] = torch.bmm(g.transpose(1, 2), a)
                    if layer.bias is not None:
                        grads[layer.bias] = g.sum(1)
                else:
                    w.baddbmm_(g.transpose(1, 2), a, alpha=-lr)
                    if layer.bias is not None:
                        params[layer.bias].sub_(g.sum(1), alpha=lr)
                if below is not None:
                    g = below
        return grads, loss


__all__ = ["BatchedMLP"]
