"""HE cost: CKKS and BFV aggregation beside plaintext aggregation, in one run.

For every d in {1e4, 1e5, 1e6} and n in {10, 50, 100}: per-client encryption time (encode,
encrypt, serialize, envelope), the server's time to check and add n clients' ciphertexts, the
key holder's decryption time, and the bytes a client sends; beside the plaintext weighted mean
of the same (n, d) float32 matrix and its 4 d bytes a client, and beside secure aggregation
(SecAgg+, the whole protocol without dropout, ``secagg_cost.run_cell``): its time per client,
its server's time and its bytes per client.

Method: each scheme and d get a fresh key holder, server and clients (the real parties of
privfl.defenses.he). For each n, a cohort of n clients is encoded (BFV's quantizer depends on
n) and the first K = 3 clients' messages are encrypted and timed (encryption does not depend on
n otherwise); with ``--workers W`` (W processes encrypting chunks in parallel, as
``[defense.he] workers`` does) the pool is started before anything is timed and the K clients
are timed together and divided by K. The server
then receives those K ciphertext sets under n distinct sender ids (each re-enveloped with its
own digest; that re-enveloping is timed separately and
subtracted), streamed one message at a time, and the decrypted mean is checked against the
float64 plaintext weighted mean of the same n updates. Server and plaintext timings alternate
(order flipped every repeat) and medians are reported; in-process encryption is also reported
in CPU time, which contention on this shared 2-core machine does not inflate.

    .venv/bin/python benchmarks/perf/he_cost.py [--scheme both] [--repeats 3] [--quick]
        [--workers 1] [--no-secagg]

Targets (issue 6): ciphertext expansion <= 8x float32 at d = 1e6; encryption <= 0.6 us per
parameter per client. Writes a Markdown table and a PNG under --out (default runs/bench/).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from privfl.aggregation import weighted_mean  # noqa: E402
from privfl.defenses.he import (  # noqa: E402
    BFV_DEFAULT,
    CKKS_PRESETS,
    BFVScheme,
    CKKSScheme,
    ClientEncryptor,
    HEScheme,
    HEServer,
    KeyHolder,
    Preset,
)
from privfl.defenses.he.check import RoundCheck, seal_voucher  # noqa: E402
from privfl.defenses.he.envelope import Envelope, MessageKind, read_envelope  # noqa: E402
from privfl.defenses.he.packing import chunk_count  # noqa: E402
from privfl.defenses.he.pool import resolve_workers  # noqa: E402
from privfl.update import UpdateBatch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from secagg_cost import run_cell  # noqa: E402

K = 3  # clients encrypted per (d, n)
MAX_WEIGHT = 600.0
EXPANSION_TARGET, ENCRYPT_TARGET_US = 8.0, 0.6


@dataclass
class Row:
    scheme: str
    d: int
    n: int
    encrypt_s: list[float] = field(default_factory=list)
    encrypt_cpu: list[float] = field(default_factory=list)
    server_s: list[float] = field(default_factory=list)
    decrypt_s: list[float] = field(default_factory=list)
    plain_s: list[float] = field(default_factory=list)
    client_bytes: int = 0
    aggregate_bytes: int = 0
    error: float = 0.0


@dataclass
class SecAggRow:
    """SecAgg+ on the same (d, n): seconds per client, server seconds, bytes per client."""

    client_s: list[float] = field(default_factory=list)
    server_s: list[float] = field(default_factory=list)
    client_bytes: float = 0.0


class Bench:
    """The parties of one scheme and d, and K clients' updates."""

    def __init__(self, scheme: HEScheme, dim: int, seed: int, workers: int = 1) -> None:
        self.scheme, self.dim, self.workers = scheme, dim, workers
        self.holder = KeyHolder(scheme, min_clients=1)
        self.clients = ClientEncryptor(
            scheme, self.holder.public_context, workers=workers, enrol=self.holder.enrol
        )
        self.round = 0  # the key holder decrypts one aggregate a round: a new round each run
        self.server = HEServer(scheme, self.holder.public_context)
        rng = np.random.default_rng(seed)
        self.deltas = torch.from_numpy((1e-2 * rng.standard_normal((K, dim))).astype(np.float32))
        self.weights = rng.integers(10, int(MAX_WEIGHT), K).astype(np.float64)
        self.chunks = chunk_count(dim, scheme.slots)
        if workers > 1:  # start the pool (fork, load the context) before anything is timed
            warm = UpdateBatch(
                client_ids=np.arange(workers, dtype=np.int64),
                deltas=torch.zeros((workers, scheme.slots * 4)),
                weights=np.ones(workers),
            )
            list(self.clients.encrypt(warm, round=1, rng=np.random.default_rng)[0])

    def run(self, row: Row) -> None:
        """Encrypt K clients of a cohort of n (timed), aggregate n senders, decrypt."""
        n = row.n
        self.round += 1
        r = self.round
        idx = torch.arange(n) % K
        batch = UpdateBatch(
            client_ids=np.arange(n, dtype=np.int64),
            deltas=self.deltas[idx],
            weights=self.weights[idx.numpy()],
        )
        messages, _ = self.clients.encrypt(batch, round=r, rng=np.random.default_rng)
        chunks, waited = [], 0.0
        for i in range(K):
            t0, c0 = time.perf_counter(), time.process_time()
            message = next(messages)
            waited += time.perf_counter() - t0
            if self.workers == 1:  # each client timed on its own
                row.encrypt_s.append(time.perf_counter() - t0)
                row.encrypt_cpu.append(time.process_time() - c0)
            row.client_bytes = len(message)
            chunks.append(self._chunks(message, i, r))
        if self.workers > 1:  # clients overlap in the pool: the mean of K; the workers' CPU
            row.encrypt_s.append(waited / K)  # time is not measured here
            row.encrypt_cpu.append(math.nan)
        produce = 0.0
        # Sender j sends client j % K's ciphertexts with its own voucher (their sketches,
        # sealed under j's key), made outside the timed part like the envelope.
        public = self.server._context
        check = RoundCheck(self.scheme, public, self.holder.enrol(0).check_key, r)
        sketches = [
            np.stack([check.sketch(self.scheme.load(public, c, "bench")) for c in chunks[i]])
            for i in range(K)
        ]

        def senders() -> Iterator[tuple[int, bytes]]:
            nonlocal produce
            for j in range(n):
                t0 = time.perf_counter()
                keys = self.holder.enrol(j)
                voucher = seal_voucher(
                    keys, key_id=self.holder.key_id, round=r, sketches=sketches[j % K]
                )
                env = Envelope(
                    MessageKind.UPDATE,
                    self.scheme.code,
                    self.holder.key_id,
                    r,
                    j,
                    1,
                    chunks[j % K],
                    ((j, voucher),),
                )
                data = env.to_bytes()
                produce += time.perf_counter() - t0
                yield j, data

        t0 = time.perf_counter()
        aggregate = self.server.aggregate(senders(), round=r, dim=self.dim)
        row.server_s.append(time.perf_counter() - t0 - produce)
        row.aggregate_bytes = len(aggregate)
        t0 = time.perf_counter()
        out = self.holder.decrypt(aggregate, round=r, dim=self.dim, count=n)
        row.decrypt_s.append(time.perf_counter() - t0)
        w = batch.weights
        ref = (w[:, None] * batch.deltas.numpy().astype(np.float64)).sum(0) / w.sum()
        row.error = max(row.error, float(np.linalg.norm(out.delta - ref) / np.linalg.norm(ref)))

    def _chunks(self, message: bytes, sender: int, round: int) -> tuple[bytes, ...]:
        return read_envelope(
            message,
            kind=MessageKind.UPDATE,
            scheme=self.scheme.code,
            key=self.holder.key_id,
            round=round,
            chunks=self.chunks,
            sender=sender,
        ).chunks


