"""The same config and seed give the same numbers in a fresh process, whatever its string-hash
salt (``PYTHONHASHSEED``, hence the order of sets of strings), time zone, clock or global RNG
seeds (docs/design.md, "Randomness"): every section of tests/test_combinations.py (its
VARIANTS, BFV beside them, and the small CNN of its engine sweep under a few), run for two
rounds through ``privfl.run`` into a run folder, in two processes that differ in all of those.
The first process also runs every case a second time after all of them, which catches state
leaking from one run into the next (a module-level RNG or a cache).

A case's digest: the final model's bytes (sha256 of ``params.numpy().tobytes()``), the
metrics records, the ledger's epsilon, the attack records, and every file of the run folder
(``metrics.jsonl``, ``ledger.json``, ``attacks.json``, ``audit.json``, ``partition.json``,
``threats.json``, ``contributions.json``, the reports and plots, ``config.toml``, and the
checkpoint's state as ``resume`` reads it) but those written from the clock or the machine.
What the design keeps out of the seed on purpose is compared as the design promises (see
SKIP_FILES, WALL_CLOCK, HE_OS_BYTES and CKKS_ATOL).

This file is also the subprocesses' script: they import it and call :func:`main`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch

ROUNDS = 2
# The small CNN (the batched CNN kernel, DP-SGD's per-example gradients of convolutions) under
# the sections whose draws reach the model most directly.
CNN_CASES = ("dp-sample", "dp-central", "compression-randk", "heterogeneity-steps")
# Not a section of test_combinations: BFV, the HE scheme the design calls exact.
EXTRA = {"he-bfv": {"defense": {"he": {"scheme": "bfv"}}}}
# Run-folder files written from the clock or the machine: wall-clock seconds (docs/design.md,
# "Wall-clock time lives in timings.jsonl") and the environment (host, versions, commit).
SKIP_FILES = {"timings.jsonl", "environment.json"}
# Wall-clock cost that attack and contribution records carry beside their figures
# (attacks.json: inversion and membership; contributions.json and the contribution observer's
# checkpointed state), dropped at any depth.
WALL_CLOCK = "seconds"
# HE metrics that follow the OS's randomness by design (docs/he.md: "Encryption draws fresh
# randomness from the OS"; SEAL's key must not follow from the seed). SEAL compresses its
# random public key and ciphertexts, so byte counts vary by a few bytes between runs: BFV's
# context only (BFV's model and other metrics are exact); CKKS's ciphertexts too.
HE_OS_BYTES = {
    "he-bfv": ("he_context_bytes",),
    "he": ("he_context_bytes", "bytes_up", "he_aggregate_bytes", "he_expansion"),
}
# CKKS is exact up to its encryption noise (~1e-9, docs/he.md), so its model and the metrics
# of that model are compared to this tolerance instead of bit for bit.
CKKS = "he"
CKKS_ATOL = 1e-6

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def cases() -> list[str]:
    """Every case, as ``variant/model``."""
    from test_combinations import VARIANTS

    return [f"{v}/mlp" for v in [*VARIANTS, *EXTRA]] + [f"{v}/cnn" for v in CNN_CASES]


def _config(case: str) -> Any:
    from test_combinations import CNN, VARIANTS, _merge, _raw

    from privfl.config import config_from_dict

    variant, model = case.split("/")
    raw = _raw(variant) if variant in VARIANTS else _merge(_raw(), EXTRA[variant])
    raw = _merge(raw, {"name": f"{variant}-{model}", "federation": {"rounds": ROUNDS}})
    if model == "cnn":
        raw = _merge(raw, {"model": CNN})
    return config_from_dict(raw)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def _no_clock(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _no_clock(v) for k, v in obj.items() if k != WALL_CLOCK}
    if isinstance(obj, list):
        return [_no_clock(v) for v in obj]
    return obj


def _digest(case: str, out: Path) -> dict[str, Any]:
    """Run ``case`` into a run folder under ``out``; what must agree between its runs."""
    import privfl

    logging.disable(logging.WARNING)
    try:
        res = privfl.run(_config(case), out=out, progress=False)
    finally:
        logging.disable(logging.NOTSET)
    assert len(res.metrics) == ROUNDS and res.run_dir is not None
    variant = case.split("/")[0]
    os_bytes = HE_OS_BYTES.get(variant, ())
    ckks = variant == CKKS
    params = res.params.detach().cpu().contiguous()
    metrics = [{k: v for k, v in r.items() if k not in os_bytes} for r in res.metrics]
    digest: dict[str, Any] = {
        # CKKS: the values themselves, compared to CKKS_ATOL
        "params": params.double().tolist() if ckks else _sha(params.numpy().tobytes()),
        "metrics": metrics if ckks else _sha(_canonical(metrics)),
        "epsilon": res.ledger.to_json().get("epsilon"),
        "attacks": _sha(_canonical(_no_clock(res.attacks))),
    }
    for path in sorted(res.run_dir.rglob("*")):
        name = path.relative_to(res.run_dir).as_posix()
        if not path.is_file() or name in SKIP_FILES:
            continue
        if os_bytes and name == "metrics.jsonl":
            continue  # its records are "metrics", less the OS-dependent byte counts
        if ckks and name.endswith(".png"):
            continue  # the curves of losses that differ by the CKKS noise
        data = path.read_bytes()
        if name.endswith(".json"):
            data = _canonical(_no_clock(json.loads(data)))
        elif name == "checkpoint.pt":  # every stage's state, read back as resume reads it
            state = torch.load(path, weights_only=True)
            if ckks:
                state.pop("params")  # the "params" digest, to CKKS_ATOL
            data = _canonical(_no_clock(_tensors_hashed(state)))
        digest[f"file:{name}"] = _sha(data)
    return digest


def _tensors_hashed(obj: Any) -> Any:
    """``obj`` with each tensor replaced by its dtype, shape and the digest of its bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        return [str(t.dtype), list(t.shape), _sha(t.numpy().tobytes())]
    if isinstance(obj, dict):
        return {str(k): _tensors_hashed(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_tensors_hashed(v) for v in obj]
    return obj


def _perturb(salt: int) -> None:
    """Give this process its own global RNG seeds and, for ``salt`` > 0, a clock days ahead
    (the parent sets PYTHONHASHSEED and TZ). Called before privfl is imported."""
    import random

    import numpy as np

    random.seed(salt)
    np.random.seed(salt)
    torch.manual_seed(salt)
    if salt:
        shift = 3 * 86_400 + 12_345.678 * salt
        wall, wall_ns = time.time, time.time_ns
        time.time = lambda: wall() + shift
        time.time_ns = lambda: wall_ns() + int(shift * 1e9)


def main(argv: list[str]) -> None:
    """``salt passes [case ...]``: run the cases (all by default) ``passes`` times and print
    one JSON line per case and pass."""
    salt, passes, *chosen = argv
    _perturb(int(salt))
    torch.set_num_threads(1)  # the two processes share the cores
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(int(passes)):
            for case in chosen or cases():
                start = time.perf_counter()
                digest = _digest(case, Path(tmp) / f"pass{p}")
                seconds = round(time.perf_counter() - start, 2)
                line = {"case": case, "pass": p, "seconds": seconds, "digest": digest}
                print(json.dumps(line), flush=True)


def _launch(salt: int, hashseed: str, tz: str, passes: int, chosen: list[str]) -> Any:
    env = {**os.environ, "PYTHONHASHSEED": hashseed, "TZ": tz}
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
        "import test_reproducible_sweep as s; s.main(sys.argv[1:])"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(salt), str(passes), *chosen],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collect(proc: Any) -> dict[tuple[str, int], dict[str, Any]]:
    out, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, err[-4000:]
    return {(x["case"], x["pass"]): x for x in map(json.loads, out.splitlines())}


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The parts in which two digests of a case differ (CKKS's values beyond CKKS_ATOL)."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, list) and isinstance(y, list):
            if not _close(x, y):
                out.append(f"{key} (beyond {CKKS_ATOL})")
        elif x != y:
            out.append(f"{key}: {x!r} != {y!r}")
    return out


def _close(x: Any, y: Any) -> bool:
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_close(u, v) for u, v in zip(x, y, strict=True))
    if isinstance(x, float) and isinstance(y, float):
        return abs(x - y) <= CKKS_ATOL
    return x == y


