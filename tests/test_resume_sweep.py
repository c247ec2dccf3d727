"""Every section resumes to the uninterrupted numbers: the resume analogue of the engine sweep
(tests/test_combinations.py, whose BASE and VARIANTS it runs).

Each case runs a config for three rounds with a run folder, and again stopped after round 1 or
2 (the process gone after that round's checkpoint, as a kill leaves it) and resumed from the
folder to round 3. The resumed run must end with the uninterrupted model bit for bit, and
write the same run folder: every record of metrics.jsonl, ledger.json, attacks.json,
audit.json, contributions.json, threats.json, partition.json and report.md, wall-clock
``seconds`` apart, and the same final checkpoint (every stage's state: server optimizer,
error feedback, the FTRL tree, the clip bound, the clean twin, the node models, ...).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from test_combinations import CNN, VARIANTS, _merge, _raw

import privfl
from privfl.attacks.inversion.gallery import GalleryItem
from privfl.config import config_from_dict
from privfl.decentralized.runner import runner_class
from privfl.runfolder import RunFile, RunFolder, to_jsonable

ROUNDS = 3

# Stateful options VARIANTS leaves at their defaults, run the same way (on VARIANTS' BASE).
EXTRA: dict[str, dict[str, Any]] = {
    # the adaptive clip bound S, shared by the clients' clipping and the server's noise
    "dp-central-adaptive": {
        "defense": {
            "dp": {
                "mode": "central",
                "noise_multiplier": 1.0,
                "adaptive": True,
                "count_noise_multiplier": 1.0,
            }
        }
    },
    # the server's budget: rounds 1 and 2 fit under it (epsilon 6.07), round 3 not (7.49), so
    # the run stops after round 2 and the stop is written into ledger.json
    "dp-central-budget": {
        "defense": {"dp": {"mode": "central", "noise_multiplier": 1.0, "max_epsilon": 7.0}}
    },
    # the clients' budgets: round 2 retires five clients; round 3 excludes three of them
    # again and retires four more ("budget_retired" leaves out those the earlier rounds'
    # records name, which a resumed run reads back from metrics.jsonl)
    "dp-sample-budget": {
        "defense": {"dp": {"mode": "sample", "noise_multiplier": 1.0, "max_epsilon": 4.5}}
    },
    # the tree restarts after round 2; clients swapped out of consecutive rounds
    "dp-ftrl-restart": {
        "data": {"clients": 16},
        "defense": {
            "dp": {"mode": "ftrl", "noise_multiplier": 1.0, "restart_every": 2, "min_separation": 2}
        },
    },
    "he-bfv": {"defense": {"he": {"scheme": "bfv"}}},  # exact sums, but see test_he_...
    "robust-centeredclip": {"defense": {"robust": {"rule": "centered_clip"}}},  # last aggregate
    "optimizer-fedavgm": {"federation": {"server_optimizer": "fedavgm"}},
    "optimizer-fedyogi": {"federation": {"server_optimizer": "fedyogi"}},
    # the attack starts after the cut: the malicious clients' rounds are counted from the config
    "poisoning-late": {
        "attack": {"poisoning": {"method": "sign_flip", "fraction": 0.25, "start_round": 3}}
    },
    # the server attacks one client's update in rounds 1 and 3: a record on each side of the cut
    "membership-client": {
        "attack": {
            "membership": {
                "method": "lira",
                "target": "client",
                "rounds": [1, 3],
                "candidates": 20,
                "shadow_models": 2,
                "fixed_variance": True,
            }
        }
    },
    "evaluation-every2": {"evaluation": {"every": 2, "federated_every": 2}},
    # the node models under local DP: the gossip graph's state with a client stage
    "topology-ring-dplocal": {
        "federation": {"topology": "ring", "clients_per_round": 12},
        "defense": {"dp": {"mode": "local", "noise_multiplier": 1.0}},
    },
}

# What a VARIANTS entry needs so that its state crosses the cut (merged over it here only).
CROSSING: dict[str, dict[str, Any]] = {
    # an attack (and images kept for plots/inversion.png) on each side of the cut
    "inversion": {"attack": {"inversion": {"rounds": [1, 3]}}},
    # VARIANTS' deadline drops every client (8 steps at 1 or 2 steps a second > 1.5 s), so the
    # model would never move: here the faster half of the clients make it
    "heterogeneity-deadline": {"federation": {"heterogeneity": {"deadline": 6.0}}},
}


def _raw_case(variant: str, model: str) -> dict[str, Any]:
    raw = _raw(variant) if variant in VARIANTS else _merge(_raw(), EXTRA[variant])
    raw = _merge(raw, CROSSING.get(variant, {}))
    raw = _merge(raw, {"name": f"{variant}-{model}", "federation": {"rounds": ROUNDS, "lr": 0.5}})
    return _merge(raw, {"model": CNN}) if model == "cnn" else raw


# The MLP is cut after round 1 and the CNN after round 2: every variant's state crosses the
# checkpoint once young (one round of history) and once with a round of history before it.
CASES = [
    pytest.param(v, model, stop, id=f"{v}-{model}-stop{stop}")
    for model, stop in (("mlp", 1), ("cnn", 2))
    for v in [*VARIANTS, *EXTRA]
    if not (model == "cnn" and v.startswith(("membership", "inversion")))  # observers only
    and v not in ("he", "he-bfv")  # test_he_resumes_with_a_new_key
]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: these models are too small to gain from two, and on a shared
    machine the second's barriers made the sweep several times slower. Both runs of a case
    use the same count, which is all that bit-for-bit equality asks."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _plots_as_data(monkeypatch):
    """The run folder's training and partition plots and the inversion gallery written as
    the data they draw (JSON), not drawn: matplotlib took a quarter of a case's time (the
    gallery's 256 panels two thirds of the inversion case's), and data compares exactly."""
    import privfl.attacks.inversion.observer
    import privfl.plots

    def as_data(data: Any, path: Path, title: str = "") -> Path:
        if isinstance(data, list) and data and isinstance(data[0], GalleryItem):
            data = [(g.title, g.original, g.reconstruction) for g in data]
        path.write_text(json.dumps({"title": title, "data": to_jsonable(data)}))
        return path

    monkeypatch.setattr(privfl.plots, "plot_training", as_data)
    monkeypatch.setattr(privfl.plots, "plot_partition", as_data)
    monkeypatch.setattr(privfl.attacks.inversion.observer, "plot_gallery", as_data)


def _cut(cfg: privfl.Config, out: Path, rounds: int) -> RunFolder:
    """The run folder of ``cfg`` in ``out`` as :func:`privfl.run` writes it, its process gone
    after round ``rounds`` (as a kill leaves it)."""
    folder = RunFolder.create(out, cfg.name)
    fed = runner_class(cfg)(cfg, folder=folder)
    folder.write_toml(RunFile.CONFIG, cfg.to_toml_dict())
    for _ in range(rounds):
        fed.run_round()
    return folder


def _quiet_runs(
    cfg: privfl.Config, out: Path, stop: int
) -> tuple[privfl.RunResult, privfl.RunResult, torch.Tensor]:
    """``cfg`` run uninterrupted, and cut after round ``stop`` and resumed; with the model
    of the checkpoint the resumed run started from."""
    logging.disable(logging.WARNING)
    try:
        full = privfl.run(cfg, out=out / "full", progress=False)
        folder = _cut(cfg, out / "cut", stop)
        state = torch.load(folder.file(RunFile.CHECKPOINT), weights_only=True)
        assert state["round"] == stop
        return full, privfl.resume(folder.path, progress=False), state["params"]
    finally:
        logging.disable(logging.NOTSET)


def _wall_clock(key: Any) -> bool:
    return isinstance(key, str) and (key == "seconds" or key.endswith("_seconds"))


def _assert_same(a: Any, b: Any, where: str) -> None:
    """``a`` and ``b`` equal, tensors bit for bit, wall-clock ``seconds`` left out."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {a.keys()} != {b.keys()}"
        for k in a:
            if not _wall_clock(k):
                _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"  # NaN == NaN here


