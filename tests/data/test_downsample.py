"""Down-sampling a class of the training split (``[data] class_fraction``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privfl.config import Config, config_from_dict
from privfl.data.base import ArrayDataset
from privfl.data.downsample import downsample_classes, kept_count
from privfl.data.federated import build_federated_data
from privfl.errors import ConfigError, DataError


def _digits(**data) -> Config:
    return config_from_dict(
        {"data": {"name": "digits", "clients": 4, **data}, "federation": {"clients_per_round": 4}}
    )


def test_kept_count_rounds_and_keeps_at_least_one():
    assert kept_count(500 / 5851, 5851) == 500  # the paper's MNIST 8s
    assert kept_count(1.0, 7) == 7
    assert kept_count(1e-6, 50) == 1
    assert kept_count(0.3, 0) == 0


def test_only_the_named_class_shrinks_and_the_test_split_is_untouched():
    plain = build_federated_data(_digits().data, seed=3)
    down = build_federated_data(_digits(class_fraction={"8": 0.25}).data, seed=3)
    before = np.bincount(plain.bundle.train.y.numpy(), minlength=10)
    after = np.bincount(down.bundle.train.y.numpy(), minlength=10)
    assert after[8] == round(0.25 * before[8])
    mask = np.arange(10) != 8
    assert (after[mask] == before[mask]).all()
    assert torch.equal(plain.bundle.test.y, down.bundle.test.y)
    assert torch.equal(plain.bundle.test.x, down.bundle.test.x)
    # every client's examples come from the down-sampled set (partitioned after it)
    assert sum(len(i) for i in down.partition.indices) == len(down.bundle.train)
    (rec,) = down.downsampled
    assert (rec.label, rec.before, rec.kept) == (8, before[8], after[8])
    assert down.summary()["downsampled"] == [rec.to_record()]
    assert "downsampled" not in plain.summary()  # other runs' partition.json unchanged


def test_seeded_and_seed_dependent():
    cfg = _digits(class_fraction={"3": 0.5}).data
    a, b, c = (build_federated_data(cfg, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.bundle.train.x, b.bundle.train.x)
    assert not torch.equal(a.bundle.train.x, c.bundle.train.x)


def test_kept_examples_are_real_members_of_the_class():
    x = torch.arange(20, dtype=torch.float32).reshape(20, 1)
    y = torch.tensor([0] * 10 + [1] * 10)
    small, (rec,) = downsample_classes(ArrayDataset(x, y), {1: 0.3}, 2, np.random.default_rng(0))
    kept_ones = small.x[small.y == 1].flatten()
    assert rec.kept == len(kept_ones) == 3
    assert set(kept_ones.tolist()) <= set(range(10, 20))
    assert small.x[small.y == 0].flatten().tolist() == list(range(10))  # order kept


def test_groups_follow_the_kept_examples():
    x = torch.zeros(6, 1)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    groups = np.array([10, 11, 12, 13, 14, 15])
    small, _ = downsample_classes(
        ArrayDataset(x, y, groups), {0: 1 / 3}, 2, np.random.default_rng(1)
    )
    assert len(small.groups) == len(small.y) == 4
    assert list(small.groups[-3:]) == [13, 14, 15]


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan"), float("inf")])
def test_config_refuses_fractions_outside_0_1(fraction):
    with pytest.raises(ConfigError, match="class_fraction"):
        _digits(class_fraction={"8": fraction})


def test_config_refuses_a_non_integer_class():
    with pytest.raises(ConfigError, match="class_fraction"):
        _digits(class_fraction={"eight": 0.5})


def test_unknown_class_is_a_data_error():
    with pytest.raises(DataError, match="class 12"):
        build_federated_data(_digits(class_fraction={"12": 0.5}).data, seed=0)


def test_fraction_one_keeps_everything_and_toml_round_trips(tmp_path):
    import tomli_w

    from privfl.config import load_config

    cfg = _digits(class_fraction={"8": 1.0})
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(cfg.to_toml_dict()))
    again = load_config(path)
    assert again.data.class_fraction == {8: 1.0}
    full = build_federated_data(again.data, seed=0)
    plain = build_federated_data(_digits().data, seed=0)
    assert torch.equal(full.bundle.train.y, plain.bundle.train.y)
