"""The same inversion attack against every defense: examples/inversion.toml under a grid of
``--set`` overrides, one run each, and a table of what the server could reconstruct.

A row whose keys the config does not know yet (a defense whose issue is not merged) is
skipped, and the table says so with the config error.

    .venv/bin/python benchmarks/suites/inversion_defenses.py [--targets 8] [--rows none,batch8]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import privfl
from privfl.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "inversion.toml"
LOCAL_DP = ["defense.dp.mode=local", "defense.dp.clip=1.0", "defense.dp.delta=1e-5"]

#: name -> overrides of examples/inversion.toml.
ROWS: dict[str, list[str]] = {
    "none": [],
    "batch8": ["data.clients=179", "federation.batch_size=8"],
    "batch32": ["data.clients=44", "federation.batch_size=32"],
    "steps5-idlg": ["federation.local_steps=5"],
    "steps5-ig": ["federation.local_steps=5", "attack.inversion.method=ig"],
    "local-dp-0.01": [*LOCAL_DP, "defense.dp.noise_multiplier=0.01"],
    "local-dp-0.1": [*LOCAL_DP, "defense.dp.noise_multiplier=0.1"],
    "local-dp-1": [*LOCAL_DP, "defense.dp.noise_multiplier=1.0"],
    "dp-sgd-1": [
        "defense.dp.mode=dpsgd",
        "defense.dp.noise_multiplier=1.0",
        "defense.dp.clip=1.0",
        "defense.dp.delta=1e-5",
    ],
    "central-dp-1": [
        "defense.dp.mode=central",
        "defense.dp.noise_multiplier=1.0",
        "defense.dp.clip=1.0",
        "defense.dp.delta=1e-5",
    ],
    "secagg": ["defense.secagg.threshold=0.6"],
    "he": ["defense.he.scheme=ckks"],
    # compressors (issue 11), without error feedback: round 1 has no residual anyway
    "topk-70": ["compression.method=topk", "compression.ratio=0.7"],
    "topk-40": ["compression.method=topk", "compression.ratio=0.4"],
    "topk-10": ["compression.method=topk", "compression.ratio=0.1"],
    "randk-10": ["compression.method=randk", "compression.ratio=0.1"],
    "qsgd-16": ["compression.method=qsgd", "compression.levels=16"],
    "qsgd-2": ["compression.method=qsgd", "compression.levels=2"],
    "sign": ["compression.method=sign"],
}


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=8, help="clients attacked per run")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    args = parser.parse_args()
    print(f"{'row':<15}{'records':>8}{'PSNR':>8}{'SSIM':>7}{'labels':>8}  status / note")
    for name in args.rows.split(","):
        sets = [*ROWS[name], f"attack.inversion.max_targets={args.targets}"]
        try:
            config = privfl.load_config(EXAMPLE, sets)
        except ConfigError as e:
            print(f"{name:<15}{'':>8}{'':>8}{'':>7}{'':>8}  skipped: {e}")
            continue
        result = privfl.run(config, out=None, progress=False)
        recs = result.attacks
        status = sorted({r["status"] for r in recs})
        notes = sorted({r.get("note", "") for r in recs} - {""})
        print(
            f"{name:<15}{len(recs):>8}"
            f"{_fmt(_median([r['psnr'] for r in recs]), '.1f'):>8}"
            f"{_fmt(_median([r['ssim'] for r in recs]), '.3f'):>7}"
            f"{_fmt(_median([r['label_accuracy'] for r in recs]), '.2f'):>8}"
            f"  {', '.join(status)}" + (f"; {notes[0]}" if notes else ""),
            flush=True,
        )


if __name__ == "__main__":
    main()
