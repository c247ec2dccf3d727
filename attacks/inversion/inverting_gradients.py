"""Inverting Gradients (Geiping, Bauermeister, Dröge and Moeller, NeurIPS 2020).

The attack minimizes the cosine distance between the observed update and the update its
candidate data would produce, plus a total-variation prior (§3, eq. 4):

    min_{x in [0,1]^n}  1 - <G(x), G> / (||G(x)|| ||G||)  +  alpha_TV * TV(x)

with Adam on the *sign* of the gradient (§3, "signed gradients"), step decay by 10x at 3/8,
5/8 and 7/8 of the iterations, the box constraint enforced by projection after each step, and
several restarts keeping the lowest objective (the authors' ``inversefed``: ``lr = 0.1``,
``init = randn``, ``boxed``, ``scoring_choice = loss``). ``G(x)`` replays the client's whole
local training (§4, multi-step: "several local steps"), so the attack works on a FedAvg update,
not only on a single gradient. Labels come from the last layer (``recover_labels``); the
paper assumes them known for batches, this attacker is not given them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from privfl.attacks.inversion.dlg import recover_labels
from privfl.attacks.inversion.simulate import (
    can_batch,
    local_update,
    local_updates,
    num_local_steps,
    single_gradient_target,
)
from privfl.attacks.inversion.target import (
    Callback,
    InversionTarget,
    Reconstruction,
    check_batch,
)
from privfl.errors import PrivflError

#: Defaults for small images on a CPU: Geiping et al. run 4,800-24,000 iterations on GPUs.
IG_ITERATIONS = 1000
IG_LR = 0.1
#: Geiping et al.'s TV weight. It depends on the data: measured here (pixels in [0, 1], the
#: mean-based TV above, DLG's LeNet), 1e-4 recovers 8x8 digits from a 5-step update at
#: 34 dB where 1e-2 over-smooths them (11 dB); on 32x32 natural patches 1e-4 leaves noise
#: (SSIM 0.05 after 2,000 iterations) and 1e-2 gives SSIM 0.77-0.99 after 1,000.
IG_TV = 1e-4


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation, the mean absolute difference between horizontal and
    between vertical neighbours (``inversefed``'s ``total_variation``).

    Args:
        x: ``(n, C, H, W)``.

    Returns:
        a scalar.
    """
    dx = (x[:, :, :, :-1] - x[:, :, :, 1:]).abs().mean()
    dy = (x[:, :, :-1, :] - x[:, :, 1:, :]).abs().mean()
    return dx + dy


def cosine_distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """``1 - <a, b> / (||a|| ||b||)`` over all parameters together (``inversefed``'s ``sim``)."""
    dot = sum((x * y).sum() for x, y in zip(a, b, strict=True))
    na = sum(x.pow(2).sum() for x in a)
    nb = sum(y.pow(2).sum() for y in b)
    return 1.0 - dot / (na.sqrt() * nb.sqrt()).clamp_min(1e-12)


def inverting_gradients(
    target: InversionTarget,
    *,
    generator: torch.Generator,
    iterations: int = IG_ITERATIONS,
    lr: float = IG_LR,
    tv: float = IG_TV,
    restarts: int = 1,
    labels: torch.Tensor | None = None,
    callback: Callback | None = None,
    replay: bool = True,
) -> Reconstruction:
    """Invert ``target``'s update by replaying its local training on candidate data.

    Args:
        generator: source of the initializations (and of label recovery's probes).
        iterations: Adam steps per restart.
        lr: Adam's initial learning rate.
        tv: weight of the total-variation prior (images only; 0 turns it off).
        restarts: independent initializations; the lowest final objective is kept.
        labels: int64 ``(D,)``; None recovers them from the update.
        callback: told how many iterations were done (progress).
        replay: True (the paper's multi-step attack) matches the update with the client's
            whole local training replayed on the candidates; False matches it, read as one
            gradient on the ``D`` candidates (:func:`single_gradient_target`, DLG's FedSGD
            reading), with one full-batch gradient of plain SGD: the ablation that shows what
            replaying the local steps is worth.

    Returns:
        ``D = target.num_reconstructed`` reconstructed inputs (in the input range) and labels.
    """
    _check_settings(iterations, lr, tv, restarts)
    target, y = _prepare(target, generator, labels, tv, replay)
    runs = [
        _one_run(target, y, len(y), iterations, lr, tv, generator, callback)
        for _ in range(restarts)
    ]
    return min(runs, key=lambda r: r.loss)


