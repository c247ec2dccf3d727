"""W1 and W2 throughput: every privfl engine against a hand-written PyTorch FedAvg loop.

Workload W1: MLP 784-200-200-10 on synthetic 28x28 data, 100 clients x 60 examples, 20
clients a round, 1 local epoch, batch 10, lr 0.05, 5 rounds. The hand-written loop and every
engine do the same arithmetic (same data, same initial weights, same per-client shuffles, SGD,
example-weighted FedAvg, one test evaluation at the end) and are timed round by round,
alternately (the order rotates every round), in one process. Figures: client updates per
second of the median round (set-up excluded) and the median of the per-round time ratios
against the hand-written loop measured in the same round.

Workload W2: the shape of pfl-research's CIFAR-10 speed benchmark (Granqvist et al. 2024):
1000 users x 50 examples of synthetic 32x32x3 data, cohort 50, 1 local epoch, batch 10, local
lr 0.1, a 2-layer CNN (conv 32, conv 64, pool, dense 128), central evaluation every 10 rounds,
20 rounds (``--w2-rounds``); reported as seconds per round (median) for every engine.
The vectorized engine trains it with the batched CNN kernel (``privfl.engine.batched_cnn``).
``--w2-norm group`` puts privfl's default GroupNorm after each conv (batched under plain SGD).

W1 with DP-SGD: W1 under ``[defense.dp] mode = "sample"`` (sigma 1, clip 1): Opacus on the
sequential engine against the vectorized engine's nested-vmap DP-SGD, seconds per round.

    .venv/bin/python benchmarks/perf/throughput.py [--repeats 5] [--w2-rounds 20] [--quick]
        [--json PATH] [--threads N ...] [--dp-rounds 3]

Targets: sequential >= 0.9x the hand-written loop (framework overhead under 10%);
vectorized >= 1.5x the hand-written loop on W1, and >= 60% of the GEMM roofline: W1's
arithmetic (``W1_FLOP_PER_UPDATE`` per client update: forward and backward of the three
weight matrices) per second of the median round, over the rate of 1024^3 float32 GEMMs
measured in the same process with the same threads (``gemm_flops``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import privfl
from privfl.engine import ENGINES, gemm
from privfl.engine.schedule import cohort_schedule
from privfl.federation import Federation
from privfl.plan import local_training_of
from privfl.seeding import torch_generator

# Engines measured here: every in-process engine (Ray is for clusters; see docs/engines.md).
LOCAL_ENGINES = tuple(e for e in ENGINES if e != "ray")

W1 = {
    "name": "w1",
    "seed": 0,
    "data": {
        "name": "synthetic",
        "samples": 7500,
        "shape": [1, 28, 28],
        "classes": 10,
        "test_fraction": 0.2,
        "partition": "iid",
        "clients": 100,
    },
    "model": {"name": "mlp", "hidden": [200, 200]},
    "federation": {
        "rounds": 5,
        "clients_per_round": 20,
        "local_epochs": 1,
        "batch_size": 10,
        "lr": 0.05,
    },
    "evaluation": {"every": 5},
}

W2 = {
    "name": "w2",
    "seed": 0,
    "data": {
        "name": "synthetic",
        "samples": 55000,  # 50,000 train = 1000 users x 50, 5,000 test
        "shape": [3, 32, 32],
        "classes": 10,
        "test_fraction": 1 / 11,
        "partition": "iid",
        "clients": 1000,
    },
    "model": {"name": "cnn", "channels": [32, 64], "hidden": [128], "norm": "none"},
    "federation": {
        "rounds": 20,
        "clients_per_round": 50,
        "local_epochs": 1,
        "batch_size": 10,
        "lr": 0.1,
    },
    "evaluation": {"every": 10},
}


class HandWritten:
    """The same FedAvg written directly in PyTorch, one round per :meth:`round` call. Data,
    cohorts and initial weights come from privfl's (untimed) set-up, so both sides do the
    same arithmetic on the same numbers."""

    def __init__(self, cfg: privfl.Config) -> None:
        fed = Federation(cfg)
        self.cfg, self.sampler = cfg, fed.sampler
        self.x, self.y = fed.data.bundle.train.x, fed.data.bundle.train.y
        self.test = fed.data.bundle.test
        self.parts = [torch.from_numpy(i) for i in fed.data.partition.indices]
        self.model = fed.make_model()
        self.params = list(self.model.parameters())
        self.w = torch.nn.utils.parameters_to_vector(self.params).detach().clone()
        self.r = 0
        self.accuracy = float("nan")  # test accuracy after the last round

    def round(self) -> None:
        self.r += 1
        deltas, weights = [], []
        for cid in self.sampler.sample(self.r).tolist():
            deltas.append(self.train_client(cid, self.r, self.w) - self.w)
            weights.append(len(self.parts[cid]))
        w = torch.tensor(weights, dtype=torch.float32)
        self.w = self.w + (w / w.sum()) @ torch.stack(deltas)
        if self.r == self.cfg.federation.rounds:  # privfl evaluates the last round too
            self.accuracy = self.test_accuracy(self.w)

    def train_client(self, cid: int, r: int, w: torch.Tensor) -> torch.Tensor:
        """Client ``cid``'s local training in round ``r`` from the flat weights ``w`` (one
        epoch of SGD on its own shuffle); returns its trained flat weights."""
        lr, bs = self.cfg.federation.lr, self.cfg.federation.batch_size
        x, y = self.x[self.parts[cid]], self.y[self.parts[cid]]
        torch.nn.utils.vector_to_parameters(w.clone(), self.params)  # no aliasing
        opt = torch.optim.SGD(self.params, lr=lr)
        g = torch_generator(self.cfg.seed, "client", r, cid)
        for idx in torch.randperm(len(y), generator=g).split(bs):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(self.model(x[idx]), y[idx]).backward()
            opt.step()
        return torch.nn.utils.parameters_to_vector(self.params).detach()

    def test_accuracy(self, w: torch.Tensor) -> float:
        """Test accuracy of the flat weights ``w``."""
        torch.nn.utils.vector_to_parameters(w.clone(), self.params)
        with torch.no_grad():
            return float((self.model(self.test.x).argmax(1) == self.test.y).float().mean())


#: W1's arithmetic per client update: 60 examples, forward and backward (the input gradient
#: and the weight gradient), 2 flops per multiply-add, the three weight matrices.
W1_FLOP_PER_UPDATE = 60 * 3 * 2 * (784 * 200 + 200 * 200 + 200 * 10)


def gemm_flops(seconds: float = 0.4, repeats: int = 5, *, onednn: bool = False) -> float:
    """The machine's dense GEMM rate in this process (flop/s): the best of ``repeats`` runs
    of 1024 x 1024 float32 products for ``seconds`` each, with torch's current threads.
    ``a @ b`` (MKL: the roofline W1's share is measured against, as the acceptance check
    does), or with ``onednn`` oneDNN's matmul (``privfl.engine.gemm``), which on AMD Zen 5
    runs about twice MKL's rate (the cores' real limit there; on Zen 4 the two are within
    ~15%)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = 0.0
    for _ in range(repeats):
        t, k = time.perf_counter(), 0
        while time.perf_counter() - t < seconds:
            gemm.matmul(a, b, onednn=True) if onednn else a @ b
            k += 1
        best = max(best, 2 * 1024**3 * k / (time.perf_counter() - t))
    return best


