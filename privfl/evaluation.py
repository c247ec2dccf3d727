"""Evaluation of the global model: on the central test set, and on each client's held-out data
(federated evaluation with fairness figures)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from privfl.fairness.metrics import fairness_figures

if TYPE_CHECKING:
    from privfl.data.text import Vocabulary


@torch.no_grad()
def per_example(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example cross-entropy loss and 0/1 correctness, float64 ``(n,)`` each (on the CPU;
    the batches go to the model's device)."""
    model.eval()
    losses, correct = [], []
    first = next(model.parameters(), None)  # a parameter-free model runs where x is
    device = x.device if first is None else first.device
    # Images into a CNN go channels-last: PyTorch's CPU max-pool is ~10x faster so (and
    # oneDNN's convolutions no faster NCHW); the model's weights and numbers are unchanged
    # up to float rounding (the W2 CNN's test loss moved 5e-7, its predictions not at all).
    layout = (
        torch.channels_last
        if x.dim() == 4
        and x.is_floating_point()
        and any(isinstance(m, nn.Conv2d) for m in model.modules())
        else torch.contiguous_format
    )
    for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
        xb, yb = xb.to(device).contiguous(memory_format=layout), yb.to(device)
        logits = model(xb)
        losses.append(F.cross_entropy(logits, yb, reduction="none").double().cpu())
        correct.append((logits.argmax(1) == yb).double().cpu())
    model.train()
    if not losses:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    return torch.cat(losses), torch.cat(correct)


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``(x, y)``."""
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty set")
    losses, correct = per_example(model, x, y, batch_size)
    return float(losses.mean()), float(correct.mean())


def evaluate_text(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    excluded: Sequence[int] = (),
    batch_size: int = 1024,
) -> dict[str, float]:
    """Next-token figures of ``model`` on the windows ``(x, y)``.

    Returns:
        ``test_loss``: mean cross-entropy over every target; ``test_perplexity``:
        ``exp(test_loss)``, the per-token perplexity of a language model; ``test_accuracy``:
        top-1 accuracy over the targets not in ``excluded``. For words the excluded ids are
        pad, oov, bos and eos (:meth:`privfl.data.text.Vocabulary.excluded_targets`): Stack
        Overflow's published next-word accuracy (Reddi et al. 2021, "Adaptive Federated
        Optimization", ICLR; their code, google-research/federated, reports it as
        ``accuracy_no_oov_or_eos``: pad, out-of-vocabulary and end-of-sentence targets masked,
        bos never a target); for characters nothing is excluded (LEAF Shakespeare).

    >>> m = nn.Linear(2, 3, bias=False)
    >>> _ = m.weight.data.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]); y = torch.tensor([0, 0, 2])
    >>> r = evaluate_text(m, x, y, excluded=[2])
    >>> r["test_accuracy"], round(r["test_perplexity"], 4) == round(math.exp(r["test_loss"]), 4)
    (0.5, True)
    """
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty set")
    losses, correct = per_example(model, x, y, batch_size)
    keep = ~torch.isin(y, torch.as_tensor(list(excluded), dtype=y.dtype))
    if not bool(keep.any()):
        raise ValueError("every target is an excluded token (pad, oov, bos or eos)")
    loss = float(losses.mean())
    return {
        "test_loss": loss,
        "test_accuracy": float(correct[keep].mean()),
        "test_perplexity": math.exp(min(loss, 700.0)),  # exp overflows past ~709
    }


def evaluate_test(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    vocab: Vocabulary | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """A run's test-set figures of ``model``: ``test_loss`` and ``test_accuracy``, and for a
    language model (``vocab`` given) ``test_perplexity`` with the accuracy over the targets
    that :meth:`~privfl.data.text.Vocabulary.excluded_targets` keeps (:func:`evaluate_text`).

    >>> m = nn.Linear(2, 2, bias=False)
    >>> _ = m.weight.data.copy_(torch.eye(2))
    >>> sorted(evaluate_test(m, torch.eye(2), torch.tensor([0, 0])))
    ['test_accuracy', 'test_loss']
    """
    if vocab is not None:
        return evaluate_text(model, x, y, vocab.excluded_targets(), batch_size)
    loss, accuracy = evaluate(model, x, y, batch_size)
    return {"test_loss": loss, "test_accuracy": accuracy}


def per_class_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 1024
) -> np.ndarray:
    """Accuracy of ``model`` on the examples of each class: float64 ``(num_classes,)``, NaN
    for a class without examples in ``y`` (the per-class figure of Bagdasaryan et al. 2019).

    >>> from torch import nn
    >>> m = nn.Linear(2, 2, bias=False)
    >>> _ = m.weight.data.copy_(torch.eye(2))  # predicts the larger coordinate
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]); y = torch.tensor([0, 0, 1])
    >>> per_class_accuracy(m, x, y, 3).round(2).tolist()
    [0.5, 0.0, nan]
    """
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got {int(y.min())}..{int(y.max())}"
        )
    _, correct = per_example(model, x, y, batch_size)
    labels = y.numpy()
    totals = np.bincount(labels, minlength=num_classes).astype(np.float64)
    hits = np.bincount(labels, weights=correct.numpy(), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)


def federated_evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    client_indices: list[np.ndarray],
    batch_size: int = 1024,
) -> dict[str, float]:
    """Accuracy of ``model`` on each client's held-out examples, and their spread.

    All clients' examples go through the model in one pass; per-client accuracy is then a
    segmented mean. Clients without held-out examples are skipped.

    Returns:
        ``fed_accuracy_mean``, ``fed_accuracy_std``, ``fed_accuracy_worst10`` (mean accuracy
        of the worst ceil(10%) of clients, the fairness figure of Li et al., ICLR 2020),
        ``fed_accuracy_best10``, ``fed_accuracy_jain`` (Jain's index, Jain et al. 1984),
        ``fed_clients`` (clients evaluated) and ``fed_client_accuracy`` (each evaluated
        client's accuracy, in client order: the distribution ``plots/client_accuracy.png``
        draws); see :func:`privfl.fairness.fairness_figures`.
    """
    sizes = np.array([len(i) for i in client_indices])
    keep = sizes > 0
    if not keep.any():
        raise ValueError("no client has held-out examples")
    idx = torch.from_numpy(np.concatenate([i for i in client_indices if len(i)]))
    _, correct = per_example(model, x[idx], y[idx], batch_size)
    starts = np.concatenate([[0], np.cumsum(sizes[keep])[:-1]])
    acc = np.add.reduceat(correct.numpy(), starts) / sizes[keep]
    return {
        **fairness_figures(acc),
        "fed_clients": int(len(acc)),
        "fed_client_accuracy": acc.tolist(),
    }


__all__ = [
    "evaluate",
    "evaluate_test",
    "evaluate_text",
    "federated_evaluate",
    "per_class_accuracy",
    "per_example",
]