def inverting_gradients_batched(
    targets: Sequence[InversionTarget],
    *,
    generators: Sequence[torch.Generator],
    iterations: int = IG_ITERATIONS,
    lr: float = IG_LR,
    tv: float = IG_TV,
    restarts: int = 1,
    labels: Sequence[torch.Tensor] | None = None,
    callbacks: Sequence[Callback | None] | None = None,
    replay: bool = True,
) -> list[Reconstruction]:
    """:func:`inverting_gradients` of several targets in one optimization: the same
    reconstructions, target by target, as calling it on each ``(targets[i], generators[i])``.

    The dummies of every target and restart are stacked along a leading axis and moved by one
    Adam over the stack. The objective is the sum of the per-row objectives; the rows share
    no variable, so the sum's gradient in each row is that row's own gradient, and Adam, the
    sign, the step decay and the box projection act element by element: each row follows the
    trajectory the per-target loop gives it, up to float rounding (the batched replay,
    :func:`privfl.attacks.inversion.simulate.local_updates`, sums in another order). Each
    target draws from its own generator in the loop's order (label probes, then one start per
    restart), and keeps its restart with the lowest final objective.

    Args:
        targets: updates of one model from the same global weights and local training, each
            with the same number of reconstructed examples (one round's clients with equal
            example counts).
        generators: one per target.
        labels: one int64 ``(D,)`` per target; None recovers each from its update.
        callbacks: one per target (or None), told the iterations done (``restarts`` per
            optimizer step, as the loop runs the restarts one after another).

    Returns:
        One :class:`Reconstruction` per target, in order.

    Raises:
        PrivflError: the targets do not share the model, weights, training and size, or the
            lists differ in length.
    """
    _check_settings(iterations, lr, tv, restarts)
    n = len(targets)
    if len(generators) != n or (labels is not None and len(labels) != n):
        raise PrivflError(
            f"inverting_gradients_batched needs one generator (and labels) per target: "
            f"{n} targets, {len(generators)} generators"
            + ("" if labels is None else f", {len(labels)} label vectors")
        )
    if callbacks is not None and len(callbacks) != n:
        raise PrivflError(f"{n} targets but {len(callbacks)} callbacks")
    if n == 0:
        return []
    prepared = [
        _prepare(t, g, None if labels is None else labels[i], tv, replay)
        for i, (t, g) in enumerate(zip(targets, generators, strict=True))
    ]
    first = prepared[0][0]
    check_batch([t for t, _ in prepared])
    if can_batch(first.model) is not None:
        # the per-target loop on the prepared targets: the same numbers, one at a time
        return [
            min(
                (
                    _one_run(t, y, len(y), iterations, lr, tv, g, _nth(callbacks, i))
                    for _ in range(restarts)
                ),
                key=lambda r: r.loss,
            )
            for i, ((t, y), g) in enumerate(zip(prepared, generators, strict=True))
        ]
    return _batched_run(prepared, generators, iterations, lr, tv, restarts, callbacks)


def _check_settings(iterations: int, lr: float, tv: float, restarts: int) -> None:
    if iterations < 1 or not lr > 0 or restarts < 1 or tv < 0:
        raise PrivflError(
            "inverting_gradients needs iterations >= 1, lr > 0, restarts >= 1 and tv >= 0; "
            f"got iterations={iterations}, lr={lr}, restarts={restarts}, tv={tv}"
        )


def _prepare(
    target: InversionTarget,
    generator: torch.Generator,
    labels: torch.Tensor | None,
    tv: float,
    replay: bool,
) -> tuple[InversionTarget, torch.Tensor]:
    """The target the optimization matches (the one-gradient view without ``replay``) and
    its labels, recovered from the update (drawing label probes from ``generator``) unless
    given."""
    threat = target.threat
    d = target.num_reconstructed
    if tv > 0 and len(threat.input_shape) != 3:
        raise PrivflError(
            f"the total-variation prior needs images (C, H, W), got inputs {threat.input_shape};"
            " set tv = 0"
        )
    y = recover_labels(target, generator) if labels is None else labels
    if y.shape != (d,):
        raise PrivflError(f"labels must have shape ({d},), got {tuple(y.shape)}")
    if not replay:
        target = _one_gradient_view(target)
    return target, y.to(_device(target))


def _device(target: InversionTarget) -> torch.device:
    """Where the attack's tensors live: the device of the global weights."""
    return next(iter(target.params.values())).device


def _nth(callbacks: Sequence[Callback | None] | None, i: int) -> Callback | None:
    return None if callbacks is None else callbacks[i]