def conv_step_seconds(cfg: privfl.Config, repeats: int = 5, calls: int = 20) -> float:
    """Seconds one client step's convolutions take on one thread with their data in cache:
    every ``Conv2d`` of ``cfg``'s model forward, then oneDNN's backward (weight and bias,
    and the input gradient past the first conv), on a channels-last batch, as the batched
    CNN kernel calls them (best of ``repeats``). Times a round's client steps over the
    threads, it is the least a round's direct convolutions can take: what neither engine
    can go below without fewer arithmetic operations (docs/design.md, issue 22)."""
    shape, b = tuple(cfg.data.shape), cfg.federation.batch_size or 1
    model = cfg.model.build(shape, cfg.data.classes)
    work: list[Callable[[], object]] = []
    with torch.no_grad():
        h = torch.randn(b, *shape).contiguous(memory_format=torch.channels_last)
        for m in model:
            if isinstance(m, torch.nn.Flatten):
                break
            if isinstance(m, torch.nn.Conv2d):
                x, w = h, m.weight.detach().clone()
                bias = None if m.bias is None else m.bias.detach().clone()
                args = (m.stride, m.padding, m.dilation)
                h = F.conv2d(x, w, bias, *args)
                g, first = torch.randn_like(h), not work
                mask = (not first, True, bias is not None)
                sizes = None if bias is None else [w.shape[0]]
                work.append(lambda x=x, w=w, bias=bias, args=args: F.conv2d(x, w, bias, *args))
                work.append(
                    lambda g=g, x=x, w=w, sizes=sizes, args=args, mask=mask: (
                        torch.ops.aten.convolution_backward(
                            g, x, w, sizes, *args, False, (0, 0), 1, mask
                        )
                    )
                )
            else:
                h = m(h)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(calls):
                for fn in work:
                    fn()
            best = min(best, (time.perf_counter() - t) / calls)
    finally:
        torch.set_num_threads(threads)
    return best


