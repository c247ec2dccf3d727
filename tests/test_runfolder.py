"""The run folder contract: files, determinism, and resume after a killed process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from conftest import small_config

import privfl
from privfl.data.federated import (
    SPARSE_LABEL_COUNTS_ABOVE,
    build_federated_data,
    label_counts_from_record,
    label_counts_record,
)
from privfl.errors import RunFolderError
from privfl.plots import partition_figure
from privfl.runfolder import RunFile, RunFolder

REQUIRED_KEYS = {"round", "test_accuracy", "test_loss", "clients", "dropped", "bytes_up"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_run_folder_holds_the_contract_files(tmp_path):
    cfg = small_config(name="contract", federation={"rounds": 3})
    res = privfl.run(cfg, out=tmp_path, progress=False)
    d = tmp_path / "contract"
    assert res.run_dir == d
    lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [1, 2, 3]
    assert all(REQUIRED_KEYS <= m.keys() for m in lines)
    assert lines == res.metrics
    # plain channel: every client sends dim float32 values
    dim = sum(p.numel() for p in res.model.parameters())
    assert all(m["bytes_up"] == 4 * dim * len(m["clients"]) for m in lines)
    timings = [json.loads(x) for x in (d / "timings.jsonl").read_text().splitlines()]
    assert [t["round"] for t in timings] == [1, 2, 3] and all(t["seconds"] > 0 for t in timings)
    assert privfl.load_config(d / "config.toml") == cfg
    ledger = json.loads((d / "ledger.json").read_text())
    assert ledger["events"] == [] and ledger["epsilon"] is None
    part = json.loads((d / "partition.json").read_text())
    assert sum(part["examples"]) == sum(map(sum, part["label_counts"]))
    assert "label_counts_sparse" not in part  # 10 classes: the dense table, as always
    assert label_counts_from_record(part).tolist() == part["label_counts"]
    for png in ("training", "partition"):
        data = (d / "plots" / f"{png}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    ckpt = torch.load(d / "checkpoint.pt", weights_only=True)
    assert ckpt["round"] == 3 and torch.equal(ckpt["params"], res.params)


def _counts_by_loop(data) -> list[list[int]]:
    """Each client's label histogram by counting its labels one by one."""
    y = data.bundle.train.y.tolist()
    table = []
    for idx in data.partition.indices:
        seen = Counter(y[i] for i in idx.tolist())
        table.append([seen.get(c, 0) for c in range(data.bundle.num_classes)])
    return table


def test_the_sparse_label_counts_read_back_to_exactly_the_dense_table():
    rng = np.random.default_rng(3)
    for classes in (SPARSE_LABEL_COUNTS_ABOVE, SPARSE_LABEL_COUNTS_ABOVE + 1, 5000):
        dense = rng.poisson(0.02, (7, classes)) * rng.integers(1, 9, (7, classes))
        dense[2] = 0  # a client without examples
        dense[4, [0, classes - 1]] = (11, 13)  # the first and the last label
        record = json.loads(json.dumps(label_counts_record(dense)))  # as the file holds it
        if classes <= SPARSE_LABEL_COUNTS_ABOVE:
            assert list(record) == ["label_counts"] and record["label_counts"] == dense.tolist()
        else:
            sparse = record["label_counts_sparse"]
            assert list(record) == ["label_counts_sparse"] and sparse["classes"] == classes
            for row, labels, counts in zip(dense, sparse["labels"], sparse["counts"], strict=True):
                assert labels == [c for c in range(classes) if row[c]]
                assert counts == [int(row[c]) for c in labels]
            assert sparse["labels"][2] == [] and sparse["labels"][4][0] == 0
        back = label_counts_from_record(record)
        assert back.dtype == np.int64 and np.array_equal(back, dense)
    with pytest.raises(RunFolderError, match="label_counts"):
        label_counts_from_record({"examples": [1]})


