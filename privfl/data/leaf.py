"""Reading LEAF's JSON files (Caldas et al. 2018, arXiv 1812.01097): the folder layout and the
``{"users", "num_samples", "user_data"}`` document, shared by the text loaders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from privfl.errors import DataError


def split_folders(directory: Path, what: str, hint: str) -> tuple[Path, Path]:
    """The train and test folders of a LEAF data set: ``directory/{train,test}`` or
    ``directory/data/{train,test}``, each holding ``*.json`` files."""
    layouts = (
        (directory / "train", directory / "test"),
        (directory / "data" / "train", directory / "data" / "test"),
    )
    for train, test in layouts:
        if any(train.glob("*.json")) and any(test.glob("*.json")):
            return train, test
    expected = " or ".join(f"{tr}/*.json and {te}/*.json" for tr, te in layouts)
    state = "does not exist" if not directory.is_dir() else "has no such JSON files"
    raise DataError(f"{what} not found: {directory} {state}; expected {expected}. {hint}")


def read_leaf_json(path: Path, what: str) -> dict[str, Any]:
    """One LEAF JSON document, checked to have a ``user_data`` object."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{what} file {path} is not valid JSON: {e}") from e
    except OSError as e:
        raise DataError(f"cannot read {what} file {path}: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("user_data"), dict):
        raise DataError(
            f"{what} file {path} has no 'user_data' object; expected LEAF's "
            '{"users": [...], "num_samples": [...], "user_data": {user: {"x": ..., "y": ...}}}'
        )
    return doc


__all__ = ["read_leaf_json", "split_folders"]
