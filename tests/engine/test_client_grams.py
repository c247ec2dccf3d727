"""The run's cache of each client's Gram matrix (the first layer's window products)."""

import numpy as np
import torch

import privfl
from privfl.engine.batched_mlp import ClientGrams
from privfl.federation import Federation


def _parts(sizes, n, seed=0):
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum([0, *sizes])
    return [perm[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def test_a_window_is_the_gram_matrix_of_those_examples_in_that_order():
    torch.manual_seed(0)
    x = torch.randn(100, 1, 6, 5, dtype=torch.float64)
    parts = _parts([7, 12, 3, 12], 100)  # unequal sizes: the table is padded to 12
    grams = ClientGrams(x, parts)
    rng = np.random.default_rng(1)
    clients = [3, 0, 1]
    positions = torch.as_tensor(np.stack([rng.integers(0, len(parts[c]), 9) for c in clients]))
    for _ in range(2):  # worked out, then read from the table
        got = grams.window(clients, positions)
        for i, cid in enumerate(clients):
            rows = x[parts[cid][positions[i].numpy()]].flatten(1)
            torch.testing.assert_close(got[i], rows @ rows.t(), rtol=1e-12, atol=1e-12)


def test_past_the_budget_no_window_is_given():
    x = torch.randn(40, 8)
    parts = _parts([20, 20], 40)
    where = torch.zeros(1, 3, dtype=torch.int64)
    table = 2 * 20 * 20 * 4  # bytes: two clients of 20 examples, float32
    assert ClientGrams(x, parts, budget=table).window([0], where) is not None
    assert ClientGrams(x, parts, budget=table - 1).window([0], where) is None


def test_a_run_with_the_cache_trains_the_model_of_one_without_it(monkeypatch):
    cfg = privfl.Config(
        name="grams",
        seed=3,
        data={"name": "synthetic", "samples": 600, "shape": [1, 8, 8], "classes": 4,
              "test_fraction": 0.2, "partition": "dirichlet", "alpha": 0.5, "clients": 12},
        # 64 inputs and 64 hidden: a window spans six steps of 5, so steps read the Grams
        model={"name": "mlp", "hidden": [64]},
        federation={"rounds": 4, "clients_per_round": 6, "batch_size": 5, "lr": 0.1},
    )  # fmt: skip
    calls = []
    window = ClientGrams.window

    def counted(self, clients, positions):
        got = window(self, clients, positions)
        calls.append(got is not None and positions.shape[1] > 5)
        return got

    monkeypatch.setattr(ClientGrams, "window", counted)
    cached = Federation(cfg)
    for _ in range(4):
        cached.run_round()
    assert calls and all(calls)  # every window (of several steps) came from the cache
    monkeypatch.setattr(ClientGrams, "window", lambda self, c, p: None)
    fresh = Federation(cfg)
    for _ in range(4):
        fresh.run_round()
    torch.testing.assert_close(cached.params, fresh.params, rtol=1e-4, atol=1e-6)
    assert not torch.equal(cached.params, Federation(cfg).params)  # it trained