def sweep(chosen: list[str] | None = None) -> list[str]:
    """Run the cases in the two processes; the differences found, one line per case."""
    chosen = chosen or cases()
    # The first process: hash salt 0, UTC, global seeds 0, and every case twice (pass 1 after
    # all of pass 0). The second: another salt, time zone, clock and global seeds. A set of
    # two strings keeps its order under about half of the salts; 1000 reverses the order salt
    # 0 gives to pairs of section names ({"defense.secagg", "defense.dp"} and
    # {"attack.poisoning", "defense.robust"}), 12345 keeps both.
    first = _launch(0, "0", "UTC", 2, chosen)
    second = _launch(1, "1000", "Pacific/Kiritimati", 1, chosen)
    a, b = _collect(first), _collect(second)
    problems = []
    for case in chosen:
        ref = a[(case, 0)]["digest"]
        for what, other in (("another process", b[(case, 0)]), ("a rerun", a[(case, 1)])):
            diff = _differences(ref, other["digest"])
            if diff:
                problems.append(f"{case} differs in {what}: {'; '.join(diff)}")
    slowest = sorted(chosen, key=lambda c: -a[(c, 0)]["seconds"])[:5]
    print("slowest cases (s):", {c: a[(c, 0)]["seconds"] for c in slowest})
    return problems


