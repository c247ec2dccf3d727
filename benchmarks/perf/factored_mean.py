"""W1's round with the server's mean taken from the factors against the round that writes
every client's row first (``VectorizedEngine.factored_updates``).

Two federations of W1 (``throughput.w1_config``) run in one process, their rounds
interleaved (A, B, A, B, ...) after a warm-up, so that both see the same minutes of a noisy
host. Prints the median timed round of each, their ratio (rows over factors) and how far the
two models drift apart (float rounding: the same sums in another order).

    .venv/bin/python benchmarks/perf/factored_mean.py [--rounds 150] [--warmup 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import w1_config  # noqa: E402

from privfl.federation import Federation  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=150, help="timed rounds of each")
    ap.add_argument("--warmup", type=int, default=20, help="untimed rounds of each first")
    args = ap.parse_args()
    total = args.rounds + args.warmup
    factored, rows = Federation(w1_config(total)), Federation(w1_config(total))
    rows.engine.factored_updates = False  # type: ignore[attr-defined]
    for _ in range(total):
        factored.run_round()
        rows.run_round()
    a = statistics.median(t["seconds"] for t in factored.timings[args.warmup :])
    b = statistics.median(t["seconds"] for t in rows.timings[args.warmup :])
    drift = float((factored.params - rows.params).abs().max())
    scale = float(rows.params.abs().max())
    print(f"device {torch.device('cpu')}, {torch.get_num_threads()} torch threads")
    print(f"W1 round, mean from the factors: {a * 1e3:.2f} ms (median of {args.rounds})")
    print(f"W1 round, rows written first:    {b * 1e3:.2f} ms")
    print(f"ratio {b / a:.3f}x; models after {total} rounds differ by {drift:.1e}", end=" ")
    print(f"(max |w| {scale:.2f})")


if __name__ == "__main__":
    main()
