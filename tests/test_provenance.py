"""environment.json: each process that runs rounds of a run records its versions, CPU, GEMM
library and device (the things besides the seed that decide a run's digits)."""

from __future__ import annotations

import json

import torch
from conftest import small_config

import privfl
from privfl.engine import gemm
from privfl.runfolder import RunFile, RunFolder


def _records(run_dir) -> list[dict]:
    return json.loads((run_dir / "environment.json").read_text())


def test_a_run_records_what_it_ran_on(tmp_path, gemm_library):
    privfl.run(small_config(name="e", federation={"rounds": 1}), out=tmp_path, progress=False)
    (rec,) = _records(tmp_path / "e")
    assert rec["from_round"] == 1
    assert rec["gemm"] == gemm_library  # the library this process's kernels used
    assert rec["conv_weights"] == ("onednn" if gemm_library == "onednn" else "patches")
    assert rec["cpu"]["family"] == gemm.cpu_family()
    assert rec["torch"] == torch.__version__
    assert rec["device"] == "cpu"
    assert rec["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert rec["cpu"]["vendor"] == gemm.cpu_vendor()
    assert rec["cpu"]["torch_threads"] == torch.get_num_threads()


def test_a_resumed_run_adds_a_record_for_its_rounds(tmp_path):
    cfg = small_config(name="r", federation={"rounds": 3})
    privfl.run(cfg, out=tmp_path, progress=False)
    folder = RunFolder(tmp_path / "r")
    fed = privfl.Federation(cfg, folder=None)  # a run cut short after round 1
    fed.run_round()
    folder.save_checkpoint(fed.state_dict())
    privfl.resume(tmp_path / "r", progress=False)
    first, second = _records(tmp_path / "r")
    assert (first["from_round"], second["from_round"]) == (1, 2)


def test_an_unreadable_record_file_is_started_afresh(tmp_path):
    cfg = small_config(name="g", federation={"rounds": 2})
    privfl.run(cfg, out=tmp_path, progress=False)
    folder = RunFolder(tmp_path / "g")
    folder.file(RunFile.ENVIRONMENT).write_text('{"not": "a list"')  # cut JSON
    fed = privfl.Federation(cfg, folder=None)
    fed.run_round()
    folder.save_checkpoint(fed.state_dict())
    privfl.resume(tmp_path / "g", progress=False)
    (rec,) = _records(tmp_path / "g")
    assert rec["from_round"] == 2


def test_the_record_names_the_source_commit(tmp_path):
    import subprocess
    from pathlib import Path

    from privfl.provenance import source_commit

    root = Path(privfl.__file__).resolve().parents[1]
    top = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True
    )
    git = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True)
    privfl.run(small_config(name="s", federation={"rounds": 1}), out=tmp_path, progress=False)
    (rec,) = _records(tmp_path / "s")
    assert rec["source"] == source_commit()
    if top.returncode == 0 and Path(top.stdout.decode().strip()).resolve() == root:
        head = git.stdout.decode().strip()  # a checkout: its HEAD, marked when files changed
        assert rec["source"] in (head, f"{head}+dirty")
    else:  # an installed copy, outside git or inside another tree
        assert rec["source"] is None


def test_a_copy_inside_another_git_tree_gives_no_commit(monkeypatch, tmp_path):
    import subprocess

    from privfl import provenance

    class Done:
        stdout = f"{tmp_path}\n"  # the enclosing tree's top, not privfl's checkout

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: Done())
    provenance.source_commit.cache_clear()
    try:
        assert provenance.source_commit() is None
    finally:
        provenance.source_commit.cache_clear()


def test_no_git_gives_no_commit(monkeypatch):
    import subprocess

    from privfl import provenance

    def missing(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", missing)
    provenance.source_commit.cache_clear()
    try:
        assert provenance.source_commit() is None
    finally:
        provenance.source_commit.cache_clear()