def _reference(engines: tuple[str, ...]) -> str:
    """The engine W2's and W1-DP's ratios are taken against: the sequential one (the
    reference loop) when measured, else the first."""
    return "sequential" if "sequential" in engines else engines[0]


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def w1_config(rounds: int | None = None) -> privfl.Config:
    """W1's config; ``rounds`` replaces its 5 rounds (evaluation after the last one only)."""
    raw = json.loads(json.dumps(W1))
    if rounds is not None:
        raw["federation"]["rounds"] = raw["evaluation"]["every"] = rounds
    return privfl.config.config_from_dict(raw)


def run_w1(repeats: int, engines: tuple[str, ...], rounds: int | None = None) -> dict[str, object]:
    """W1, every engine beside the hand-written loop; returns the figures printed (and each
    one's test accuracy after the last round). ``rounds``: rounds of each repeat (W1's 5)."""
    base = w1_config(rounds)
    per_round = base.federation.clients_per_round
    names = ("hand-written", *engines)
    times: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in engines}
    same: dict[str, float] = {}
    for rep in range(repeats + 1):  # the first repeat is a warm-up
        runners: dict[str, Callable[[], object]] = {}
        feds = {}
        loop = HandWritten(base)
        runners["hand-written"] = loop.round
        for e in engines:
            feds[e] = Federation(base.model_copy(update={"federation": _engine(base, e)}))
            runners[e] = feds[e].run_round
        for r in range(base.federation.rounds):
            k = (rep * base.federation.rounds + r) % len(names)  # rotate the order
            order = names[k:] + names[:k]
            t = {n: _timed(runners[n]) for n in order}
            if rep:
                for n in names:
                    times[n].append(t[n])
                for e in engines:
                    ratios[e].append(t["hand-written"] / t[e])
        for e in engines:
            same[e] = float((feds[e].params - loop.w).abs().max())
        accuracy = {"hand-written": loop.accuracy} | {
            e: float(feds[e].metrics[-1]["test_accuracy"]) for e in engines
        }
    peak = gemm_flops()
    onednn_peak = gemm_flops(onednn=True) if torch.backends.mkldnn.is_available() else None
    limit = "" if onednn_peak is None else f"; oneDNN's 1024^3 rate {onednn_peak / 1e9:.0f}"
    print(
        f"W1: MLP 784-200-200-10, {per_round} clients x 60 examples a round, batch 10; "
        f"{len(times['hand-written'])} rounds each, alternating; torch threads "
        f"{torch.get_num_threads()}; GEMM roofline {peak / 1e9:.0f} GFLOP/s (1024^3 on torch's "
        f"a @ b, same process){limit}; the kernels' shared-weight products on "
        f"{'oneDNN' if gemm.onednn_matmul() else 'MKL'} (privfl.engine.gemm)"
    )
    out: dict[str, object] = {
        "rounds": len(times["hand-written"]),
        "gemm_flops": peak,
        "onednn_gemm_flops": onednn_peak,
        "kernel_gemm_library": "onednn" if gemm.onednn_matmul() else "mkl",
        "engines": {},
    }
    for n in names:
        ups = per_round / statistics.median(times[n])
        share = ups * W1_FLOP_PER_UPDATE / peak
        line = f"  {n:<14} {ups:8.1f} client updates/s (median round), {share:4.0%} of the roofline"
        rec: dict[str, float] = {
            "updates_per_s": ups,
            "median_round_s": statistics.median(times[n]),
            "roofline_share": share,
            "test_accuracy": accuracy[n],
        }
        if onednn_peak is not None:
            rec["onednn_roofline_share"] = ups * W1_FLOP_PER_UPDATE / onednn_peak
            line += f" ({rec['onednn_roofline_share']:.0%} of oneDNN's)"
        if n in ratios:
            q = statistics.quantiles(ratios[n], n=4)
            rec |= {"ratio": statistics.median(ratios[n]), "q1": q[0], "q3": q[2]}
            rec["max_abs_diff"] = same[n]
            line += (
                f"  x{statistics.median(ratios[n]):.2f} the hand-written loop "
                f"(interquartile {q[0]:.2f}-{q[2]:.2f}); |model - hand-written| max "
                f"{same[n]:.1e}"
            )
        out["engines"][n] = rec  # type: ignore[index]
        print(line)
    return out


