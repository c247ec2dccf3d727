"""Memory: 10,000 registered clients on synthetic MNIST-shaped data stay under 2 GB RSS.

Client data are index arrays into one copy of the data set (``privfl.data.base.Partition``);
a round gathers only its cohort's examples. Each configuration runs in a fresh child process
(so peaks do not mix) that builds the federation, runs ``--rounds`` rounds with the given
engine, and reports its peak resident set size (``getrusage``'s ``ru_maxrss``) and the bytes
held by the data set and by the partition's index arrays.

    .venv/bin/python benchmarks/perf/memory.py [--clients 10000] [--per-client 12] [--rounds 2]

Target: peak RSS < 2 GB with 10,000 clients (every engine).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

LIMIT_BYTES = 2 * 1024**3


def child(clients: int, per_client: int, rounds: int, engine: str, partition: str) -> None:
    """Build and run one federation in this process; print a JSON line of figures."""
    import torch

    import privfl
    from privfl.federation import Federation

    train = clients * per_client
    samples = int(round(train / 0.8))
    cfg = privfl.config.config_from_dict(
        {
            "name": "memory",
            "data": {
                "name": "synthetic",
                "samples": samples,
                "shape": [1, 28, 28],
                "partition": partition,
                "clients": clients,
                **({"alpha": 1.0} if partition == "dirichlet" else {}),
            },
            "model": {"name": "mlp", "hidden": [200, 200]},
            "federation": {
                "rounds": rounds,
                "clients_per_round": 20,
                "batch_size": 10,
                "lr": 0.05,
                "engine": engine,
            },
        }
    )
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # after imports
    t0 = time.perf_counter()
    fed = Federation(cfg)
    setup_s = time.perf_counter() - t0
    for _ in range(rounds):
        fed.run_round()
    b = fed.data.bundle
    data_bytes = sum(t.element_size() * t.nelement() for t in (b.train.x, b.train.y, b.test.x))
    index_bytes = sum(i.nbytes for i in fed.data.partition.indices)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(
        json.dumps(
            {
                "engine": engine,
                "partition": partition,
                "clients": fed.data.num_clients,
                "train_examples": len(b.train),
                "data_mb": data_bytes / 2**20,
                "index_mb": index_bytes / 2**20,
                "peak_rss_mb": rss / 2**20,
                "import_rss_mb": base_rss / 2**20,
                "setup_s": setup_s,
                "threads": torch.get_num_threads(),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=10_000)
    ap.add_argument("--per-client", type=int, default=12, help="mean examples per client")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--engines", nargs="+", default=["sequential", "vectorized"])
    ap.add_argument("--partitions", nargs="+", default=["iid", "dirichlet"])
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        engine, partition = args.child[2], args.child[3]
        child(int(args.child[0]), int(args.child[1]), args.rounds, engine, partition)
        return
    rows = []
    print(
        f"Memory: {args.clients} registered clients x ~{args.per_client} synthetic 1x28x28 "
        f"examples, MLP 784-200-200-10, 20 a round, {args.rounds} rounds; peak RSS per process"
    )
    for partition in args.partitions:
        for engine in args.engines:
            cmd = [sys.executable, __file__, "--rounds", str(args.rounds), "--child"]
            cmd += [str(args.clients), str(args.per_client), engine, partition]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            ok = row["peak_rss_mb"] * 2**20 < LIMIT_BYTES
            print(
                f"  {partition:<9} {engine:<11} peak RSS {row['peak_rss_mb']:7.0f} MB "
                f"(data set {row['data_mb']:.0f} MB, {row['clients']} clients' index arrays "
                f"{row['index_mb']:.1f} MB, set-up {row['setup_s']:.1f} s) "
                f"{'< 2 GB' if ok else 'OVER 2 GB'}; "
                f"after imports alone {row['import_rss_mb']:.0f} MB"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
