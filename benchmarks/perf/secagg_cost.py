"""Secure aggregation cost: client and server compute time and bytes per client, beside
plaintext aggregation of the same data, measured in one run.

Grid: n clients in {10, 50, 100, 200}, d parameters in {1e4, 1e5, 1e6}, dropout in
{0, 10%, 30%}, the complete graph (Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020, k and
t derived with ``neighbours = "auto"``, corruption 0.1). Each cell runs the whole protocol for
all simulated clients (real X25519, HKDF, AES-GCM, Shamir, AES-CTR masks; dropouts at random
stages) and checks that the unmasked sum equals the survivors' sum.

    .venv/bin/python benchmarks/perf/secagg_cost.py [--n 10 50 100 200] [--d 1e4 1e5 1e6]
        [--dropout 0 0.1 0.3] [--repeats 3] [--out runs/bench/secagg_cost]

Columns: ``client s`` is the time of all clients together (the simulation is sequential;
``per client`` divides it by n, encoding included), ``server s`` the server's (decoding
included), ``plain s`` the server's plaintext weighted sum of the same float updates; each as
wall-clock seconds and, in brackets, CPU seconds of the thread (the shared machine inflates
wall-clock time when it is busy; CPU time much less). ``KB/client`` is the mean of the bytes
each of the n clients sent (dropped clients send less; plain: 4 d). Writes ``table.md``,
``results.json`` and ``time_vs_n.png`` (CPU seconds against n) under ``--out``.

The growth check runs its own SecAgg+ cells at d = ``--growth-d`` (1e4) for the grid's n and
``--growth-n`` (default 200, 400, 800), every dropout, ``--growth-repeats`` (3) each, and
compares medians; it starts where SecAgg+ stops being the complete graph (at 30% dropout
the security bounds need k ~ 190-200 neighbours, so below n ~ 200 SecAgg+ is the complete
graph).

Targets: SecAgg+ server time grows no faster than n log n; n = 100, d = 1e5, 10% dropout, the
whole protocol for all simulated clients under 5 s (the headline line, median of
``--repeats``, complete graph and SecAgg+ alternating).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np

from privfl.defenses.quantize import FixedPointCodec
from privfl.defenses.secagg.constants import STAGES
from privfl.defenses.secagg.graph import NeighbourGraph, secaggplus_parameters, threshold_for
from privfl.defenses.secagg.protocol import draw_dropouts, run_protocol
from privfl.defenses.secagg.state import RoundParams

THRESHOLD = 0.6
CORRUPTION = 0.1
CLIP = 1.0
BITS = 32
POOL = 8  # distinct update vectors; client i sends pool[i % POOL] (content does not change cost)


def _params(n: int, length: int, graph: str, dropout: float, rng) -> RoundParams:
    ids = np.arange(n, dtype=np.int64)
    if graph == "full":
        g, t = NeighbourGraph.complete(ids), threshold_for(n, THRESHOLD)
    else:
        plus = secaggplus_parameters(n, dropout=dropout, corruption=CORRUPTION)
        g = (
            NeighbourGraph.complete(ids)
            if plus.k >= n - 1
            else NeighbourGraph.harary(ids, plus.k, rng)
        )
        t = plus.t
    return RoundParams(round=1, graph=g, threshold=t, length=length, bits=BITS)


def run_cell(n: int, d: int, dropout: float, graph: str, seed: int = 0) -> dict:
    """One protocol round; returns its timings, bytes and correctness."""
    rng = np.random.default_rng(seed)
    floats = rng.normal(0, 0.05, size=(POOL, d)).astype(np.float32)
    weights = rng.integers(10, 100, size=n).astype(np.float64)
    rho = weights / weights.max()
    codec = FixedPointCodec.for_bits(CLIP, BITS, n)
    wcodec = FixedPointCodec.for_bits(1.0, BITS, n)
    # Clients encode their updates (timed: it is client work).
    t0, c0 = time.perf_counter(), time.thread_time()
    pool = []
    for i in range(n):
        row = np.empty(d + 1, dtype=np.uint32)
        row[:d] = codec.encode(rho[i] * floats[i % POOL].astype(np.float64))
        row[d] = wcodec.encode(np.array([rho[i]]))[0]
        if i < POOL:
            pool.append(row)
    encode_s, encode_cpu = time.perf_counter() - t0, time.thread_time() - c0
    # The same rows are reused (read-only) for clients i >= POOL, whose rho differs: only
    # the costs matter here, and the correctness check below uses the rows actually sent.
    inputs = [pool[i % POOL] for i in range(n)]
    params = _params(n, d + 1, graph, dropout, rng)
    vanish = draw_dropouts(params.graph.ids, dropout, rng)
    t0 = time.perf_counter()
    r = run_protocol(params, inputs, vanish=vanish, keep_masked=False)
    wall = time.perf_counter() - t0
    ok = r.abort is None
    if ok:
        expected = np.zeros(d + 1, dtype=np.uint32)
        for u in r.survivors:
            expected += inputs[int(u)]
        ok = bool(np.array_equal(expected, r.total))
        t1, c1 = time.perf_counter(), time.thread_time()
        codec.decode(r.total[:d]) / wcodec.decode(r.total[d:])[0]
        decode_s, decode_cpu = time.perf_counter() - t1, time.thread_time() - c1
    else:
        decode_s = decode_cpu = 0.0
    plain, plain_cpu = _plain_seconds(floats, weights)
    return {
        "n": n,
        "d": d,
        "dropout": dropout,
        "graph": graph,
        "k": params.graph.max_degree,
        "t": params.threshold,
        "client_s": r.client_seconds + encode_s,
        "server_s": r.server_seconds + decode_s,
        "client_cpu_s": r.client_cpu_seconds + encode_cpu,
        "server_cpu_s": r.server_cpu_seconds + decode_cpu,
        "protocol_wall_s": wall + encode_s + decode_s,
        "protocol_cpu_s": r.client_cpu_seconds + r.server_cpu_seconds + encode_cpu + decode_cpu,
        "plain_s": plain,
        "plain_cpu_s": plain_cpu,
        "bytes_per_client": statistics.fmean(r.bytes_up.values()),
        "plain_bytes_per_client": 4 * d,
        "survivors": len(r.survivors),
        "vanished": {s.value: sum(1 for v in r.vanished.values() if v is s) for s in STAGES},
        "aborted": None if r.abort is None else str(r.abort),
        "sum_correct": ok,
    }


def _plain_seconds(floats: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Wall and CPU seconds of the server's plaintext weighted mean of the same n float32
    updates (streamed rows)."""
    n, (pool, d) = len(weights), floats.shape
    t0, c0 = time.perf_counter(), time.thread_time()
    acc = np.zeros(d, dtype=np.float32)
    for i in range(n):
        acc += np.float32(weights[i]) * floats[i % pool]
    acc /= np.float32(weights.sum())
    return time.perf_counter() - t0, time.thread_time() - c0