def run_w2(
    rounds: int, repeats: int, engines: tuple[str, ...], norm: str = "none"
) -> dict[str, object]:
    """W2 (pfl-research's CIFAR-10 benchmark shape): seconds per round for every engine."""
    raw = json.loads(json.dumps(W2))
    raw["federation"]["rounds"] = rounds
    raw["model"]["norm"] = norm
    base = privfl.config.config_from_dict(raw)
    times: dict[str, list[float]] = {e: [] for e in engines}
    for _ in range(repeats):
        feds = {
            e: Federation(base.model_copy(update={"federation": _engine(base, e)})) for e in engines
        }
        for r in range(rounds):
            k = r % len(engines)
            for e in engines[k:] + engines[:k]:
                times[e].append(_timed(feds[e].run_round))
    print(
        f"W2: CNN (conv32-conv64-128, norm {norm}) on synthetic 3x32x32, 1000 users x 50, "
        f"cohort 50, batch 10, {rounds} rounds x {repeats}; torch threads {torch.get_num_threads()}"
    )
    out: dict[str, object] = {
        "rounds": rounds * repeats,
        "threads": torch.get_num_threads(),
        "engines": {},
    }
    ref = _reference(engines)
    seq = statistics.median(times[ref])
    for e in engines:
        med = statistics.median(times[e])
        out["engines"][e] = {"seconds_per_round": med, "speedup": seq / med}  # type: ignore[index]
        print(f"  {e:<14} {med:8.2f} s/round (median)  x{seq / med:.2f} {ref}")
    # The floor under any engine that runs direct convolutions: a client step's convolutions
    # (one thread, in cache) times the round's client steps, over the threads.
    data = feds[ref].data
    everyone = range(data.num_clients)  # the engines' own step counts, averaged over clients
    sched = cohort_schedule(data.partition.indices, everyone, local_training_of(base), 0, 1)
    client_steps = float(sched.steps.mean()) * base.federation.clients_per_round
    step = conv_step_seconds(base)
    threads = torch.get_num_threads()
    floor = step * client_steps / threads
    out["convolutions"] = {
        "seconds_per_client_step": step,
        "client_steps_per_round": client_steps,
        "floor_seconds_per_round": floor,
        "reference": ref,
        "reference_over_floor": seq / floor,
    }
    print(
        f"  convolutions alone (direct, one thread, in cache): {step * 1e3:.2f} ms a client "
        f"step x {client_steps:.0f} steps / {threads} threads = {floor:.2f} s a round at "
        f"least; {ref} / that = x{seq / floor:.2f}, the most any "
        f"engine with direct convolutions could run faster than {ref}"
    )
    return out