def _plain(dim: int, n: int, rng: np.random.Generator) -> float:
    deltas = torch.from_numpy(rng.standard_normal((n, dim), dtype=np.float32))
    weights = torch.from_numpy(rng.integers(10, int(MAX_WEIGHT), n).astype(np.float64))
    t0 = time.perf_counter()
    weighted_mean(deltas, weights)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scheme", default="both", choices=["ckks", "bfv", "both"])
    ap.add_argument("--preset", default="default", choices=[p.value for p in Preset])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="d up to 1e5, one repeat")
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    ap.add_argument(
        "--workers", type=int, default=1, help="encryption processes (0: one per CPU core)"
    )
    ap.add_argument("--no-secagg", action="store_true", help="leave the SecAgg+ columns out")
    args = ap.parse_args()
    workers = resolve_workers(args.workers)
    dims = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    ns = [10, 50, 100]
    repeats = 1 if args.quick else args.repeats
    schemes: dict[str, HEScheme] = {}
    if args.scheme in ("ckks", "both"):
        schemes["ckks"] = CKKSScheme(CKKS_PRESETS[Preset(args.preset)])
    if args.scheme in ("bfv", "both"):
        schemes["bfv"] = BFVScheme(BFV_DEFAULT, clip=1.0, max_weight=MAX_WEIGHT)
    load_start = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    rows = {(s, d, n): Row(s, d, n) for s in schemes for d in dims for n in ns}
    secagg = {} if args.no_secagg else {(d, n): SecAggRow() for d in dims for n in ns}
    for d in dims:
        benches = {s: Bench(scheme, d, seed=d, workers=workers) for s, scheme in schemes.items()}
        for rep in range(repeats):
            for n in ns:
                if secagg:
                    cell = run_cell(n, d, 0.0, "secagg+", seed=rep)
                    if not cell["sum_correct"]:
                        raise SystemExit(f"SecAgg+ gave a wrong sum: {cell}")
                    sa = secagg[(d, n)]
                    sa.client_s.append(cell["client_s"] / n)
                    sa.server_s.append(cell["server_s"])
                    sa.client_bytes = cell["bytes_per_client"]
                for s, bench in benches.items():
                    row = rows[(s, d, n)]
                    if rep % 2:
                        row.plain_s.append(_plain(d, n, rng))
                    bench.run(row)
                    if not rep % 2:
                        row.plain_s.append(_plain(d, n, rng))
    text = _report(schemes, rows, secagg, dims, ns, repeats, load_start, workers)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"he_cost_{args.scheme}"
    stem.with_suffix(".md").write_text(text)
    _plot(list(rows.values()), dims, ns, stem.with_suffix(".png"))
    print(f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.png')}")


def _report(
    schemes: dict[str, HEScheme],
    rows: dict[tuple[str, int, int], Row],
    secagg: dict[tuple[int, int], SecAggRow],
    dims: list[int],
    ns: list[int],
    repeats: int,
    load_start: float,
    workers: int,
) -> str:
    med = statistics.median
    lines = ["# HE cost", ""]
    lines += [f"- {s}: {scheme.describe()}" for s, scheme in schemes.items()]
    lines += [
        "",
        f"{repeats} repeat(s), medians; {K} timed client encryptions per (d, n) and repeat; "
        f"torch threads {torch.get_num_threads()}; load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} CPUs; encryption in "
        f"{workers} process(es) (CPU time: in-process encryption only). SecAgg+: the whole "
        "protocol, no dropout, k from neighbours = 'auto'; its time per client includes "
        "encoding, key agreement, secret sharing and masking.",
        "",
        "| scheme | d | n | encrypt s/client | encrypt us/param (CPU) | client bytes | expansion | "
        "server add s | plain agg s | server/plain | decrypt s | rel. error | SecAgg+ s/client | "
        "SecAgg+ server s | SecAgg+ bytes/client |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        enc, cpu = med(r.encrypt_s), med(r.encrypt_cpu)
        server, plain = med(r.server_s), med(r.plain_s)
        lines.append(
            f"| {r.scheme} | {r.d:.0e} | {r.n} | {enc:.3f} | {enc / r.d * 1e6:.2f} "
            f"({cpu / r.d * 1e6:.2f}) | {r.client_bytes:,} | {r.client_bytes / (4 * r.d):.2f}x | "
            f"{server:.3f} | {plain:.4f} | {server / plain:.0f}x | {med(r.decrypt_s):.3f} | "
            f"{r.error:.1e} | {_secagg_cells(secagg.get((r.d, r.n)))} |"
        )
    big = max(dims)
    lines.append("")
    for s, scheme in schemes.items():
        big_rows = [r for r in rows.values() if r.scheme == s and r.d == big]
        exp = big_rows[0].client_bytes / (4 * big)
        wall = med([t for r in big_rows for t in r.encrypt_s]) / big * 1e6
        cpu = med([t for r in big_rows for t in r.encrypt_cpu]) / big * 1e6
        lines += [
            f"- {s}, d = {big:.0e}: expansion {exp:.2f}x (target <= {EXPANSION_TARGET}x: "
            f"{'met' if exp <= EXPANSION_TARGET else 'MISSED'}); encryption in {workers} "
            f"process(es) {wall:.2f} us/param wall clock (target <= {ENCRYPT_TARGET_US}: "
            f"{'met' if wall <= ENCRYPT_TARGET_US else 'missed'}), "
            + (
                f"{cpu:.2f} CPU ({'met' if cpu <= ENCRYPT_TARGET_US else 'missed'})"
                if workers == 1
                else "CPU time not measured in the workers"
            )
            + f"; public context {len(KeyHolder(scheme).public_context):,} bytes per party.",
        ]
    return "\n".join(lines) + "\n"


def _secagg_cells(sa: SecAggRow | None) -> str:
    if sa is None:
        return "- | - | -"
    med = statistics.median
    return f"{med(sa.client_s):.3f} | {med(sa.server_s):.3f} | {sa.client_bytes:,.0f}"


def _plot(rows: list[Row], dims: list[int], ns: list[int], path: Path) -> None:
    med = statistics.median
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for s in sorted({r.scheme for r in rows}):
        one = [r for r in rows if r.scheme == s and r.n == ns[0]]
        enc = [med(r.encrypt_cpu) for r in one]
        if any(math.isnan(t) for t in enc):  # encrypted in worker processes: wall clock
            enc = [med(r.encrypt_s) for r in one]
        ax[0].loglog([r.d for r in one], enc, "o-", label=f"{s} encrypt")
        ax[0].loglog(
            [r.d for r in one], [med(r.decrypt_s) for r in one], "s--", label=f"{s} decrypt"
        )
        for d in dims:
            rs = [r for r in rows if r.scheme == s and r.d == d]
            ax[1].plot(ns, [med(r.server_s) for r in rs], "o-", label=f"{s}, d={d:.0e}")
        ax[2].semilogx([r.d for r in one], [r.client_bytes / (4 * r.d) for r in one], "o-", label=s)
    for d in dims:
        rs = [r for r in rows if r.scheme == rows[0].scheme and r.d == d]
        ax[1].plot(ns, [med(r.plain_s) for r in rs], "x:", color="k", label=f"plain, d={d:.0e}")
    ax[0].set(
        xlabel="d",
        ylabel="seconds per client",
        title="encrypt (in-process: CPU; workers: wall), decrypt",
    )
    ax[1].set(xlabel="n (clients)", ylabel="seconds", yscale="log", title="server aggregation")
    ax[2].axhline(EXPANSION_TARGET, color="grey", ls=":", label="target 8x")
    ax[2].axhline(1.0, color="k", ls="--", label="float32")
    ax[2].set(xlabel="d", ylabel="bytes / (4 d)", title="upload expansion")
    for a in ax:
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