def headline(repeats: int) -> dict:
    """n = 100, d = 1e5, 10% dropout: medians over ``repeats``, full and SecAgg+ alternating
    (wall-clock and CPU seconds of the whole protocol, all clients and the server)."""
    cells: dict[str, list[dict]] = {"full": [], "secagg+": []}
    for rep in range(repeats):
        order = ("full", "secagg+") if rep % 2 == 0 else ("secagg+", "full")
        for graph in order:
            cell = run_cell(100, 100_000, 0.1, graph, seed=rep)
            if not cell["sum_correct"]:
                raise SystemExit(f"wrong sum in the headline run: {cell}")
            cells[graph].append(cell)
    out: dict = {}
    for graph, runs in cells.items():
        out[graph] = {
            key: statistics.median(c[key] for c in runs)
            for key in ("protocol_wall_s", "protocol_cpu_s", "plain_s", "plain_cpu_s")
        }
        out[graph]["wall_runs"] = [c["protocol_wall_s"] for c in runs]
    return out


def _table(rows: list[dict]) -> str:
    head = (
        "| graph | n | d | dropout | k | t | client s (CPU) | per client s (CPU) "
        "| server s (CPU) | plain s (CPU) | server CPU / plain CPU | KB/client | x plain bytes "
        "| sum ok |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        lines.append(
            f"| {r['graph']} | {r['n']} | {r['d']:.0e} | {r['dropout']:.0%} | {r['k']} | "
            f"{r['t']} | {r['client_s']:.2f} ({r['client_cpu_s']:.2f}) | "
            f"{r['client_s'] / r['n']:.4f} ({r['client_cpu_s'] / r['n']:.4f}) | "
            f"{r['server_s']:.3f} ({r['server_cpu_s']:.3f}) | "
            f"{r['plain_s']:.4f} ({r['plain_cpu_s']:.4f}) | "
            f"{r['server_cpu_s'] / max(r['plain_cpu_s'], 1e-6):.0f} | "
            f"{r['bytes_per_client'] / 1e3:.1f} | "
            f"{r['bytes_per_client'] / r['plain_bytes_per_client']:.3f} | "
            f"{'yes' if r['sum_correct'] else ('ABORT' if r['aborted'] else 'NO')} |"
        )
    return head + "\n".join(lines) + "\n"


