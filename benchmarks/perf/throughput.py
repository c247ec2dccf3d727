"""W1 throughput: privfl's sequential engine against a hand-written PyTorch FedAvg loop.

Workload W1: MLP 784-200-200-10 on synthetic 28x28 data, 100 clients x 60 examples, 20
clients a round, 1 local epoch, batch 10, 5 rounds. Both sides do the same arithmetic
(same data, same initial weights, same per-client shuffles, SGD, example-weighted FedAvg,
one test evaluation at the end) and are timed round by round, alternately, in one process.
Figures: client updates per second of the median round (set-up excluded) and the median
of the per-round time ratios.

    .venv/bin/python benchmarks/perf/throughput.py [--repeats 5]

Target: privfl >= 0.9x the hand-written loop (framework overhead under 10%).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import privfl
from privfl.federation import Federation
from privfl.seeding import torch_generator

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

    def round(self) -> None:
        self.r += 1
        lr, bs = self.cfg.federation.lr, self.cfg.federation.batch_size
        deltas, weights = [], []
        for cid in self.sampler.sample(self.r).tolist():
            x, y = self.x[self.parts[cid]], self.y[self.parts[cid]]
            torch.nn.utils.vector_to_parameters(self.w.clone(), self.params)  # no aliasing
            opt = torch.optim.SGD(self.params, lr=lr)
            g = torch_generator(self.cfg.seed, "client", self.r, cid)
            for idx in torch.randperm(len(y), generator=g).split(bs):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(self.model(x[idx]), y[idx]).backward()
                opt.step()
            deltas.append(torch.nn.utils.parameters_to_vector(self.params).detach() - self.w)
            weights.append(len(y))
        w = torch.tensor(weights, dtype=torch.float32)
        self.w = self.w + (w / w.sum()) @ torch.stack(deltas)
        if self.r == self.cfg.federation.rounds:  # privfl evaluates the last round too
            torch.nn.utils.vector_to_parameters(self.w.clone(), self.params)
            with torch.no_grad():
                (self.model(self.test.x).argmax(1) == self.test.y).float().mean()


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=5, help="whole 5-round runs of each")
    args = ap.parse_args()
    cfg = privfl.config.config_from_dict(W1)
    per_round = cfg.federation.clients_per_round
    ours, hand, ratios = [], [], []
    for rep in range(args.repeats + 1):  # the first repeat is a warm-up
        fed, loop = Federation(cfg), HandWritten(cfg)
        for r in range(cfg.federation.rounds):
            # Rounds alternate (order flipped every other round) so drift hits both alike.
            first, second = (
                (fed.run_round, loop.round) if r % 2 == 0 else (loop.round, fed.run_round)
            )
            t1, t2 = _timed(first), _timed(second)
            t_p, t_h = (t1, t2) if r % 2 == 0 else (t2, t1)
            if rep:
                ours.append(t_p)
                hand.append(t_h)
                ratios.append(t_h / t_p)
        same = torch.allclose(fed.params, loop.w, atol=1e-5)
    print(
        f"W1: MLP 784-200-200-10, {per_round} clients x 60 examples a round, batch 10; "
        f"{len(ratios)} paired rounds, torch threads {torch.get_num_threads()}"
    )
    print(
        f"  hand-written PyTorch loop  : {per_round / statistics.median(hand):8.1f} "
        "client updates/s (median round)"
    )
    print(
        f"  privfl sequential engine   : {per_round / statistics.median(ours):8.1f} "
        "client updates/s (median round)"
    )
    q = statistics.quantiles(ratios, n=4)
    print(
        f"  ratio privfl / hand-written: {statistics.median(ratios):.3f} "
        f"(interquartile {q[0]:.3f}-{q[2]:.3f}); target >= 0.9"
    )
    print(f"  same final model as the hand-written loop: {same}")


if __name__ == "__main__":
    main()