#: Files that differ between two runs of one config: wall-clock times and the processes.
NOT_REPRODUCIBLE = {RunFile.TIMINGS.value, RunFile.ENVIRONMENT.value}


def _read(path: Path) -> Any:
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if path.suffix == ".pt":
        return torch.load(path, weights_only=True)
    return path.read_bytes()


def _assert_same_folder(a: Path, b: Path) -> list[str]:
    """The run folders ``a`` and ``b`` hold the same files with the same contents, but for
    wall-clock figures and the plots drawn (PNGs, compared by name; the data that
    :func:`_plots_as_data` writes in place of a plot in both folders is compared); returns
    the names."""
    names = sorted(p.name for p in a.iterdir() if p.is_file() and p.name not in NOT_REPRODUCIBLE)
    assert names == sorted(
        p.name for p in b.iterdir() if p.is_file() and p.name not in NOT_REPRODUCIBLE
    )
    for name in names:
        _assert_same(_read(a / name), _read(b / name), name)
    # metrics.jsonl holds no wall-clock figure: byte for byte (what the kill test checks)
    assert (a / RunFile.METRICS).read_bytes() == (b / RunFile.METRICS).read_bytes()
    plots = sorted(p.name for p in (a / RunFile.PLOTS).iterdir())
    assert plots == sorted(p.name for p in (b / RunFile.PLOTS).iterdir())
    for name in plots:
        data = [(d / RunFile.PLOTS / name).read_bytes() for d in (a, b)]
        if not any(x.startswith(b"\x89PNG") for x in data):  # both data: a fresh process draws
            assert data[0] == data[1], name
    return names


