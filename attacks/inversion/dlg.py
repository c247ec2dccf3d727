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
from collections.abc import Sequence

import torch

from privfl.attacks.inversion.labels import (
    find_final_layer,
    label_counts,
    labels_from_counts,
    mean_prediction,
)
from privfl.attacks.inversion.lbfgs import RowLBFGS
from privfl.attacks.inversion.simulate import (
    can_batch,
    local_update,
    local_updates,
    single_gradient_target,
)
from privfl.attacks.inversion.target import (
    Callback,
    InversionTarget,
    Reconstruction,
    check_batch,
)
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


def dlg_batched(
    targets: Sequence[InversionTarget],
    *,
    generators: Sequence[torch.Generator],
    iterations: int = DLG_ITERATIONS,
    lr: float = DLG_LR,
    restarts: int = 1,
    labels: Sequence[torch.Tensor] | None = None,
    callbacks: Sequence[Callback | None] | None = None,
) -> list[Reconstruction]:
    """:func:`dlg` of several targets at once: the result of calling it on each
    ``(targets[i], generators[i])``, target by target, up to float rounding.

    The dummies of every (target, restart) are the rows of one stack, their objectives are
    evaluated together (:func:`privfl.attacks.inversion.simulate.local_updates`) and each row
    is moved by its own L-BFGS (:class:`privfl.attacks.inversion.lbfgs.RowLBFGS`: one
    ``torch.optim.LBFGS`` over the stack would couple the rows), stopping on its own. The
    draws come from each target's generator in the loop's order.

    Args:
        targets: updates of one model from the same global weights and local training, with
            the same number of reconstructed examples.
        generators: one per target.
        labels: one int64 ``(D,)`` per target (iDLG), or None (DLG's soft labels).
        callbacks: one per target (or None).

    Returns:
        One :class:`Reconstruction` per target, in order.
    """
    _check_settings(iterations, lr, restarts)
    n = len(targets)
    _check_lists(n, generators, labels, callbacks)
    if n == 0:
        return []
    check_batch(targets)
    first = targets[0]
    threat = first.threat
    d = first.num_reconstructed
    if labels is not None and any(lab.shape != (d,) for lab in labels):
        raise PrivflError(f"labels must have shape ({d},) per target")
    if can_batch(first.model) is not None:
        return [
            dlg(
                t,
                generator=g,
                iterations=iterations,
                lr=lr,
                restarts=restarts,
                labels=None if labels is None else labels[i],
                callback=None if callbacks is None else callbacks[i],
            )
            for i, (t, g) in enumerate(zip(targets, generators, strict=True))
        ]
    device = next(iter(first.params.values())).device
    rows = n * restarts
    shape, classes = threat.input_shape, threat.num_classes
    nx = d * math.prod(shape)
    starts = []
    for g in generators:  # per target, restart after restart: x, then the soft labels
        for _ in range(restarts):
            x0 = torch.randn((d, *shape), generator=g).flatten()
            soft0 = torch.randn((d, classes), generator=g).flatten() if labels is None else None
            starts.append(x0 if soft0 is None else torch.cat([x0, soft0]))
    flat = torch.stack(starts).to(device).requires_grad_(True)
    per_target = [
        single_gradient_target(t.update, list(t.params.values()), t.threat.training, t.num_examples)
        for t in targets
    ]
    wanted = [
        torch.stack([w[j] for w in per_target for _ in range(restarts)])
        for j in range(len(first.update))
    ]
    fixed = (
        None
        if labels is None
        else torch.stack([lab for lab in labels for _ in range(restarts)]).to(device)
    )
    best_loss = torch.full((rows,), math.inf, dtype=torch.float64, device=device)
    best = flat.detach().clone()

    def closure(evaluated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective and its gradient of the rows ``evaluated`` (the others: 0): rows
        whose L-BFGS has stopped are not computed."""
        idx = torch.nonzero(evaluated).squeeze(1)
        k = len(idx)
        if k == 0:
            return torch.zeros(rows, dtype=torch.float64, device=device), torch.zeros_like(flat)
        part = flat[idx]
        x = part[:, :nx].view(k, d, *shape)
        y = fixed[idx] if fixed is not None else torch.softmax(part[:, nx:].view(k, d, classes), -1)
        got = local_updates(
            first.model, first.params, x, y, threat.training, steps=1, batch_size=None
        )
        loss = sum(((g - w[idx]) ** 2).flatten(1).sum(1) for g, w in zip(got, wanted, strict=True))
        (grad,) = torch.autograd.grad(loss.sum(), flat)
        value = torch.zeros(rows, dtype=torch.float64, device=device)
        value[idx] = loss.detach().double()
        better = evaluated & (value < best_loss)  # NaN compares False: never kept
        best_loss.copy_(torch.where(better, value, best_loss))
        best.copy_(torch.where(better[:, None], flat.detach(), best))
        return value, grad

    opt = RowLBFGS(flat, lr=lr)  # moves the leaf in place, without recording it
    running = torch.ones(rows, dtype=torch.bool, device=device)
    done = torch.zeros(rows, dtype=torch.int64, device=device)
    for _ in range(iterations):
        if not bool(running.any()):
            break
        before = flat.detach().clone()
        opt.step(closure, running)
        done += running.long()
        _advance(callbacks, running, restarts)
        moved = (flat.detach() != before).any(dim=1)
        finite = torch.isfinite(flat.detach()).all(dim=1)
        running = running & moved & finite
    out = []
    for i in range(n):
        runs = range(i * restarts, (i + 1) * restarts)
        for r in runs:  # the per-target loop reports a stopped restart's remaining iterations
            if callbacks is not None and callbacks[i] is not None and done[r] < iterations:
                callbacks[i](iterations - int(done[r]))
        k = min(runs, key=lambda r: float(best_loss[r]))
        x = best[k, :nx].view(d, *shape).clone()
        if labels is None:
            y_out = best[k, nx:].view(d, classes).argmax(dim=-1)
        else:
            y_out = labels[i]
        out.append(Reconstruction(x, y_out.to(torch.int64), float(best_loss[k]), int(done[k])))
    return out


def idlg_batched(
    targets: Sequence[InversionTarget],
    *,
    generators: Sequence[torch.Generator],
    iterations: int = DLG_ITERATIONS,
    lr: float = DLG_LR,
    restarts: int = 1,
    callbacks: Sequence[Callback | None] | None = None,
) -> list[Reconstruction]:
    """:func:`idlg` of several targets at once (labels per target, then :func:`dlg_batched`):
    each target's result is what :func:`idlg` gives it alone."""
    _check_lists(len(targets), generators, None, callbacks)
    labels = [recover_labels(t, g) for t, g in zip(targets, generators, strict=True)]
    return dlg_batched(
        targets,
        generators=generators,
        iterations=iterations,
        lr=lr,
        restarts=restarts,
        labels=labels,
        callbacks=callbacks,
    )


def _advance(
    callbacks: Sequence[Callback | None] | None, running: torch.Tensor, restarts: int
) -> None:
    """Tell each target's callback how many of its restarts took a step."""
    if callbacks is None:
        return
    per_target = running.view(-1, restarts).sum(dim=1).tolist()
    for cb, k in zip(callbacks, per_target, strict=True):
        if cb is not None and k:
            cb(int(k))


def _check_lists(
    n: int,
    generators: Sequence[torch.Generator],
    labels: Sequence[torch.Tensor] | None,
    callbacks: Sequence[Callback | None] | None,
) -> None:
    for name, seq in (("generators", generators), ("labels", labels), ("callbacks", callbacks)):
        if seq is not None and len(seq) != n:
            raise PrivflError(
                f"the batched attack needs one of {name} per target: {n} targets, {len(seq)} {name}"
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
    # Drawn on the CPU generator (the batched path's order), optimised where the weights are.
    device = next(iter(target.params.values())).device
    x = torch.randn((d, *threat.input_shape), generator=generator).to(device).requires_grad_(True)
    variables = [x]
    soft = None
    if labels is None:
        soft = torch.randn((d, threat.num_classes), generator=generator)
        soft = soft.to(device).requires_grad_(True)
        variables.append(soft)
    else:
        labels = labels.to(device)  # recovered on the CPU (recover_labels)
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


__all__ = [
    "DLG_ITERATIONS",
    "DLG_LR",
    "dlg",
    "dlg_batched",
    "idlg",
    "idlg_batched",
    "recover_labels",
]
