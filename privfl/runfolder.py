"""The run folder: a contract that scripts and notebooks rely on (docs/usage.md, "The run folder").

runs/<name>/config.toml     the resolved config, every default written out
            metrics.jsonl   one JSON object a round (deterministic for a seed)
            timings.jsonl   one JSON object a round: wall-clock seconds (not deterministic)
            ledger.json     privacy events and the final epsilon
            audit.json      the empirical privacy audit (with [audit])
            report.md, report.html   the privacy-budget report (with DP or an audit)
            attacks.json    one record per attack result
            threats.json    the threat model of every active attack and defense
            partition.json  per-client example and label counts (label_counts, or
                            label_counts_sparse above 256 classes: label_counts_from_record)
            checkpoint.pt   the state to resume from
            environment.json  versions, source commit, CPU, GEMM library and device of each
                              process that ran rounds
            plots/*.png
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
import torch

from privfl.errors import RunFolderError


class RunFile(StrEnum):
    """Names of the files in a run folder."""

    CONFIG = "config.toml"
    METRICS = "metrics.jsonl"
    TIMINGS = "timings.jsonl"
    LEDGER = "ledger.json"
    ATTACKS = "attacks.json"
    THREATS = "threats.json"
    PARTITION = "partition.json"
    CHECKPOINT = "checkpoint.pt"
    ENVIRONMENT = "environment.json"
    AUDIT = "audit.json"
    CONTRIBUTIONS = "contributions.json"
    REPORT_MD = "report.md"
    REPORT_HTML = "report.html"
    PLOTS = "plots"


def to_jsonable(value: Any) -> Any:
    """Numpy and torch scalars/arrays and enums as plain Python values, recursively.

    >>> to_jsonable({"eps": np.float64(1.5), 3: (np.int64(2), torch.tensor([0.5, 1.0]))})
    {'eps': 1.5, '3': [2, [0.5, 1.0]]}
    >>> json.dumps(to_jsonable({"file": RunFile.LEDGER, "ok": np.bool_(True)}))
    '{"file": "ledger.json", "ok": true}'
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray | torch.Tensor):
        return to_jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Enum):
        return value.value
    return value


def _atomic_write(path: Path, write: Any, binary: bool = False) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunFolder:
    """Reads and writes one run's folder; every whole-file write is atomic."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, out_dir: str | Path, name: str, *, overwrite: bool = False) -> RunFolder:
        """A new, empty ``out_dir/name``. An existing non-empty folder is an error unless
        ``overwrite`` (then it is emptied), so a finished run is never silently clobbered."""
        path = Path(out_dir) / name
        if path.exists() and any(path.iterdir()):
            if not overwrite:
                raise RunFolderError(
                    f"run folder {path} exists; use --resume {path} to continue it, "
                    "--overwrite to replace it, or another name (--set name=...)"
                )
            shutil.rmtree(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunFolderError(f"cannot create run folder {path}: {e}") from None
        return cls(path)

    def file(self, name: RunFile) -> Path:
        return self.path / name.value

    def plot_path(self, stem: str) -> Path:
        d = self.file(RunFile.PLOTS)
        d.mkdir(exist_ok=True)
        return d / f"{stem}.png"

    def write_toml(self, name: RunFile, data: dict[str, Any]) -> None:
        _atomic_write(self.file(name), lambda f: f.write(tomli_w.dumps(data)))

    def write_json(self, name: RunFile, data: Any) -> None:
        text = json.dumps(to_jsonable(data), indent=2)
        _atomic_write(self.file(name), lambda f: f.write(text + "\n"))

    def read_json(self, name: RunFile, default: Any = None) -> Any:
        p = self.file(name)
        return json.loads(p.read_text()) if p.exists() else default

    def append_jsonl(self, name: RunFile, record: dict[str, Any]) -> None:
        with open(self.file(name), "a") as f:
            f.write(json.dumps(to_jsonable(record)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_jsonl(self, name: RunFile) -> list[dict[str, Any]]:
        """Complete records only: a line cut short by a crash is ignored."""
        p = self.file(name)
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return out

    def truncate_jsonl(self, name: RunFile, last_round: int) -> list[dict[str, Any]]:
        """Keep only the records of rounds ``<= last_round`` (used on resume); returns them."""
        keep = [r for r in self.read_jsonl(name) if r.get("round", 0) <= last_round]
        text = "".join(json.dumps(r) + "\n" for r in keep)
        _atomic_write(self.file(name), lambda f: f.write(text))
        return keep

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        _atomic_write(self.file(RunFile.CHECKPOINT), lambda f: torch.save(state, f), binary=True)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint's state, unpickled with ``weights_only=True``: tensors, numbers,
        strings and containers only, so a crafted run folder cannot run code (a full unpickle
        calls whatever ``__reduce__`` names). Anything else is a :class:`RunFolderError`."""
        p = self.file(RunFile.CHECKPOINT)
        if not p.exists():
            return None
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError, a truncated zip, a bad tensor record
            raise RunFolderError(
                f"{p}: refused: not a privfl checkpoint of plain tensors and values "
                f"({_why_unloadable(e)})"
            ) from None
        if not isinstance(state, dict):
            raise RunFolderError(f"{p}: refused: the checkpoint is not a table of state")
        return state


def _why_unloadable(e: Exception) -> str:
    """The one informative line of torch.load's error (its weights-only message runs to
    several paragraphs: the ``WeightsUnpickler error`` line names the refused global)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "WeightsUnpickler error" in ln:
            return ln.split(":", 1)[1].strip()
    return lines[0] if lines else type(e).__name__


__all__ = ["RunFile", "RunFolder", "to_jsonable"]
