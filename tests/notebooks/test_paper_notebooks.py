"""The paper notebooks: each committed notebook holds its jupytext source's cells and the outputs
of an execution at the default scale (inline figures, a "paper vs ours" table with mean ± std
over seeds), and each source executes fresh at ``PRIVFL_SCALE=small`` in a real kernel, drawing
its figures inline and printing its table."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist-10k"  # tests may use it; privfl may not


def _tool():
    spec = importlib.util.spec_from_file_location("nbtool", ROOT / "tools" / "notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _tool()
SOURCES = TOOL.sources()


def _outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _table_text(nb) -> str:
    """The Markdown the notebook shows: its markdown cells and its markdown/text outputs."""
    text = [c.source for c in nb.cells if c.cell_type == "markdown"]
    for o in _outputs(nb):
        text.append("".join(o.get("text", "")))
        text.append("".join(o.get("data", {}).get("text/markdown", "")))
    return "\n".join(text)


def _assert_reproduction(nb, where: str) -> None:
    outputs = _outputs(nb)
    assert not [o for o in outputs if o.get("output_type") == "error"], where
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 1, f"{where}: no figure"
    markdown = [
        "".join(o.get("data", {}).get("text/markdown", ""))
        for o in outputs
        if "text/markdown" in o.get("data", {})
    ]
    tables = [m for m in markdown if re.search(r"\| quantity \| paper \|.*\| ours \|", m)]
    assert tables, f"{where}: no paper-vs-ours table among its outputs"
    assert any("±" in t for t in tables), f"{where}: the table has no mean ± std over seeds"


def test_there_are_seven_paper_notebooks():
    assert len(SOURCES) >= 7, [p.name for p in SOURCES]


def test_committed_notebooks_hold_their_sources():
    assert TOOL.check() == []


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_committed_notebook_was_executed_at_the_default_scale(source):
    nb = nbformat.read(NOTEBOOKS / f"{source.stem}.ipynb", as_version=4)
    assert nb.metadata.get("privfl", {}).get("scale") == "default"
    _assert_reproduction(nb, source.name)
    size = (NOTEBOOKS / f"{source.stem}.ipynb").stat().st_size
    assert size < 1_500_000, f"{source.stem}.ipynb is {size} bytes: keep outputs small"


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_executes_fresh_at_the_small_scale(source, monkeypatch):
    monkeypatch.setenv("PRIVFL_SCALE", "small")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws
    if SHARED_MNIST.is_dir():
        monkeypatch.setenv("PRIVFL_MNIST_DIR", str(SHARED_MNIST))
    nb = TOOL.read_source(source)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    _assert_reproduction(nb, f"{source.name} at PRIVFL_SCALE=small")


def test_reproduction_checker_can_fail():
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("1"))
    with pytest.raises(AssertionError, match="no figure"):
        _assert_reproduction(nb, "empty")
    nb.cells[0].outputs = [
        nbformat.v4.new_output("display_data", data={"image/png": "iVBO"}),
        nbformat.v4.new_output(
            "display_data", data={"text/markdown": "| quantity | paper | x | ours | y |"}
        ),
    ]
    with pytest.raises(AssertionError, match="mean ± std"):
        _assert_reproduction(nb, "no spread")