def test_a_word_level_run_writes_its_label_counts_sparse(tmp_path):
    cfg = privfl.Config(
        name="words",
        data={"name": "pydoc", "level": "word", "partition": "iid", "clients": 100, "seq_len": 8},
        model={"name": "word_lstm", "hidden": 16, "embedding_dim": 8, "projection": 8},
        federation={"rounds": 1, "clients_per_round": 2, "local_steps": 1, "batch_size": 8},
    )
    privfl.run(cfg, out=tmp_path, progress=False)
    path = tmp_path / "words" / "partition.json"
    part = json.loads(path.read_text())
    assert "label_counts" not in part and "label_counts_sparse" in part
    data = build_federated_data(cfg.data, cfg.seed)
    assert data.bundle.num_classes > 3000  # every training word of the pydoc topics
    counts = label_counts_from_record(part)
    assert counts.tolist() == _counts_by_loop(data)
    assert sum(part["examples"]) == counts.sum() == len(data.bundle.train)
    # What the file held before: the same record with the dense table, written the same way.
    dense = {k: v for k, v in part.items() if k != "label_counts_sparse"}
    dense["label_counts"] = counts.tolist()
    dense_bytes = len(json.dumps(dense, indent=2)) + 1
    sparse_bytes = path.stat().st_size
    assert sparse_bytes * 8 < dense_bytes, (sparse_bytes, dense_bytes)
    png = (tmp_path / "words" / "plots" / "partition.png").read_bytes()
    assert png.startswith(PNG_MAGIC)


def test_the_partition_plot_of_a_large_vocabulary_draws_its_most_frequent_labels():
    rng = np.random.default_rng(5)
    classes = 3000
    for clients in (6, 150):  # stacked bars, then the heatmap
        counts = rng.poisson(rng.pareto(1.2, classes) / 5, (clients, classes))
        totals = [int(counts[:, c].sum()) for c in range(classes)]
        by_frequency = sorted(range(classes), key=lambda c: (-totals[c], c))
        ax = partition_figure(counts, "words").axes[0]
        if clients <= 100:
            assert ax.get_title() == f"words (20 most frequent of {classes} labels)"
            bars = ax.containers
            assert [b.get_label() for b in bars] == [*map(str, by_frequency[:20]), "other"]
            for i in range(clients):  # each bar stacks to the client's examples
                top = bars[-1][i]
                assert top.get_y() + top.get_height() == counts[i].sum()
            assert [r.get_height() for r in bars[0]] == counts[:, by_frequency[0]].tolist()
        else:
            assert ax.get_title() == f"words (100 most frequent of {classes} labels)"
            shown = np.asarray(ax.images[0].get_array())
            assert shown.tolist() == counts[:, by_frequency[:100]].T.tolist()


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        privfl.run(small_config(name=name, seed=seed), out=tmp_path, progress=False)
    a, b, c = ((tmp_path / n / "metrics.jsonl").read_bytes() for n in "abc")
    assert a == b
    assert a != c


