"""The vectorized engine's CNN cohort split over torch's threads (one group of clients per
thread, each single-threaded inside torch): the same numbers as one group, whatever the
thread count, with unequal client sizes (padding, clients stopping early, empty groups)."""

from __future__ import annotations

import pytest
import torch
from conftest import small_config

from privfl.federation import Federation


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _params(cfg, n_threads: int) -> tuple[torch.Tensor, list[float]]:
    torch.set_num_threads(n_threads)
    fed = Federation(cfg)
    losses = [fed.run_round()["train_loss"] for _ in range(2)]
    fed.engine.close()
    return fed.params, losses


@pytest.mark.parametrize(
    "data",
    [
        {"partition": "iid", "clients": 10},
        {"partition": "dirichlet", "alpha": 0.3, "clients": 12},
    ],
)
@pytest.mark.parametrize("n_threads", [2, 3])
def test_the_split_cohort_gives_the_one_group_numbers(data, n_threads, threads):
    model = {"name": "cnn", "channels": [4, 6], "hidden": [8], "norm": "none"}
    cfg = small_config(
        data=data,
        model=model,
        federation={"clients_per_round": 7, "batch_size": 16, "engine": "vectorized"},
    )
    one, one_losses = _params(cfg, 1)
    split, split_losses = _params(cfg, n_threads)
    assert torch.equal(one, split)
    assert one_losses == split_losses
    assert torch.get_num_threads() == n_threads  # restored after each round


def test_only_cnn_rounds_split_and_only_with_several_threads(threads, monkeypatch):
    from privfl.engine.vectorized import VectorizedEngine

    calls = []
    real = VectorizedEngine._cnn_group
    monkeypatch.setattr(
        VectorizedEngine,
        "_cnn_group",
        lambda self, *a, **kw: calls.append(len(a[5])) or real(self, *a, **kw),
    )
    cnn = {"name": "cnn", "channels": [4], "hidden": [8], "norm": "none"}
    cfg = small_config(model=cnn, federation={"clients_per_round": 6, "engine": "vectorized"})
    _params(cfg, 1)
    assert calls == [6, 6]
    calls.clear()
    _params(cfg, 2)
    assert calls == [3, 3, 3, 3]
    calls.clear()
    monkeypatch.setattr(VectorizedEngine, "split_cohort", False)
    _params(cfg, 2)
    assert calls == [6, 6]