def _batched_run(
    prepared: list[tuple[InversionTarget, torch.Tensor]],
    generators: Sequence[torch.Generator],
    iterations: int,
    lr: float,
    tv: float,
    restarts: int,
    callbacks: Sequence[Callback | None] | None,
) -> list[Reconstruction]:
    """One Adam over the stacked dummies of every (target, restart), row ``i * restarts + r``
    for restart ``r`` of target ``i``; each target keeps its best restart."""
    first = prepared[0][0]
    threat = first.threat
    training = threat.training
    lo, hi = threat.input_range
    d = len(prepared[0][1])
    steps = num_local_steps(training, first.num_examples)
    device = _device(first)
    # The starts, drawn on the CPU generators in the loop's order, then moved to the device.
    x = torch.stack(
        [
            torch.randn((d, *threat.input_shape), generator=g)
            for g in generators
            for _ in range(restarts)
        ]
    )
    x = x.clamp_(lo, hi).to(device).requires_grad_(True)
    y = torch.stack([yt for _, yt in prepared for _ in range(restarts)])
    wanted = [
        torch.stack([t.update[j] for t, _ in prepared for _ in range(restarts)])
        for j in range(len(first.update))
    ]
    opt = torch.optim.Adam([x], lr=lr)
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)

    def objective(create_graph: bool) -> torch.Tensor:
        """The per-row objective ``(rows,)``."""
        got = local_updates(
            first.model,
            first.params,
            x if create_graph else x.detach(),
            y,
            training,
            steps=steps,
            batch_size=training.batch_size,
            create_graph=create_graph,
        )
        loss = _cosine_distance_rows(got, wanted)
        return loss + tv * _total_variation_rows(x) if tv > 0 else loss

    for _ in range(iterations):
        opt.zero_grad()
        objective(True).sum().backward()
        x.grad.sign_()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(lo, hi)
        for i in range(len(prepared)):
            cb = _nth(callbacks, i)
            if cb is not None:
                cb(restarts)
    final = objective(False).detach().cpu().tolist()
    out = []
    for i, (_, yt) in enumerate(prepared):
        rows = range(i * restarts, (i + 1) * restarts)
        best = min(rows, key=lambda r: final[r])  # the first of equal losses, as min() above
        out.append(Reconstruction(x[best].detach().clone(), yt, final[best], iterations))
    return out


def _cosine_distance_rows(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """:func:`cosine_distance` row by row of ``(rows, *shape)`` tensors, ``(rows,)``."""
    dot = sum((x * y).flatten(1).sum(1) for x, y in zip(a, b, strict=True))
    na = sum(x.pow(2).flatten(1).sum(1) for x in a)
    nb = sum(y.pow(2).flatten(1).sum(1) for y in b)
    return 1.0 - dot / (na.sqrt() * nb.sqrt()).clamp_min(1e-12)


def _total_variation_rows(x: torch.Tensor) -> torch.Tensor:
    """:func:`total_variation` of each row of ``(rows, n, C, H, W)``, ``(rows,)``."""
    dx = (x[..., :, :-1] - x[..., :, 1:]).abs().flatten(1).mean(1)
    dy = (x[..., :-1, :] - x[..., 1:, :]).abs().flatten(1).mean(1)
    return dx + dy


def _one_gradient_view(target: InversionTarget) -> InversionTarget:
    """``target`` read as one plain-SGD, full-batch gradient on the ``D`` examples its update
    touched: the update becomes :func:`single_gradient_target`'s reading, and the training the
    attack replays one step of batch ``D`` without momentum, weight decay or proximal term
    (that reading has already removed the weight decay)."""
    threat = target.threat
    d = target.num_reconstructed
    wanted = single_gradient_target(
        target.update, list(target.params.values()), threat.training, target.num_examples
    )
    one_step = replace(
        threat.training, steps=1, batch_size=None, momentum=0.0, weight_decay=0.0, prox_mu=0.0
    )
    return replace(target, update=wanted, num_examples=d, threat=replace(threat, training=one_step))


def _one_run(
    target: InversionTarget,
    y: torch.Tensor,
    d: int,
    iterations: int,
    lr: float,
    tv: float,
    generator: torch.Generator,
    callback: Callback | None,
) -> Reconstruction:
    threat = target.threat
    training = threat.training
    lo, hi = threat.input_range
    steps = num_local_steps(training, target.num_examples)
    x = torch.randn((d, *threat.input_shape), generator=generator).clamp_(lo, hi)
    x = x.to(_device(target)).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)

    def objective() -> torch.Tensor:
        got = local_update(
            target.model, target.params, x, y, training, steps=steps, batch_size=training.batch_size
        )
        loss = cosine_distance(got, target.update)
        return loss + tv * total_variation(x) if tv > 0 else loss

    for _ in range(iterations):
        opt.zero_grad()
        loss = objective()
        loss.backward()
        x.grad.sign_()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(lo, hi)
        if callback is not None:
            callback(1)
    final = float(_final_loss(target, x.detach(), y, steps, tv))
    return Reconstruction(x.detach().clone(), y, final, iterations)


def _final_loss(
    target: InversionTarget, x: torch.Tensor, y: torch.Tensor, steps: int, tv: float
) -> torch.Tensor:
    training = target.threat.training
    got = local_update(
        target.model,
        target.params,
        x,
        y,
        training,
        steps=steps,
        batch_size=training.batch_size,
        create_graph=False,
    )
    loss = cosine_distance(got, target.update)
    return loss + tv * total_variation(x) if tv > 0 else loss


__all__ = [
    "IG_ITERATIONS",
    "IG_LR",
    "IG_TV",
    "cosine_distance",
    "inverting_gradients",
    "inverting_gradients_batched",
    "total_variation",
]