@pytest.mark.parametrize(("variant", "model", "stop"), CASES)
def test_every_section_resumes_to_the_uninterrupted_run(variant, model, stop, tmp_path):
    cfg = config_from_dict(_raw_case(variant, model))
    full, got, cut = _quiet_runs(cfg, tmp_path, stop)
    assert torch.equal(got.params, full.params)
    assert got.metrics == full.metrics
    _assert_same(got.attacks, full.attacks, "attacks")
    names = _assert_same_folder(full.run_dir, got.run_dir)
    assert {"metrics.jsonl", "ledger.json", "attacks.json", "checkpoint.pt"} <= set(names)
    if variant != "dp-central-budget":
        assert got.metrics[-1]["round"] == ROUNDS
        assert not torch.equal(got.params, cut)  # the resumed rounds trained: not vacuous
    else:  # the budget stopped both runs after round 2, and both say so
        assert [m["round"] for m in got.metrics] == [1, 2]
        assert json.loads((got.run_dir / RunFile.LEDGER).read_text())["stopped"]["round"] == 3


@pytest.mark.parametrize("variant", ["he", "he-bfv"])
def test_he_resumes_with_a_new_key(variant, tmp_path):
    """HE cannot resume byte for byte. SEAL draws its encryption randomness from the OS (a
    key seeded from config.toml would follow from it) and the checkpoint holds no key
    material, so a resumed run has a new key holder whose public context goes again to the
    server and to every client of its first round (``he_context_bytes``, the context's size
    times the parties that had none), and the compressed random ciphertexts vary by a few
    bytes between any two runs. BFV sums exactly: the model and every other figure are the
    uninterrupted run's. CKKS adds its approximate arithmetic's noise (~1e-9 a sum), so the
    cohorts, drops and counts are the same and the model the same up to that noise."""
    cfg = config_from_dict(_raw_case(variant, "mlp"))
    full, got, _ = _quiet_runs(cfg, tmp_path, stop=1)
    state = torch.load(got.run_dir / RunFile.CHECKPOINT, weights_only=True)
    assert state["stages"]["channel"] == {}  # no key travels in the checkpoint
    context = "he_context_bytes"
    size = full.metrics[0][context] / (len(full.metrics[0]["clients"]) + 1)
    for run, starts in ((full, {1}), (got, {1, 2})):  # each process's first round
        seen: set[int] = set()
        for m in run.metrics:
            seen = set() if m["round"] in starts else seen
            parties = len(set(m["clients"]) - seen) + (m["round"] in starts)  # server too
            seen |= set(m["clients"])
            assert m[context] == pytest.approx(parties * size, rel=1e-3)
    for m_got, m_full in zip(got.metrics, full.metrics, strict=True):
        assert m_got.keys() == m_full.keys()
    if variant == "he-bfv":
        assert torch.equal(got.params, full.params)
        strip = [{k: v for k, v in m.items() if k != context} for m in got.metrics]
        assert strip == [{k: v for k, v in m.items() if k != context} for m in full.metrics]
        return
    torch.testing.assert_close(got.params, full.params, rtol=0, atol=1e-5)
    exact = ("round", "clients", "dropped", "aggregated", "bytes_down", "examples", "he_rejected")
    assert [{k: m[k] for k in exact} for m in got.metrics] == [
        {k: m[k] for k in exact} for m in full.metrics
    ]
    for m_got, m_full in zip(got.metrics, full.metrics, strict=True):
        assert m_got["bytes_up"] == pytest.approx(m_full["bytes_up"], rel=1e-3)
        assert m_got["test_loss"] == pytest.approx(m_full["test_loss"], abs=1e-5)