def run_w1_dp(rounds: int, engines: tuple[str, ...]) -> dict[str, object]:
    """W1 with sample-level DP-SGD (sigma 1, clip 1): seconds per round for every engine
    (sequential: Opacus' ExpandedWeights; vectorized: nested vmap), rounds alternating."""
    raw = json.loads(json.dumps(W1))
    raw["federation"]["rounds"] = rounds
    raw["defense"] = {"dp": {"mode": "sample", "noise_multiplier": 1.0, "clip": 1.0}}
    base = privfl.config.config_from_dict(raw)
    feds = {
        e: Federation(base.model_copy(update={"federation": _engine(base, e)})) for e in engines
    }
    times: dict[str, list[float]] = {e: [] for e in engines}
    for r in range(rounds):
        k = r % len(engines)
        for e in engines[k:] + engines[:k]:
            times[e].append(_timed(feds[e].run_round))
    ref, other = _reference(engines), "vectorized" if "vectorized" in engines else engines[-1]
    seq = statistics.median(times[ref])
    diff = float((feds[other].params - feds[ref].params).abs().max())
    print(
        f"W1 with DP-SGD (sigma 1, clip 1, Poisson lots of expected size 10), {rounds} rounds; "
        f"torch threads {torch.get_num_threads()}"
    )
    out: dict[str, object] = {
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "engines": {},
        "max_abs_diff": diff,
    }
    for e in engines:
        med = statistics.median(times[e])
        out["engines"][e] = {"seconds_per_round": med, "speedup": seq / med}  # type: ignore[index]
        print(f"  {e:<14} {med:8.2f} s/round (median)  x{seq / med:.2f} {ref}")
    print(f"  |{other} - {ref}| max over the model: {diff:.1e} (same lots and noise)")
    return out


def _engine(cfg: privfl.Config, engine: str):  # type: ignore[no-untyped-def]
    return cfg.federation.model_copy(update={"engine": engine})


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=5, help="whole W1 runs of each (median)")
    ap.add_argument("--w2-rounds", type=int, default=20, help="W2 rounds (0: skip W2)")
    ap.add_argument("--w2-repeats", type=int, default=1, help="whole W2 runs of each")
    ap.add_argument(
        "--w2-norm", choices=["none", "group"], default="none", help="W2's norm after each conv"
    )
    ap.add_argument("--quick", action="store_true", help="W1 x2, W2 4 rounds")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[torch.get_num_threads()],
        help="torch intra-op thread counts to run W1 with (W2 and W1-DP use the largest)",
    )
    ap.add_argument("--dp-rounds", type=int, default=3, help="W1 with DP-SGD (0: skip)")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.w2_rounds = 2, 4
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from suite import device_line

    print(f"device: {device_line()}")
    out: dict[str, object] = {"device": device_line()}
    for threads in args.threads:
        torch.set_num_threads(threads)
        out[f"w1_threads{threads}"] = run_w1(args.repeats, LOCAL_ENGINES)
    # W2 and W1-DP at the most threads asked for (torch's default, the machine's cores, when
    # the suite asks for 1 and 2 on two cores): their ratios are read as the default run's.
    torch.set_num_threads(max(args.threads))
    if args.dp_rounds:
        out["w1_dp"] = run_w1_dp(args.dp_rounds, LOCAL_ENGINES)
    if args.w2_rounds:
        out["w2"] = run_w2(args.w2_rounds, args.w2_repeats, LOCAL_ENGINES, args.w2_norm)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