# The default suite's share: one cheap case of each kind of draw (DP-SGD's lots and noise,
# central DP's Poisson cohorts and noise on the CNN, local DP's per-client noise, SecAgg+'s
# dropouts, BFV, FLTrust's root data, the poisoners' choice, LiRA's shadows, the one-run
# audit's canaries, rand-k's coordinates, drawn local steps, Poisson cohorts, the incentive
# scores, D-PSGD's gossip): ~12 s a pass on an idle core, against ~28 s for every case.
FAST = [
    "dp-sample/mlp",
    "dp-central/cnn",
    "dp-local/mlp",
    "secagg/mlp",
    "he-bfv/mlp",
    "robust-fltrust/mlp",
    "poisoning-alie/mlp",
    "membership/mlp",
    "audit-onerun/mlp",
    "compression-randk/mlp",
    "heterogeneity-steps/mlp",
    "sampling-poisson/mlp",
    "incentives/mlp",
    "topology-ring/mlp",
]


def test_a_case_of_each_kind_of_draw_gives_the_same_numbers_in_another_process_and_on_a_rerun():
    assert set(FAST) <= set(cases())
    problems = sweep(FAST)
    assert not problems, "\n".join(problems)


# ~60 s on two idle cores (~90 s of CPU, three passes of ~28 s and the imports), more while
# other jobs run: the slow suite.
@pytest.mark.slow
def test_every_section_gives_the_same_numbers_in_another_process_and_on_a_rerun():
    problems = sweep()
    assert not problems, "\n".join(problems)


def test_the_digest_sees_a_changed_model_and_what_it_leaves_out():
    """The comparison itself: one changed bit of a model or file is a difference; CKKS's
    values agree within CKKS_ATOL only; wall-clock seconds are no part of a record."""
    ref = {"params": "ab", "file:ledger.json": "cd", "epsilon": 1.5}
    assert _differences(ref, dict(ref)) == []
    assert _differences(ref, {**ref, "params": "ac"}) == ["params: 'ab' != 'ac'"]
    assert _differences(ref, {**ref, "epsilon": 1.5000001}) == ["epsilon: 1.5 != 1.5000001"]
    assert _differences(ref, {k: v for k, v in ref.items() if k != "file:ledger.json"})
    ckks = {"params": [0.5, -1.0], "metrics": [{"test_loss": 2.0, "clients": [1, 2]}]}
    near = {"params": [0.5 + 1e-9, -1.0], "metrics": [{"test_loss": 2.0 + 1e-9, "clients": [1, 2]}]}
    assert _differences(ckks, near) == []
    far = {**near, "metrics": [{"test_loss": 2.0, "clients": [1, 3]}]}
    assert _differences(ckks, far) == [f"metrics (beyond {CKKS_ATOL})"]
    record = {"auc": 0.5, "seconds": 1.2, "by_round": [{"values": [0.1], "seconds": 0.3}]}
    assert _no_clock(record) == {"auc": 0.5, "by_round": [{"values": [0.1]}]}


if __name__ == "__main__":
    main(sys.argv[1:])