def test_secure_rng_resumes_with_fresh_noise_and_the_same_spending(tmp_path):
    """``defense.dp.secure_rng`` draws the noise from the OS on every draw, so no run repeats
    another (docs/design.md, "Randomness") and a resumed one goes on with fresh noise. What
    does not depend on the draws must still be the uninterrupted run's: the cohorts (local
    DP keeps the seeded sampler), every privacy event and so the epsilon in ledger.json; and
    the rounds before the checkpoint keep the records the killed process wrote."""
    raw = _merge(_raw_case("dp-local", "mlp"), {"defense": {"dp": {"secure_rng": True}}})
    cfg = config_from_dict(raw)
    logging.disable(logging.WARNING)
    try:
        full = privfl.run(cfg, out=tmp_path / "full", progress=False)
        folder = _cut(cfg, tmp_path / "cut", 1)
        before = folder.file(RunFile.METRICS).read_text()
        got = privfl.resume(folder.path, progress=False)
    finally:
        logging.disable(logging.NOTSET)
    assert folder.file(RunFile.METRICS).read_text().startswith(before)
    assert [m["clients"] for m in got.metrics] == [m["clients"] for m in full.metrics]
    assert not torch.equal(got.params, full.params)  # fresh noise, as documented
    ledgers = [json.loads((d / RunFile.LEDGER).read_text()) for d in (full.run_dir, folder.path)]
    assert ledgers[0]["events"] == ledgers[1]["events"] and ledgers[0]["events"]
    assert ledgers[0]["epsilon"] == ledgers[1]["epsilon"]


# A run killed past a checkpoint it did not write: one checkpoint every two rounds, the process
# gone after round 3 (its record in metrics.jsonl and timings.jsonl, the last checkpoint round
# 2's), resumed in a fresh process by the CLI. One config crossing many stateful pieces at once:
# FedAdam's moments, top-k's error feedback, the clean twin, the incentives' running scores, an
# inversion attack on each side of the checkpoint, heterogeneous local steps.
KILLED = _merge(
    _raw("optimizer-fedadam", "compression-topk", "poisoning-alie", "incentives"),
    {
        "name": "killed",
        "checkpoint_every": 2,
        "federation": {
            "rounds": 4,
            "lr": 0.5,
            "server_lr": 0.01,
            "heterogeneity": {"local_steps": "uniform(1, 3)"},
        },
        "attack": {
            "inversion": {"method": "idlg", "max_targets": 1, "iterations": 5, "rounds": [1, 3, 4]}
        },
    },
)


@pytest.mark.slow  # 11 s: the resumed run imports torch and draws its plots anew
def test_a_run_killed_past_its_checkpoint_resumes_in_a_fresh_process(tmp_path):
    cfg = config_from_dict(KILLED)
    logging.disable(logging.WARNING)
    try:
        full = privfl.run(cfg, out=tmp_path / "full", progress=False)
        folder = _cut(cfg, tmp_path / "cut", 3)
    finally:
        logging.disable(logging.NOTSET)
    assert full.metrics[-1]["test_accuracy"] > full.metrics[0]["test_accuracy"]  # it learns
    assert torch.load(folder.file(RunFile.CHECKPOINT), weights_only=True)["round"] == 2
    assert len(folder.read_jsonl(RunFile.METRICS)) == 3
    out = subprocess.run(
        [sys.executable, "-m", "privfl", "run", "--resume", str(folder.path), "-q"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    _assert_same_folder(full.run_dir, folder.path)
