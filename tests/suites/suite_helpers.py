"""Helpers shared by the suite tests: a tiny base config and suite files written to tmp."""

from __future__ import annotations

from pathlib import Path

BASE = """
name = "tiny"
seed = 0
[data]
name = "digits"
partition = "iid"
clients = 10
[model]
name = "mlp"
hidden = [16]
[federation]
rounds = {rounds}
clients_per_round = 5
batch_size = 16
lr = 0.3
"""


def write_suite(tmp: Path, body: str, *, rounds: int = 2) -> Path:
    """Write ``base.toml`` and ``suite.toml`` (``body`` after a ``base = "base.toml"`` line)."""
    (tmp / "base.toml").write_text(BASE.format(rounds=rounds))
    path = tmp / "suite.toml"
    path.write_text('name = "t"\nbase = "base.toml"\n' + body)
    return path