def _growth(rows: list[dict]) -> list[str]:
    """SecAgg+ server CPU time against n log n, per (d, dropout), over the clients counts at
    which SecAgg+ is not the complete graph (``k < n - 1``: below that, the degree the
    security bounds need is the whole cohort, and SecAgg+ *is* Bonawitz et al.'s protocol,
    quadratic by design). Medians over repeated cells; the growth is a log-log slope, met when
    it is at most n log n's over the same range."""
    out = []
    cells: dict[tuple[int, float], dict[int, list[dict]]] = {}
    for r in rows:
        if r["graph"] == "secagg+" and r["sum_correct"] and r["k"] < r["n"] - 1:
            cells.setdefault((r["d"], r["dropout"]), {}).setdefault(r["n"], []).append(r)
    for (d, dropout), by_n in sorted(cells.items()):
        if len(by_n) < 2:
            continue
        ns = sorted(by_n)
        cpu = {n: statistics.median(c["server_cpu_s"] for c in by_n[n]) for n in ns}
        k = {n: by_n[n][0]["k"] for n in ns}
        a, b = ns[0], ns[-1]
        slope = math.log(cpu[b] / cpu[a]) / math.log(b / a)
        nlogn = math.log(b * math.log(b) / (a * math.log(a))) / math.log(b / a)
        steps = ", ".join(f"n={n} k={k[n]} {cpu[n]:.3f}s" for n in ns)
        out.append(
            f"SecAgg+ server CPU, d={d:.0e}, dropout {dropout:.0%} ({steps}): n {a} -> {b} "
            f"time x{cpu[b] / cpu[a]:.2f}, n log n x{b * math.log(b) / (a * math.log(a)):.2f}; "
            f"log-log slope {slope:.2f} vs n log n's {nlogn:.2f} "
            f"({'met' if slope <= nlogn else 'MISSED'})"
        )
    return out


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = sorted({r["d"] for r in rows})
    fig, axes = plt.subplots(1, len(ds), figsize=(5 * len(ds), 4), squeeze=False)
    for ax, d in zip(axes[0], ds, strict=True):
        for graph, style in (("full", "-"), ("secagg+", "--")):
            for dropout, color in zip(sorted({r["dropout"] for r in rows}), "bgr", strict=False):
                cells = sorted(
                    (
                        r
                        for r in rows
                        if r["d"] == d and r["graph"] == graph and r["dropout"] == dropout
                    ),
                    key=lambda r: r["n"],
                )
                if cells:
                    ax.plot(
                        [c["n"] for c in cells],
                        [c["client_s"] + c["server_s"] for c in cells],
                        style,
                        color=color,
                        marker="o",
                        label=f"{graph}, dropout {dropout:.0%}",
                    )
        ns = sorted({r["n"] for r in rows if r["d"] == d})
        plain = [
            statistics.median(r["plain_cpu_s"] for r in rows if r["d"] == d and r["n"] == n)
            for n in ns
        ]
        ax.plot(ns, plain, ":k", label="plaintext sum (median)")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="clients n",
            ylabel="CPU seconds (all clients + server)",
            title=f"d = {d:.0e}",
        )
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, nargs="+", default=[10, 50, 100, 200])
    ap.add_argument("--d", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    ap.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    ap.add_argument("--graphs", nargs="+", default=["full", "secagg+"])
    ap.add_argument("--repeats", type=int, default=3, help="headline repeats (median)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/secagg_cost"))
    ap.add_argument(
        "--growth-n",
        type=int,
        nargs="*",
        default=[200, 400, 800],
        help="n beside the grid's for the n log n check (SecAgg+, d = --growth-d, every dropout)",
    )
    ap.add_argument("--growth-d", type=float, default=1e4)
    ap.add_argument("--growth-repeats", type=int, default=3, help="cells per growth n (median)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in (int(x) for x in args.d):
        for n in args.n:
            for dropout in args.dropout:
                for graph in args.graphs:
                    rows.append(run_cell(n, d, dropout, graph))
                    r = rows[-1]
                    print(
                        f"{graph:8s} n={n:4d} d={d:.0e} dropout={dropout:.0%} k={r['k']:3d} "
                        f"t={r['t']:3d}: client {r['client_s']:7.2f}s (CPU "
                        f"{r['client_cpu_s']:6.2f}s) server {r['server_s']:6.3f}s (CPU "
                        f"{r['server_cpu_s']:6.3f}s) plain {r['plain_s']:.4f}s "
                        f"{r['bytes_per_client'] / 1e3:9.1f} KB/client "
                        f"{'ok' if r['sum_correct'] else r['aborted'] or 'WRONG'}",
                        flush=True,
                    )
    growth_rows = []  # the grid's n and --growth-n at --growth-d, each repeated
    for dropout in args.dropout:
        for n in sorted(set(args.n) | set(args.growth_n)):
            for rep in range(args.growth_repeats):
                r = run_cell(n, int(args.growth_d), dropout, "secagg+", seed=rep)
                growth_rows.append(r)
                print(
                    f"growth   n={n:4d} d={args.growth_d:.0e} dropout={dropout:.0%} "
                    f"k={r['k']:3d}: server CPU {r['server_cpu_s']:.3f}s "
                    f"{'ok' if r['sum_correct'] else r['aborted'] or 'WRONG'}",
                    flush=True,
                )
    head = headline(args.repeats)
    table = _table(rows)
    growth = _growth(growth_rows)
    summary = [
        f"headline n=100, d=1e5, dropout 10%, whole protocol for all simulated clients, median "
        f"of {args.repeats} (target < 5 s): full graph {head['full']['protocol_wall_s']:.2f} s "
        f"wall ({head['full']['protocol_cpu_s']:.2f} s CPU), SecAgg+ "
        f"{head['secagg+']['protocol_wall_s']:.2f} s wall "
        f"({head['secagg+']['protocol_cpu_s']:.2f} s CPU); plaintext sum "
        f"{head['full']['plain_s']:.4f} s wall ({head['full']['plain_cpu_s']:.4f} s CPU)",
        *growth,
    ]
    (args.out / "table.md").write_text(table + "\n" + "\n".join(summary) + "\n")
    (args.out / "results.json").write_text(
        json.dumps({"rows": rows, "growth": growth_rows, "headline": head}, indent=1)
    )
    _plot(rows, args.out / "time_vs_n.png")
    print()
    print(table)
    print("\n".join(summary))
    print(f"written to {args.out}/ (table.md, results.json, time_vs_n.png)")
    if not all(r["sum_correct"] or r["aborted"] for r in rows + growth_rows):
        raise SystemExit("a secure sum was wrong")


if __name__ == "__main__":
    main()