def test_existing_run_folder_is_not_clobbered(tmp_path):
    privfl.run(small_config(name="x", federation={"rounds": 1}), out=tmp_path, progress=False)
    with pytest.raises(RunFolderError, match="--resume"):
        privfl.run(small_config(name="x"), out=tmp_path, progress=False)
    privfl.run(
        small_config(name="x", federation={"rounds": 2}),
        out=tmp_path,
        overwrite=True,
        progress=False,
    )
    assert len((tmp_path / "x" / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_after_kill_gives_the_uninterrupted_numbers(tmp_path):
    cfg = small_config(
        name="long",
        data={"clients": 20},
        federation={
            "rounds": 12,
            "clients_per_round": 8,
            "local_epochs": 3,
            "server_optimizer": "fedadam",
            "server_lr": 0.02,
        },
    )
    cfg_path = tmp_path / "long.toml"
    cfg_path.write_text(tomli_w.dumps(cfg.to_toml_dict()))
    privfl.run(cfg, out=tmp_path / "ref", progress=False)

    cmd = [sys.executable, "-m", "privfl", "run", str(cfg_path), "--out", str(tmp_path / "k"), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = tmp_path / "k" / "long" / "metrics.jsonl"
    deadline = time.time() + 600  # generous: a loaded machine is slow, the loop breaks early
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(metrics.read_text().splitlines())
    assert 4 <= done < 12

    out = subprocess.run(
        [sys.executable, "-m", "privfl", "run", "--resume", str(tmp_path / "k" / "long"), "-q"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    ref = tmp_path / "ref" / "long"
    got = tmp_path / "k" / "long"
    assert metrics.read_bytes() == (ref / "metrics.jsonl").read_bytes()
    p_ref = torch.load(ref / "checkpoint.pt", weights_only=False)["params"]
    p_got = torch.load(got / "checkpoint.pt", weights_only=False)["params"]
    assert torch.equal(p_ref, p_got)
    assert len((got / "timings.jsonl").read_text().splitlines()) == 12


def test_resume_discards_records_after_the_checkpoint(tmp_path):
    cfg = small_config(name="r", federation={"rounds": 4}, checkpoint_every=2)
    privfl.run(cfg, out=tmp_path, progress=False)
    full = (tmp_path / "r" / "metrics.jsonl").read_bytes()
    folder = RunFolder(tmp_path / "r")
    # simulate a crash in round 4 after round 3's line was written, checkpoint at round 2
    fed = privfl.Federation(cfg, folder=None)
    fed.run_round()
    fed.run_round()
    folder.save_checkpoint(fed.state_dict())
    lines = full.decode().splitlines(keepends=True)
    folder.file(RunFile.METRICS).write_text("".join(lines[:3]) + '{"round": 4, "cut')
    res = privfl.resume(tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "metrics.jsonl").read_bytes() == full
    assert [m["round"] for m in res.metrics] == [1, 2, 3, 4]


def test_the_checkpoint_leaves_the_metrics_to_metrics_jsonl_and_stays_one_size(tmp_path):
    sizes = {}
    for rounds in (2, 20):
        cfg = small_config(name=f"n{rounds}", federation={"rounds": rounds})
        privfl.run(cfg, out=tmp_path, progress=False)
        ckpt = tmp_path / f"n{rounds}" / "checkpoint.pt"
        assert "metrics" not in torch.load(ckpt, weights_only=True)
        sizes[rounds] = ckpt.stat().st_size
    # The metrics held in it made each checkpoint ~1 KB a round larger than the last (and
    # its write time grew with the rounds run).
    assert abs(sizes[20] - sizes[2]) < 2000


def test_resume_reads_the_metrics_back_from_metrics_jsonl(tmp_path):
    cfg = small_config(name="m", federation={"rounds": 4}, checkpoint_every=2)
    full = privfl.run(cfg, out=tmp_path, progress=False)
    folder = RunFolder(tmp_path / "m")
    fed = privfl.Federation.resume(tmp_path / "m")
    assert fed.round == 4 and fed.metrics == folder.read_jsonl(RunFile.METRICS) == full.metrics
    # A checkpoint of the first format (the metrics inside) still resumes, with its metrics.
    old = {**fed.state_dict(), "format": 1}
    old["metrics"] = [{**m, "marker": True} for m in old["metrics"]]
    folder.save_checkpoint(old)
    assert all(m["marker"] for m in privfl.Federation.resume(tmp_path / "m").metrics)


def test_resume_refuses_a_metrics_file_that_lost_records(tmp_path):
    cfg = small_config(name="lost", federation={"rounds": 3})
    privfl.run(cfg, out=tmp_path, progress=False)
    metrics = tmp_path / "lost" / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(lines[0] + lines[2])  # round 2's record gone
    with pytest.raises(RunFolderError, match="one record for each round 1..3"):
        privfl.resume(tmp_path / "lost", progress=False)


def test_resume_of_a_non_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RunFolderError, match="not a run folder"):
        privfl.resume(tmp_path)


def test_package_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "privfl", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "run" in out.stdout
    assert Path(privfl.__file__).name == "__init__.py"


class _Payload:
    """A pickle that touches ``marker`` when unpickled (the attack of a crafted run folder)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_checkpoint_runs_no_code_and_is_refused(tmp_path):
    privfl.run(small_config(name="evil", federation={"rounds": 1}), out=tmp_path, progress=False)
    marker = tmp_path / "PAYLOAD_RAN"
    ckpt = tmp_path / "evil" / "checkpoint.pt"
    torch.save({"format": 1, "payload": _Payload(marker)}, ckpt)
    with pytest.raises(RunFolderError, match="refused"):
        privfl.resume(tmp_path / "evil", progress=False)
    assert not marker.exists()
    # The same through the CLI: exit 2, one line, no traceback.
    out = subprocess.run(
        [sys.executable, "-m", "privfl", "run", "--resume", str(tmp_path / "evil")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    "state",
    [
        [1, 2, 3],  # not a table
        {"format": 1},  # no params
        {"format": 1, "round": 1, "params": "weights"},  # params of the wrong type
        {"format": 1, "round": 1, "params": torch.zeros(3)},  # the wrong model
    ],
)
def test_a_malformed_checkpoint_is_a_run_folder_error(tmp_path, state):
    privfl.run(small_config(name="bad", federation={"rounds": 1}), out=tmp_path, progress=False)
    fmt = torch.load(tmp_path / "bad" / "checkpoint.pt", weights_only=True)["format"]
    if isinstance(state, dict):
        state = {**state, "format": fmt}
    torch.save(state, tmp_path / "bad" / "checkpoint.pt")
    with pytest.raises(RunFolderError):
        privfl.resume(tmp_path / "bad", progress=False)


class _OneRecordPerRound:
    """Test observer: one attack record each round (as an inversion attack writes)."""

    def observe(self, view, ctx):
        return [{"attack": "probe", "round": view.round}]

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _count_attack_writes(fed, monkeypatch) -> list[int]:
    writes: list[int] = []
    real = fed.folder.write_json

    def counting(name, data):
        if name == RunFile.ATTACKS:
            writes.append(len(data))
        real(name, data)

    monkeypatch.setattr(fed.folder, "write_json", counting)
    return writes


def test_attacks_json_is_rewritten_only_when_records_were_added(tmp_path, monkeypatch):
    cfg = small_config(name="quiet", federation={"rounds": 4})
    fed = privfl.Federation(cfg, folder=RunFolder.create(tmp_path, "quiet"))
    writes = _count_attack_writes(fed, monkeypatch)
    for _ in range(4):
        fed.run_round()
    assert writes == [0]  # the first checkpoint's empty list, then nothing to add
    assert json.loads(fed.folder.file(RunFile.ATTACKS).read_text()) == []
    cfg = small_config(name="loud", federation={"rounds": 3})
    fed = privfl.Federation(cfg, folder=RunFolder.create(tmp_path, "loud"))
    fed.stages.observers.append(_OneRecordPerRound())  # type: ignore[arg-type]
    writes = _count_attack_writes(fed, monkeypatch)
    for _ in range(3):
        fed.run_round()
    assert writes == [1, 2, 3]


def test_resume_rewrites_attacks_json_to_the_checkpoints_records(tmp_path):
    """A crash after attacks.json was written but before the checkpoint leaves records past
    the checkpoint in the file; the resumed run's next checkpoint writes the file again."""
    cfg = small_config(name="a", federation={"rounds": 4})
    privfl.run(cfg, out=tmp_path, progress=False)
    folder = RunFolder(tmp_path / "a")
    fed = privfl.Federation(cfg, folder=None)
    fed.run_round()
    fed.run_round()
    folder.save_checkpoint(fed.state_dict())  # the last checkpoint: round 2, no records
    folder.write_json(RunFile.ATTACKS, [{"attack": "probe", "round": 3}])  # round 3's, lost
    again = privfl.Federation.resume(tmp_path / "a")
    assert again.round == 2 and again.attacks == []
    again.run_round()
    assert json.loads(folder.file(RunFile.ATTACKS).read_text()) == []
