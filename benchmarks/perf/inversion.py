"""Gradient inversion: seconds per reconstructed image, privfl against hand-written loops.

For DLG (L-BFGS, 300 iterations) and Inverting Gradients (Adam on signed gradients, 1,000
iterations), at their default iteration counts, on one 8x8 digit and one 32x32 sample patch
with DLG's LeNet (sigmoid, U(-0.5, 0.5), one local step on one example). The baseline is the
same attack written directly in PyTorch, as the papers' code does (``net(x)``,
``autograd.grad(create_graph=True)``), from the same initial draws and with the same stopping
rule, so both sides do the same arithmetic; privfl and the baseline alternate, and the
figures are medians over the repeats. One torch thread, as the observer runs attacks.

    .venv/bin/python benchmarks/perf/inversion.py [--repeats 3] [--scale 1.0]

``--scale 0.1`` runs a tenth of the iterations (a quick check). Printed per case: privfl's
seconds per image, the baseline's, and their ratio (privfl / baseline). privfl's overhead is
the replay's generality (``torch.func.functional_call``, one code path for one or several
steps) and DLG's keeping of its best point: about 1 ms an evaluation.

A second table times what the observer does with a round's targets: iDLG and Inverting
Gradients on ``--targets`` clients (one image each, as the inversion suite) attacked one after
another (the per-target loop) and in one batched optimization (``idlg_batched``,
``inverting_gradients_batched``), for one local step and, for IG, five (FedAvg's multi-step
replay), alternating, medians; printed: the seconds of each and their ratio (batched /
looped: below 1 is faster). Both sides reconstruct the same images up to float rounding
(tests/attacks/inversion/test_inversion_batched.py).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from privfl.attacks.inversion import (
    InversionTarget,
    InversionThreat,
    dlg,
    idlg,
    idlg_batched,
    inverting_gradients,
    inverting_gradients_batched,
)
from privfl.attacks.inversion.inverting_gradients import IG_LR, IG_TV, total_variation
from privfl.client import LocalTraining, SGDTrainer
from privfl.data.bundled import load_digits
from privfl.data.patches import load_patches
from privfl.models import DLG_LENET, create_model
from privfl.seeding import numpy_rng
from privfl.update import ParamSpec

LENET = DLG_LENET
ONE_STEP = LocalTraining(lr=0.1, steps=1, batch_size=1)


def _case(
    name: str, example: int = 0, training: LocalTraining = ONE_STEP
) -> tuple[torch.nn.Module, InversionTarget, torch.Tensor]:
    """The LeNet, the target privfl's client produces on training example ``example``, and
    its label (what the hand-written attacks are given)."""
    model, targets, ys = _cases(name, [example], training)
    return model, targets[0], ys[0]


def _cases(
    name: str, examples: list[int], training: LocalTraining
) -> tuple[torch.nn.Module, list[InversionTarget], list[torch.Tensor]]:
    """The LeNet and one target per example (one client each), from the same global model."""
    load = load_digits if name == "digits" else load_patches
    bundle = load(test_fraction=0.2, rng=numpy_rng(0, "data"))
    model = create_model(LENET, bundle.input_shape, bundle.num_classes, 0)
    spec = ParamSpec.of(model)
    w0 = spec.flatten(model)
    threat = InversionThreat(training, bundle.input_shape, bundle.num_classes)
    targets, ys = [], []
    for i in examples:
        x, y = bundle.train.x[i : i + 1], bundle.train.y[i : i + 1]
        delta, _ = SGDTrainer(training).train(
            model, spec, w0, x, y, torch.Generator(), client_id=i, round=1
        )
        spec.load_into(model, w0)
        targets.append(InversionTarget.from_delta(model, spec, w0, delta, 1, threat))
        ys.append(y)
    return model, targets, ys


def _hand_dlg(model: torch.nn.Module, target: InversionTarget, iterations: int, seed: int) -> None:
    """Zhu et al.'s DLG loop, with the same initial draws and stopping rule as privfl's."""
    g = torch.Generator().manual_seed(seed)
    shape, classes = target.threat.input_shape, target.threat.num_classes
    x = torch.randn((1, *shape), generator=g).requires_grad_(True)
    soft = torch.randn((1, classes), generator=g).requires_grad_(True)
    wanted = target.update
    params = list(model.parameters())
    opt = torch.optim.LBFGS([x, soft], lr=1.0)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), torch.softmax(soft, dim=-1))
        grads = torch.autograd.grad(loss, params, create_graph=True)
        diff = sum(((a - b) ** 2).sum() for a, b in zip(grads, wanted, strict=True))
        diff.backward()
        return diff

    for _ in range(iterations):
        before = (x.detach().clone(), soft.detach().clone())
        opt.step(closure)
        if torch.equal(before[0], x) and torch.equal(before[1], soft):
            break


def _hand_ig(
    model: torch.nn.Module, target: InversionTarget, y: torch.Tensor, iterations: int, seed: int
) -> None:
    """Geiping et al.'s loop (inversefed): cosine + TV, Adam on signed gradients, step decay,
    box projection."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((1, *target.threat.input_shape), generator=g).clamp_(0, 1)
    x.requires_grad_(True)
    params = list(model.parameters())
    wanted = target.update
    opt = torch.optim.Adam([x], lr=IG_LR)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)], gamma=0.1
    )
    for _ in range(iterations):
        opt.zero_grad()
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
        dot = sum((a * b).sum() for a, b in zip(grads, wanted, strict=True))
        na = sum(a.pow(2).sum() for a in grads)
        nb = sum(b.pow(2).sum() for b in wanted)
        loss = 1 - dot / (na.sqrt() * nb.sqrt()) + IG_TV * total_variation(x)
        loss.backward()
        x.grad.sign_()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(0, 1)


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the iterations")
    parser.add_argument("--targets", type=int, default=8, help="targets in the batched table")
    parser.add_argument(
        "--only-batched", action="store_true", help="only the batched-vs-looped table"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    its = {"dlg": max(1, round(300 * args.scale)), "ig": max(1, round(1000 * args.scale))}
    print(f"torch {torch.__version__}, 1 thread, {args.repeats} repeats (medians), CPU")
    if args.only_batched:
        _batched_table(args.targets, its, args.repeats)
        return
    print(f"{'case':<16}{'iterations':>11}{'privfl s/img':>14}{'baseline s/img':>16}{'ratio':>8}")
    for data in ("digits", "patches"):
        model, target, y = _case(data)
        for method in ("dlg", "ig"):
            n = its[method]
            ours, base = [], []
            for r in range(args.repeats):
                gen = torch.Generator().manual_seed(r)
                if method == "dlg":
                    run_ours = partial(dlg, target, generator=gen, iterations=n)
                    run_base = partial(_hand_dlg, model, target, n, r)
                else:
                    run_ours = partial(
                        inverting_gradients, target, generator=gen, iterations=n, labels=y
                    )
                    run_base = partial(_hand_ig, model, target, y, n, r)
                pair = [(ours, run_ours), (base, run_base)]
                for out, fn in pair if r % 2 == 0 else pair[::-1]:
                    out.append(_timed(fn))
            a, b = statistics.median(ours), statistics.median(base)
            print(f"{method + ' ' + data:<16}{n:>11}{a:>14.2f}{b:>16.2f}{a / b:>8.2f}")
    _batched_table(args.targets, its, args.repeats)


def _looped(
    method: str, targets: list[InversionTarget], ys: list[torch.Tensor], its: int, r: int
) -> None:
    """Each target alone, as the observer attacks them without batching."""
    for i, (t, y) in enumerate(zip(targets, ys, strict=True)):
        g = torch.Generator().manual_seed(1000 * r + i)
        if method == "ig":
            inverting_gradients(t, generator=g, iterations=its, labels=y)
        else:
            idlg(t, generator=g, iterations=its)


def _batched(
    method: str, targets: list[InversionTarget], ys: list[torch.Tensor], its: int, r: int
) -> None:
    """All targets in one optimization, from the same generators."""
    gens = [torch.Generator().manual_seed(1000 * r + i) for i in range(len(targets))]
    if method == "ig":
        inverting_gradients_batched(targets, generators=gens, iterations=its, labels=ys)
    else:
        idlg_batched(targets, generators=gens, iterations=its)


def _batched_table(n_targets: int, its: dict[str, int], repeats: int) -> None:
    """iDLG and Inverting Gradients on a round's targets: the per-target loop against one
    batched optimization (the observer's two paths), same generators."""
    print(f"\n{n_targets} targets of one round: per-target loop vs one batched optimization")
    print(f"{'case':<26}{'iterations':>11}{'looped s':>10}{'batched s':>11}{'ratio':>8}")
    five = LocalTraining(lr=0.1, steps=5, batch_size=1)
    for method, data, training, label in (
        ("idlg", "digits", ONE_STEP, "1 step"),
        ("idlg", "patches", ONE_STEP, "1 step"),
        ("ig", "digits", ONE_STEP, "1 step"),
        ("ig", "digits", five, "5 steps"),
        ("ig", "patches", ONE_STEP, "1 step"),
    ):
        _, targets, ys = _cases(data, list(range(n_targets)), training)
        n = its["dlg" if method == "idlg" else "ig"]
        loop_s, batch_s = [], []
        for r in range(repeats):
            pair = [(loop_s, _looped), (batch_s, _batched)]
            for out, fn in pair if r % 2 == 0 else pair[::-1]:
                out.append(_timed(partial(fn, method, targets, ys, n, r)))
        a, b = statistics.median(loop_s), statistics.median(batch_s)
        name = f"{method} {data} {label}"
        print(f"{name:<26}{n:>11}{a:>10.2f}{b:>11.2f}{b / a:>8.2f}")


if __name__ == "__main__":
    main()
