"""Deep Leakage from Gradients (Zhu et al., NeurIPS 2019) and improved DLG (Zhao et al. 2020).

DLG draws dummy inputs ``x'`` and dummy label logits ``y'`` from N(0, 1) and minimizes the
squared L2 distance between the dummy gradient and the observed one,

    min_{x', y'}  || dL(F(x'; w), softmax(y')) / dw  -  dL(F(x; w), y) / dw ||^2      (DLG eq. 4)

with L-BFGS (learning rate 1; torch's default of up to 20 function evaluations a step, as the
authors' code). iDLG first reads the label from the last layer's gradient (Zhao et al. §3)
and optimizes only ``x'``. An "iteration" here is one L-BFGS step, as in both papers' code
(300 by default); a run stops early once a step no longer moves the dummies (converged).
"""

from __future__ import annotations

import math

import torch

from privfl.attacks.inversion.labels import (
    find_final_layer,
    label_counts,
    labels_from_counts,
    mean_prediction,
)
from privfl.attacks.inversion.simulate import local_update, single_gradient_target
from privfl.attacks.inversion.target import Callback, InversionTarget, Reconstruction
from privfl.errors import PrivflError

#: The papers' settings.
DLG_ITERATIONS = 300
DLG_LR = 1.0


def dlg(
    target: InversionTarget,
    *,
    generator: torch.Generator,
    iterations: int = DLG_ITERATIONS,
    lr: float = DLG_LR,
    restarts: int = 1,
    labels: torch.Tensor | None = None,
    callback: Callback | None = None,
) -> Reconstruction:
    """Invert ``target`` with DLG; with ``labels`` given, iDLG's second stage.

    The observed update is read as one gradient on the examples it touched
    (:func:`privfl.attacks.inversion.simulate.single_gradient_target`): exact for one local
    step, the FedSGD approximation for several.

    Args:
        generator: source of the dummy initializations.
        iterations: L-BFGS steps per restart.
        lr: L-BFGS learning rate.
        restarts: independent initializations; the one with the lowest objective is kept.
        labels: int64 ``(D,)`` fixed labels (iDLG); None optimizes soft labels (DLG).
        callback: told how many iterations were done (progress).

    Returns:
        ``D = target.num_reconstructed`` reconstructed inputs and labels.
    """
    _check_settings(iterations, lr, restarts)
    threat = target.threat
    d = target.num_reconstructed
    if labels is not None and labels.shape != (d,):
        raise PrivflError(f"labels must have shape ({d},), got {tuple(labels.shape)}")
    wanted = single_gradient_target(
        target.update, list(target.params.values()), threat.training, target.num_examples
    )
    runs = [
        _one_run(target, wanted, d, labels, iterations, lr, generator, callback)
        for _ in range(restarts)
    ]
    return min(runs, key=lambda r: r.loss)


def idlg(
    target: InversionTarget,
    *,
    generator: torch.Generator,
    iterations: int = DLG_ITERATIONS,
    lr: float = DLG_LR,
    restarts: int = 1,
    callback: Callback | None = None,
) -> Reconstruction:
    """iDLG (Zhao et al. 2020): labels from the last layer's gradient, then DLG on the data.

    For one example the label is exact (§3, "100% accuracy"); for a batch the label counts
    come from :func:`privfl.attacks.inversion.labels.label_counts`.

    Raises:
        PrivflError: the model has no final linear layer with ``num_classes`` outputs.
    """
    labels = recover_labels(target, generator)
    return dlg(
        target,
        generator=generator,
        iterations=iterations,
        lr=lr,
        restarts=restarts,
        labels=labels,
        callback=callback,
    )


def recover_labels(target: InversionTarget, generator: torch.Generator) -> torch.Tensor:
    """The labels of the ``D`` examples ``target``'s update touched, int64 ``(D,)`` sorted."""
    threat = target.threat
    layer = find_final_layer(target.model, threat.num_classes)
    d = target.num_reconstructed
    grads = single_gradient_target(
        target.update, list(target.params.values()), threat.training, target.num_examples
    )
    mean_p = mean_prediction(
        target.model,
        target.params,
        threat.input_shape,
        generator,
        input_range=threat.input_range,
    )
    return labels_from_counts(label_counts(grads, layer, d, mean_p))


def _one_run(
    target: InversionTarget,
    wanted: list[torch.Tensor],
    d: int,
    labels: torch.Tensor | None,
    iterations: int,
    lr: float,
    generator: torch.Generator,
    callback: Callback | None,
) -> Reconstruction:
    threat = target.threat
    x = torch.randn((d, *threat.input_shape), generator=generator).requires_grad_(True)
    variables = [x]
    soft = None
    if labels is None:
        soft = torch.randn((d, threat.num_classes), generator=generator).requires_grad_(True)
        variables.append(soft)
    opt = torch.optim.LBFGS(variables, lr=lr)
    best = {
        "loss": math.inf,
        "x": x.detach().clone(),
        "y": None if soft is None else soft.detach().clone(),
    }

    def closure() -> torch.Tensor:
        opt.zero_grad()
        y = labels if soft is None else torch.softmax(soft, dim=-1)
        got = local_update(
            target.model, target.params, x, y, threat.training, steps=1, batch_size=None
        )
        loss = sum(((g - w) ** 2).sum() for g, w in zip(got, wanted, strict=True))
        loss.backward()
        value = float(loss.detach())
        if value < best["loss"]:  # NaN compares False: a diverged point is never kept
            best.update(loss=value, x=x.detach().clone())
            best["y"] = None if soft is None else soft.detach().clone()
        return loss

    done = 0
    while done < iterations:
        before = [v.detach().clone() for v in variables]
        opt.step(closure)
        done += 1
        if callback is not None:
            callback(1)
        moved = any(not torch.equal(b, v) for b, v in zip(before, variables, strict=True))
        if not moved or not all(torch.isfinite(v).all() for v in variables):
            break
    if callback is not None and done < iterations:
        callback(iterations - done)
    out_labels = best["y"].argmax(dim=-1) if labels is None else labels
    return Reconstruction(best["x"], out_labels.to(torch.int64), best["loss"], done)


def _check_settings(iterations: int, lr: float, restarts: int) -> None:
    if iterations < 1:
        raise PrivflError(f"iterations must be >= 1, got {iterations}")
    if not lr > 0:
        raise PrivflError(f"lr must be > 0, got {lr}")
    if restarts < 1:
        raise PrivflError(f"restarts must be >= 1, got {restarts}")


__all__ = ["DLG_ITERATIONS", "DLG_LR", "dlg", "idlg", "recover_labels"]
