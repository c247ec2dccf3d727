"""Labels from the last layer's gradient: iDLG's single label, and label counts for batches.

For a final linear layer ``z = W h + b`` under the mean cross-entropy over ``B`` examples,

    dL/db_c   = (1/B) sum_k (p_kc - [y_k = c])
    dL/dW_c,: = (1/B) sum_k (p_kc - [y_k = c]) h_k

with ``p_k = softmax(z_k)``. For one example only the true class has ``p - 1 < 0``, so the
label is the one negative entry of ``dL/db`` (or, without a bias, the row of ``dL/dW`` with
the negative sum when ``h >= 0``, as after a sigmoid or ReLU): iDLG (Zhao et al. 2020, §3).
For a batch, ``count_c = B * (mean_k p_kc - dL/db_c)``: the bias-gradient identity used for
batch label restoration by Geng et al. 2021 ("Towards General Deep Leakage in Federated
Learning", arXiv 2110.09074, §3.2), with the mean prediction estimated from the global
model on random inputs, as those authors and RLU (Chen & Vikalo 2024, arXiv 2405.00955)
estimate the model's "erroneous confidence" without the clients' data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from privfl.errors import PrivflError


@dataclass(frozen=True)
class FinalLayer:
    """Where the model's last linear layer sits among its parameters.

    Attributes:
        weight: index of its weight ``(num_classes, features)`` in parameter order.
        bias: index of its bias ``(num_classes,)``, or None when the layer has none.
    """

    weight: int
    bias: int | None


def find_final_layer(model: nn.Module, num_classes: int) -> FinalLayer:
    """Locate the final ``nn.Linear`` with ``num_classes`` outputs.

    Raises:
        PrivflError: when the model's last parameterized module is not such a layer
            (label recovery from the last layer's gradient is then impossible).
    """
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    last = None
    for module in model.modules():
        if any(True for _ in module.parameters(recurse=False)):
            last = module
    if not isinstance(last, nn.Linear) or last.out_features != num_classes:
        raise PrivflError(
            "label recovery needs a final linear layer with num_classes="
            f"{num_classes} outputs; the model's last layer is {last!r}. Use method = 'dlg' "
            "(labels optimized with the data) or a model ending in nn.Linear"
        )
    ids = {id(p): i for i, (_, p) in enumerate(model.named_parameters()) if p.requires_grad}
    weight = ids.get(id(last.weight))
    bias = None if last.bias is None else ids.get(id(last.bias))
    if weight is None or (last.bias is not None and bias is None):
        raise PrivflError("the final linear layer's parameters are frozen; nothing to read")
    if weight != len(names) - (2 if bias is not None else 1):
        raise PrivflError("the final linear layer's parameters are not the model's last ones")
    return FinalLayer(weight, bias)


def idlg_label(grads: list[torch.Tensor], layer: FinalLayer) -> int:
    """iDLG's label of a single example from its gradient (Zhao et al. 2020, §3).

    With a bias: the class whose bias gradient ``p_c - 1`` is negative (the smallest entry).
    Without: the weight row with the smallest sum, which is right when the features before
    the last layer are non-negative (sigmoid, ReLU), as in iDLG.

    Args:
        grads: the gradient per parameter (model order).
    """
    if layer.bias is not None:
        return int(torch.argmin(grads[layer.bias]))
    return int(torch.argmin(grads[layer.weight].sum(dim=1)))


def mean_prediction(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    input_shape: tuple[int, ...],
    generator: torch.Generator,
    *,
    samples: int = 64,
    input_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """The global model's mean softmax output on ``samples`` uniform random inputs, float64
    ``(num_classes,)``: the attacker's stand-in for the mean prediction on the client's data."""
    lo, hi = input_range
    x = lo + (hi - lo) * torch.rand((samples, *input_shape), generator=generator)
    x = x.to(next(iter(params.values()), x).device)  # drawn on the CPU stream, run by the weights
    with torch.no_grad():
        logits = functional_call(model, params, (x,))
    return torch.softmax(logits.double(), dim=1).mean(dim=0)


def label_counts(
    grads: list[torch.Tensor], layer: FinalLayer, num_examples: int, mean_p: torch.Tensor
) -> np.ndarray:
    """How many of the ``num_examples`` examples carry each label (Geng et al. 2021, §3.2).

    ``count_c = B * (mean_p_c - dL/db_c)``, clipped at 0 and rounded to integers summing to
    ``B`` by the largest-remainder method. For ``B = 1`` this is iDLG's rule.

    Args:
        grads: the gradient of the mean loss over the batch, per parameter.
        mean_p: the mean softmax prediction, ``(num_classes,)``.

    Returns:
        int64 ``(num_classes,)``, summing to ``num_examples``.

    Raises:
        PrivflError: the final layer has no bias (the identity needs it).
    """
    if num_examples < 1:
        raise PrivflError(f"label counts need num_examples >= 1, got {num_examples}")
    if num_examples == 1:
        out = np.zeros(len(mean_p), dtype=np.int64)
        out[idlg_label(grads, layer)] = 1
        return out
    if layer.bias is None:
        raise PrivflError(
            "label-count recovery for batches > 1 reads the final layer's bias gradient; "
            "this model's final linear layer has no bias"
        )
    # On the CPU whatever the attack's device: the rounding below ends in numpy.
    est = num_examples * (mean_p.cpu() - grads[layer.bias].double().cpu()).clamp(min=0.0)
    if float(est.sum()) <= 0:
        est = torch.ones_like(est)
    est = est * (num_examples / est.sum())
    base = torch.floor(est)
    short = num_examples - int(base.sum())
    order = torch.argsort(est - base, descending=True, stable=True)
    base[order[:short]] += 1
    return base.to(torch.int64).numpy()


def labels_from_counts(counts: np.ndarray) -> torch.Tensor:
    """The sorted label vector with ``counts[c]`` copies of each class ``c``, int64."""
    return torch.from_numpy(np.repeat(np.arange(len(counts)), counts).astype(np.int64))


__all__ = [
    "FinalLayer",
    "find_final_layer",
    "idlg_label",
    "label_counts",
    "labels_from_counts",
    "mean_prediction",
]
