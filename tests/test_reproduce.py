"""privfl.reproduce: the scale, MNIST-or-digits, mean ± std over seeds, the paper-vs-ours table."""

from __future__ import annotations

import gzip
import statistics

import numpy as np
import pytest

import privfl
from privfl import reproduce
from privfl.data.mnist import MNIST_FILES


def test_scale_defaults_and_refuses_typos(monkeypatch):
    monkeypatch.delenv("PRIVFL_SCALE", raising=False)
    assert reproduce.current_scale() == "default"
    assert reproduce.at_scale(small=1, default=2, paper=3) == 2
    monkeypatch.setenv("PRIVFL_SCALE", "Small")
    assert reproduce.at_scale(small=1, default=2, paper=3) == 1
    monkeypatch.setenv("PRIVFL_SCALE", "full")
    with pytest.raises(ValueError, match="small, default, paper"):
        reproduce.current_scale()


def _write_idx(path, array):
    # IDX: two zero bytes, type 0x08 (uint8), ndim, big-endian dims, then the data.
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_or_digits(monkeypatch, tmp_path):
    monkeypatch.delenv("PRIVFL_MNIST_DIR", raising=False)
    choice = reproduce.mnist_or_digits(partition="iid", clients=5)
    assert choice.section == {"name": "digits", "partition": "iid", "clients": 5}
    assert not choice.is_mnist and "stand in for MNIST" in choice.note

    monkeypatch.setenv("PRIVFL_MNIST_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing train-images-idx3-ubyte"):
        reproduce.mnist_or_digits()  # a wrong folder is an error, not a silent fallback

    rng = np.random.default_rng(0)
    for n, (images, labels) in zip((40, 20), MNIST_FILES.values(), strict=True):
        _write_idx(tmp_path / f"{images}.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{labels}.gz", np.arange(n) % 10)
    choice = reproduce.mnist_or_digits(partition="iid", clients=4)
    assert choice.is_mnist and choice.section["dir"] == str(tmp_path)
    cfg = privfl.Config(
        name="m",
        data=choice.section,
        model={"name": "mlp", "hidden": [8]},
        federation={"rounds": 1, "clients_per_round": 2},
    )
    result = privfl.run(cfg, out=None, progress=False)
    assert result.config.data.name == "mnist" and len(result.metrics) == 1


def test_mean_std_matches_statistics():
    values = [0.91, 0.87, 0.95, 0.90]
    m = reproduce.MeanStd.of(values)
    assert m.mean == pytest.approx(statistics.mean(values))
    assert m.std == pytest.approx(statistics.stdev(values))  # sample std, ddof = 1
    assert m.n == 4 and m.values == tuple(values)
    assert reproduce.MeanStd.of([3.0]).std == 0.0
    with pytest.raises(ValueError, match="NaN"):
        reproduce.MeanStd.of([1.0, float("nan")])
    with pytest.raises(ValueError, match="at least one"):
        reproduce.MeanStd.of([])


def test_over_seeds_refuses_repeated_seeds():
    assert reproduce.over_seeds(lambda s: s * 2, [0, 1, 2]) == [0, 2, 4]
    with pytest.raises(ValueError, match="repeat"):
        reproduce.over_seeds(lambda s: s, [0, 0, 1])


def test_paper_vs_ours_table():
    t = reproduce.PaperVsOurs("Ours: digits, MLP [64], 3 seeds.", spec=".2f")
    t.add(
        "rounds to 97%",
        paper="20",
        source="Table 2",
        ours=reproduce.MeanStd.of([10, 12, 14]),
        note="smaller task | fewer rounds",
    )
    t.add("speed-up", paper="8.7x", source="Table 2", ours="not reached", note="-")
    md = t._repr_markdown_()
    lines = md.splitlines()
    assert lines[2].startswith("| quantity | paper | paper's source | ours |")
    assert lines[4] == (
        "| rounds to 97% | 20 | Table 2 | 12.00 ± 2.00 (3 seeds) | smaller task \\| fewer rounds |"
    )
    assert lines[5].count(" | ") == 4  # five columns, the escaped pipe did not add one
    assert lines[-1] == "Ours: digits, MLP [64], 3 seeds."
