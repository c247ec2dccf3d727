"""The paper notebooks: reviewable sources in ``notebooks/*.py`` (jupytext percent format),
executed notebooks with their outputs in ``notebooks/*.ipynb``.

    python tools/notebooks.py execute [NAME ...] [--scale default]   # .py -> executed .ipynb
    python tools/notebooks.py check                                   # .ipynb cells == .py cells

``execute`` runs each source in a fresh Jupyter kernel (working folder ``notebooks/``, the scale
in ``PRIVFL_SCALE``; ``PRIVFL_MNIST_DIR`` passes through) and writes the notebook with its
outputs and, in its metadata, the scale, the data and the seconds it took. Commit what
``--scale default`` writes. ``check`` fails when a committed notebook's cells differ from its
source (edit the ``.py``, then execute again).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def sources() -> list[Path]:
    """The notebook sources: ``notebooks/*.py`` in jupytext percent format."""
    return sorted(p for p in NOTEBOOKS.glob("*.py") if p.read_text().startswith("# ---\n"))


def read_source(path: Path) -> nbformat.NotebookNode:
    """The notebook of the jupytext source ``path``, outputs empty, cell ids fixed."""
    nb = jupytext.read(path)
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"  # fixed ids: re-executing changes outputs only
        cell.metadata = {}
    return nb


def cells_of(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """``(cell type, source)`` of each cell: what must agree between source and notebook."""
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def execute(path: Path, scale: str, timeout: int = 3600) -> Path:
    """Execute the source ``path`` at ``scale``; write ``notebooks/<stem>.ipynb``."""
    nb = read_source(path)
    env = {"PRIVFL_SCALE": scale}
    saved = {k: os.environ.get(k) for k in (*env, "MPLBACKEND")}
    os.environ.update(env)
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures
    start = time.perf_counter()
    try:
        NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(NOTEBOOKS)}},
        ).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    nb.metadata["privfl"] = {
        "scale": scale,
        "mnist": bool(os.environ.get("PRIVFL_MNIST_DIR")),
        "seconds": round(time.perf_counter() - start),
    }
    out = NOTEBOOKS / f"{path.stem}.ipynb"
    nbformat.write(nb, out)
    return out


def check() -> list[str]:
    """Problems: sources without a notebook, notebooks without a source, cells that differ."""
    problems = []
    stems = {p.stem for p in sources()}
    for path in sources():
        nb_path = NOTEBOOKS / f"{path.stem}.ipynb"
        if not nb_path.is_file():
            problems.append(
                f"{nb_path.name}: missing (python tools/notebooks.py execute {path.stem})"
            )
        elif cells_of(read_source(path)) != cells_of(nbformat.read(nb_path, as_version=4)):
            problems.append(f"{nb_path.name}: cells differ from {path.name}; execute it again")
    for nb_path in sorted(NOTEBOOKS.glob("*.ipynb")):
        if nb_path.stem not in stems:
            problems.append(f"{nb_path.name}: no source {nb_path.stem}.py")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Command line: ``execute`` or ``check``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="execute sources into notebooks with outputs")
    ex.add_argument("names", nargs="*", help="notebook stems (default: all)")
    ex.add_argument("--scale", default="default", choices=("small", "default", "paper"))
    sub.add_parser("check", help="committed notebooks hold their sources' cells")
    args = parser.parse_args(argv)
    if args.command == "check":
        problems = check()
        print("\n".join(problems) or f"{len(sources())} notebooks match their sources")
        return 1 if problems else 0
    chosen = sources()
    if args.names:
        by_stem = {p.stem: p for p in chosen}
        unknown = [n for n in args.names if n not in by_stem]
        if unknown:
            parser.error(f"no source for {unknown}; have {sorted(by_stem)}")
        chosen = [by_stem[n] for n in args.names]
    for path in chosen:
        out = execute(path, args.scale)
        seconds = nbformat.read(out, as_version=4).metadata["privfl"]["seconds"]
        print(f"{out.relative_to(ROOT)}: executed at scale {args.scale} in {seconds} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
