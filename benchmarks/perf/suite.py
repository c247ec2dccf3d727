"""The performance suite: every benchmark of ``benchmarks/perf/`` in one invocation, results
written to ``benchmarks/RESULTS.md`` (machine, date, each benchmark's medians and ratios).

Each benchmark runs in its own child process (so one's memory or threads do not colour the
next), with the arguments below; ``--quick`` uses each one's short settings. The figures are
the benchmarks' own (each measures its baseline in the same run, alternating, and reports
medians); this script only runs them and collects their output, plus a summary table of the
engines on W1 and W2 from ``throughput.py --json``.

    .venv/bin/python benchmarks/perf/suite.py [--quick] [--only NAME ...] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Benchmark:
    """One script of the suite and its arguments (full and quick)."""

    name: str
    script: str
    title: str
    full: tuple[str, ...]
    quick: tuple[str, ...]


SUITE: tuple[Benchmark, ...] = (
    Benchmark(
        "throughput",
        "throughput.py",
        "W1 and W2: engines against the hand-written PyTorch loop",
        ("--repeats", "5", "--w2-rounds", "20", "--threads", "1", "2"),
        ("--repeats", "3", "--w2-rounds", "4", "--threads", "1", "2"),
    ),
    Benchmark(
        "memory",
        "memory.py",
        "Memory: 10,000 registered clients",
        (),
        ("--partitions", "dirichlet"),
    ),
    Benchmark(
        "dp_overhead",
        "dp_overhead.py",
        "DP-SGD overhead per local step",
        (),
        ("--steps", "20", "--repeats", "3"),
    ),
    Benchmark(
        "secagg_cost",
        "secagg_cost.py",
        "Secure aggregation cost",
        (),
        ("--n", "10", "50", "100", "--d", "1e4", "1e5", "--dropout", "0", "0.1", "--repeats", "1")
        + ("--growth-n", "200", "400", "--growth-repeats", "2"),
    ),
    Benchmark(
        "he_cost",
        "he_cost.py",
        "Homomorphic encryption cost",
        ("--workers", "0"),
        ("--quick", "--workers", "0"),
    ),
    Benchmark(
        "inversion",
        "inversion.py",
        "Gradient inversion: seconds per image against hand-written loops",
        (),
        ("--scale", "0.1", "--repeats", "1"),
    ),
    Benchmark(
        "robust_agg",
        "robust_agg.py",
        "Robust aggregation rules against the weighted mean",
        ("--threads", "1", "--clock", "cpu"),
        ("--threads", "1", "--clock", "cpu", "--repeats", "3", "--sizes", "50x1e4", "50x1e6"),
    ),
)
# A benchmark whose script is absent (a branch without that feature) is listed as skipped.


def machine() -> list[str]:
    """Lines describing the machine and software the figures come from."""
    import torch

    from privfl.engine.gemm import cpu_info

    cpu = cpu_info("model name") or platform.processor() or platform.machine()
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB memory"
    except (OSError, ValueError, IndexError):
        pass
    return [
        f"- machine: {cpu}, {os.cpu_count()} cores{mem}; load average at start "
        f"{os.getloadavg()[0]:.1f} (the machine is shared: figures are medians of alternating "
        "repeats, ratios against a baseline measured in the same run)",
        f"- software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.system()} {platform.release()}",
        f"- device: {device_line()}",
    ]


def device_line() -> str:
    """The accelerator the benchmarks could use (``[federation] device = "auto"``'s pick)."""
    import torch

    if not torch.cuda.is_available():
        return "cpu (no CUDA device: every figure is CPU time)"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"cuda: {', '.join(names)} (figures on the GPU are absolute wall-clock times)"


def _summary(data: dict) -> list[str]:
    """Markdown tables of the figures of ``throughput.py --json``."""
    out: list[str] = []
    for key, w1 in data.items():
        if not key.startswith("w1_threads"):
            continue
        threads = key.removeprefix("w1_threads")
        out += [
            f"| W1, {threads} torch thread(s) | client updates/s | x hand-written (median, IQR)"
            " | max abs diff from the hand-written model |",
            "|---|---|---|---|",
        ]
        for name, r in w1["engines"].items():
            ratio = (
                f"{r['ratio']:.2f} ({r['q1']:.2f}-{r['q3']:.2f})" if "ratio" in r else "baseline"
            )
            diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
            out.append(f"| {name} | {r['updates_per_s']:.1f} | {ratio} | {diff} |")
        out.append("")
    for key, title in (("w1_dp", "W1 with DP-SGD"), ("w2", "W2 (CNN, pfl-research shape)")):
        if key not in data:
            continue
        n = data[key].get("threads")  # absent in files written before it was recorded
        threads = f", {n} torch thread(s)" if n else ""
        out += [
            f"| {title}, {data[key]['rounds']} rounds{threads} | s/round (median) | x sequential |",
            "|---|---|---|",
        ]
        for name, r in data[key]["engines"].items():
            out.append(f"| {name} | {r['seconds_per_round']:.2f} | {r['speedup']:.2f} |")
        out.append("")
    return out


#: Everything below this line of RESULTS.md is kept when ``make bench`` rewrites the file.
KEEP_MARKER = "<!-- sections below are kept by make bench -->"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="each benchmark's short settings")
    ap.add_argument("--only", nargs="+", choices=[b.name for b in SUITE])
    ap.add_argument("--out", type=Path, default=HERE.parent / "RESULTS.md")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark")
    args = ap.parse_args()
    started = dt.datetime.now(dt.UTC)
    mode = "quick" if args.quick else "full"
    lines = [
        "# privfl performance results",
        "",
        f"Written by `benchmarks/perf/suite.py{' --quick' if args.quick else ''}` (`make bench`) "
        f"on {started:%Y-%m-%d %H:%M} UTC, {mode} settings.",
        "",
        *machine(),
        "",
    ]
    sections: list[str] = []
    summary: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in SUITE:
            if args.only and b.name not in args.only:
                continue
            if not (HERE / b.script).exists():
                sections += [f"## {b.title}", "", f"skipped: no benchmarks/perf/{b.script}", ""]
                continue
            argv = list(b.quick if args.quick else b.full)
            if b.name == "throughput":
                argv += ["--json", f"{tmp}/throughput.json"]
            if b.name in ("secagg_cost", "he_cost"):
                argv += ["--out", f"{tmp}/{b.name}"]
            cmd = [sys.executable, str(HERE / b.script), *argv]
            shown = " ".join(["python", f"benchmarks/perf/{b.script}", *argv[: len(argv)]])
            print(f"== {b.name}: {shown}", flush=True)
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=args.timeout, check=False
                )
                text, status = (
                    proc.stdout,
                    "" if proc.returncode == 0 else f" (exit {proc.returncode})",
                )
                if proc.returncode:
                    text += proc.stderr[-3000:]
            except subprocess.TimeoutExpired as e:
                text = (
                    (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
                )
                status = f" (timed out after {args.timeout:.0f} s)"
            secs = time.perf_counter() - t0
            print(text, flush=True)
            shown = shown.replace(f"{tmp}/", "<tmp>/")
            sections += [
                f"## {b.title}{status}",
                "",
                f"`{shown}` ({secs:.0f} s)",
                "",
                "```",
                text.rstrip().replace(f"{tmp}/", "<tmp>/"),
                "```",
                "",
            ]
            if b.name == "throughput" and Path(f"{tmp}/throughput.json").exists():
                summary = _summary(json.loads(Path(f"{tmp}/throughput.json").read_text()))
    if summary:
        lines += ["## Engines at a glance", "", *summary, ""]
    lines += sections
    kept = ""  # sections written by hand or by other commands (make bench-peers) stay
    if args.out.exists() and KEEP_MARKER in (old := args.out.read_text()):
        kept = old[old.index(KEEP_MARKER) :]
    args.out.write_text("\n".join(lines) + ("\n" + kept if kept else ""))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
