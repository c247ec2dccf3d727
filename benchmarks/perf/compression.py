"""Compression: encode/decode throughput per method at d = 1e6, and accuracy against total
bytes up on digits, in one run.

    .venv/bin/python benchmarks/perf/compression.py [--d 1e6] [--repeats 7] [--threads 1]
        [--rounds 10] [--local-epochs 2] [--out runs/bench/compression]

Part 1 times, for one client's update of d float32 values (N(0, 1)): *encode* = compress +
serialize to the message bytes, *decode* = the server's decoder from the bytes back to a dense
``(1, d)`` float32 row. Throughput is GB/s of float32 input (4 d bytes / time). The baseline
is plain float32 serialization (``tobytes`` / ``frombuffer``), timed in the same repeats;
methods alternate within each repeat and the figures are medians. numpy's argpartition is
timed beside the top-k encoder (which uses ``torch.topk``), as the reference it must match.
Target (issue 11): top-k encoding at d = 1e6 under 20 ms.

Part 2 runs ``examples/quickstart.toml`` (shortened by ``--rounds`` / ``--local-epochs``) with
each compressor and writes ``accuracy_vs_bytes.png`` (test accuracy against cumulative bytes
up, one line per method) and ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

import privfl
from privfl.compression import (
    IndexMode,
    decode_qsgd,
    decode_sign,
    decode_sparse,
    keep_count,
    qsgd,
    random_k,
    scaled_sign,
    top_k,
)

TOPK_TARGET_MS = 20.0
RUNS = {
    "plain": [],
    "topk 10% + EF": ["compression.method=topk", "compression.ratio=0.1"],
    "topk 1% + EF": ["compression.method=topk", "compression.ratio=0.01"],
    "randk 10% + EF": [
        "compression.method=randk",
        "compression.ratio=0.1",
        "compression.error_feedback=true",
    ],
    "randk 10% shared, unbiased": [
        "compression.method=randk",
        "compression.ratio=0.1",
        "compression.shared_seed=true",
        "compression.error_feedback=false",
    ],
    "qsgd s=16": ["compression.method=qsgd"],
    "qsgd s=2": ["compression.method=qsgd", "compression.levels=2"],
    "sign + EF (majority vote)": ["compression.method=sign"],
}


def codecs(d: int) -> dict[str, tuple[Callable, Callable]]:
    """name -> (encode(x) -> messages, decode(messages) -> (1, d))."""
    k = keep_count(d, 0.1)
    seeds = np.array([12345], dtype=np.uint64)

    def plain_enc(x):
        return (x.numpy().tobytes(),)

    def plain_dec(m):
        return torch.from_numpy(np.frombuffer(m[0], dtype=np.float32).reshape(1, d).copy())

    return {
        "float32 (baseline)": (plain_enc, plain_dec),
        "topk 10%": (
            lambda x: top_k(x, k).to_messages(),
            partial(decode_sparse, dim=d, k=k, mode=IndexMode.EXPLICIT),
        ),
        "randk 10%": (
            lambda x: random_k(x, k, seeds, None, scale=True).to_messages(),
            partial(decode_sparse, dim=d, k=k, mode=IndexMode.SEEDED, scale=d / k),
        ),
        "randk 10% shared": (
            lambda x: random_k(x, k, None, 7, scale=True).to_messages(),
            partial(decode_sparse, dim=d, k=k, mode=IndexMode.SHARED, shared_seed=7, scale=d / k),
        ),
        "qsgd s=16": (
            lambda x: qsgd(x, 16, [np.random.default_rng(0)]).to_messages(),
            partial(decode_qsgd, dim=d, levels=16),
        ),
        "sign": (lambda x: scaled_sign(x).to_messages(), partial(decode_sign, dim=d)),
        "argpartition (top-k reference, no serialization)": (
            lambda x: (np.argpartition(-np.abs(x.numpy()[0]), k - 1)[:k].tobytes(),),
            None,
        ),
    }


def throughput(d: int, repeats: int) -> list[dict]:
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, d)).astype(np.float32))
    table = codecs(d)
    times: dict[str, dict[str, list[float]]] = {n: {"enc": [], "dec": []} for n in table}
    for _ in range(repeats):
        for name, (enc, dec) in table.items():
            t0 = time.perf_counter()
            msgs = enc(x)
            t1 = time.perf_counter()
            times[name]["enc"].append(t1 - t0)
            if dec is not None:
                dec(msgs)
                times[name]["dec"].append(time.perf_counter() - t1)
    rows = []
    base = times["float32 (baseline)"]
    for name, (enc, _) in table.items():
        te = statistics.median(times[name]["enc"])
        td = statistics.median(times[name]["dec"]) if times[name]["dec"] else float("nan")
        nbytes = sum(len(m) for m in enc(x))
        rows.append(
            {
                "method": name,
                "encode_ms": 1e3 * te,
                "decode_ms": 1e3 * td,
                "encode_GBps": 4 * d / te / 1e9,
                "decode_GBps": 4 * d / td / 1e9,
                "encode_vs_baseline": te / statistics.median(base["enc"]),
                "decode_vs_baseline": td / statistics.median(base["dec"]),
                "bytes": nbytes,
            }
        )
    return rows


def accuracy_vs_bytes(rounds: int, local_epochs: int) -> dict[str, dict]:
    out = {}
    for name, extra in RUNS.items():
        overrides = [f"federation.rounds={rounds}", f"federation.local_epochs={local_epochs}"]
        t0 = time.perf_counter()
        res = privfl.run(
            "examples/quickstart.toml", out=None, overrides=overrides + extra, progress=False
        )
        up = np.cumsum([r["bytes_up"] for r in res.metrics]).tolist()
        acc = [r["test_accuracy"] for r in res.metrics]
        out[name] = {"bytes_up": up, "accuracy": acc, "seconds": time.perf_counter() - t0}
        print(f"  {name:28s} accuracy {acc[-1]:.3f}  bytes up {up[-1] / 1e6:8.2f} MB", flush=True)
    return out


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        ax.plot(np.array(r["bytes_up"]) / 1e6, r["accuracy"], marker=".", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("cumulative bytes up (MB, log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("digits quickstart: accuracy against bytes sent, per compressor")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", type=float, default=1e6)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--local-epochs", type=int, default=2)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/compression"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = int(args.d)
    print(
        f"encode/decode of one update, d = {d:,} ({args.repeats} repeats, median, "
        f"{args.threads} thread(s))"
    )
    print(
        f"{'method':50s} {'enc ms':>8s} {'GB/s':>6s} {'x base':>7s} {'dec ms':>8s} "
        f"{'GB/s':>6s} {'x base':>7s} {'bytes':>10s}"
    )
    rows = throughput(d, args.repeats)
    for r in rows:
        print(
            f"{r['method']:50s} {r['encode_ms']:8.2f} {r['encode_GBps']:6.2f} "
            f"{r['encode_vs_baseline']:7.1f} {r['decode_ms']:8.2f} {r['decode_GBps']:6.2f} "
            f"{r['decode_vs_baseline']:7.1f} {r['bytes']:10,d}"
        )
    topk = next(r for r in rows if r["method"] == "topk 10%")
    verdict = "met" if topk["encode_ms"] < TOPK_TARGET_MS else "MISSED"
    print(
        f"target: top-k encode at d = {d:,} under {TOPK_TARGET_MS:g} ms: "
        f"{topk['encode_ms']:.1f} ms ({verdict})"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"throughput": rows}
    if not args.skip_accuracy:
        print(
            f"\naccuracy vs bytes: quickstart, {args.rounds} rounds, "
            f"{args.local_epochs} local epoch(s)"
        )
        runs = accuracy_vs_bytes(args.rounds, args.local_epochs)
        results["accuracy_vs_bytes"] = runs
        plot(runs, args.out / "accuracy_vs_bytes.png")
        base = runs["plain"]["bytes_up"][-1]
        for name, r in runs.items():
            print(f"  {name:28s} bytes {r['bytes_up'][-1] / base:6.3f} x plain")
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"written to {args.out}/ (results.json, accuracy_vs_bytes.png)")


if __name__ == "__main__":
    main()
