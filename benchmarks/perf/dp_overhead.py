"""DP-SGD overhead: time per local step of DP-SGD against non-private SGD, MLP and CNN.

One client of 320 digits-shaped examples (1x8x8) trains ``--steps`` local steps at batch 32
(DP-SGD: Poisson lots of expected size 32, clip 1, sigma 1) from the same global model, with:

- ``sgd``: privfl's non-private :class:`SGDTrainer` (the baseline of every ratio);
- ``hooks`` / ``functorch`` / ``ew``: privfl's :class:`DPSGDTrainer` with Opacus'
  per-example gradients from module hooks, torch.func (vmap) or PyTorch's ExpandedWeights;
- ``ghost``: Opacus' fast gradient clipping (Li et al. 2022 ghost clipping; Opacus'
  ``GradSampleModuleFastGradientClipping``), in a plain loop outside privfl's trainer (per-
  example norms without per-example gradients, at the price of a second backward pass).

Every variant runs in one process, alternating, ``--repeats`` times; the figure of a variant
is its median time per step, and each ratio is taken against ``sgd`` measured in the same
repetition, then the median ratio is reported.

    .venv/bin/python benchmarks/perf/dp_overhead.py [--steps 50] [--repeats 7]

Target: DP-SGD <= 2.5x non-private for the MLP.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from privfl.client import LocalTraining, SGDTrainer
from privfl.defenses.dp.dpsgd import DPSGDTrainer
from privfl.models import CNNConfig, MLPConfig, create_model
from privfl.update import ParamSpec

SHAPE, CLASSES, N, BATCH = (1, 8, 8), 10, 320, 32


def _ghost_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """Opacus fast gradient clipping, Poisson lots, clip 1, sigma 1."""
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)  # Opacus' retain_graph notes
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    gsm = GradSampleModuleFastGradientClipping(
        model, batch_first=True, loss_reduction="mean", max_grad_norm=1.0, use_ghost_clipping=True
    )
    opt = DPOptimizerFastGradientClipping(
        torch.optim.SGD(model.parameters(), lr=0.05),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=BATCH,
        loss_reduction="mean",
    )
    crit = DPLossFastGradientClipping(gsm, opt, nn.CrossEntropyLoss(), loss_reduction="mean")
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.nonzero(torch.rand(N, generator=g) < BATCH / N)[:, 0]
        loss = crit(gsm(x[idx]), y[idx])
        loss.backward()
        opt.step()
        opt.zero_grad()
    gsm._close()


def _variants(
    make: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor, steps: int
) -> dict[str, Callable[[], None]]:
    model = make()
    spec = ParamSpec.of(model)
    g0 = spec.flatten(model)
    training = LocalTraining(lr=0.05, steps=steps, batch_size=BATCH)

    def trainer_run(trainer) -> Callable[[], None]:  # type: ignore[no-untyped-def]
        def go() -> None:
            gen = torch.Generator().manual_seed(0)
            trainer.train(model, spec, g0, x, y, gen, client_id=0, round=1)

        return go

    def ghost() -> None:
        m = make()
        _ghost_steps(m, x, y, steps)

    out = {"sgd": trainer_run(SGDTrainer(training))}
    for mode in ("hooks", "functorch", "ew"):
        dp = DPSGDTrainer(training, clip=1.0, noise_multiplier=1.0, grad_sample_mode=mode)
        out[mode] = trainer_run(dp)
    out["ghost"] = ghost
    return out


def measure(name: str, make: Callable[[], nn.Module], steps: int, repeats: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, *SHAPE, generator=gen)
    y = torch.randint(0, CLASSES, (N,), generator=gen)
    variants = _variants(make, x, y, steps)
    for fn in variants.values():  # warm-up (imports, allocator, first-call hooks)
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    ratios: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        rep = {}
        for k, fn in variants.items():
            t = time.perf_counter()
            fn()
            rep[k] = (time.perf_counter() - t) / steps
            times[k].append(rep[k])
        for k in variants:
            ratios[k].append(rep[k] / rep["sgd"])
    params = sum(p.numel() for p in make().parameters())
    print(f"\n{name} ({params} parameters), batch {BATCH}, {steps} steps x {repeats} repeats")
    print(f"{'variant':<10} {'ms/step':>9} {'x sgd':>7}")
    for k in variants:
        ms, ratio = 1e3 * statistics.median(times[k]), statistics.median(ratios[k])
        print(f"{k:<10} {ms:9.3f} {ratio:7.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    models = {
        "MLP [64]": MLPConfig(hidden=[64]),
        "CNN [32, 64] + [128]": CNNConfig(),
    }
    for name, cfg in models.items():
        make = lambda cfg=cfg: create_model(cfg, SHAPE, CLASSES, 0)  # noqa: E731
        measure(name, make, args.steps, args.repeats)


if __name__ == "__main__":
    main()
