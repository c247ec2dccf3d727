"""Factored updates (privfl.engine.factored): written-out rows, the weighted sum and the
finiteness check against direct computations on explicit matrices, including the factors that
hide NaN, inf and float32 overflow; and an UpdateBatch that holds them writes its rows only
when a stage reads them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privfl.aggregation import WeightedMean
from privfl.engine.factored import Dense, FactoredDeltas, LowRank
from privfl.update import UpdateBatch

C, R, OUT, IN = 5, 3, 4, 6


def _factored(seed: int = 0) -> tuple[FactoredDeltas, torch.Tensor]:
    """Updates of a layout ``[W (4x6), b (4), V (2x4) dense, b2 (2) untouched]`` and the same
    rows built directly (float64)."""
    g = torch.Generator().manual_seed(seed)
    gf, af = torch.randn((C, R, OUT), generator=g), torch.randn((C, R, IN), generator=g)
    base = torch.randn((C, OUT, IN), generator=g)
    start = torch.randn((OUT, IN), generator=g)
    v = torch.randn((C, 2, 4), generator=g)
    alpha = -0.3
    terms = [
        LowRank(0, (OUT, IN), gf, af, alpha, bias=24),
        Dense(0, base, start),
        Dense(28, v),
    ]
    blocks = [(0, 24), (24, 4), (28, 8), (36, 2)]
    f = FactoredDeltas(C, 38, terms, blocks)
    want = torch.zeros((C, 38), dtype=torch.float64)
    gd, ad = gf.double(), af.double()
    want[:, :24] = (alpha * gd.transpose(1, 2) @ ad + base.double() - start.double()).reshape(C, -1)
    want[:, 24:28] = alpha * gd.sum(1)
    want[:, 28:36] = v.double().reshape(C, -1)
    return f, want


def test_rows_and_weighted_sum_equal_the_direct_computation(gemm_library):
    f, want = _factored()
    rows = f.rows()
    assert rows.shape == (C, 38) and rows.dtype == torch.float32
    assert torch.allclose(rows.double(), want, atol=1e-5)
    assert torch.equal(rows[:, 36:], torch.zeros(C, 2))  # a block no term writes is zero
    coef = torch.tensor([0.5, 0.1, 0.2, 0.0, 0.2])
    assert torch.allclose(f.weighted_sum(coef).double(), coef.double() @ want, atol=1e-5)


def test_take_selects_and_reorders_clients():
    f, want = _factored(1)
    order = np.array([3, 0, 4])
    assert torch.allclose(f.take(order).rows().double(), want[order], atol=1e-5)
    assert f.take(np.arange(C)) is f


def test_finite_agrees_with_checking_the_written_rows():
    f, _ = _factored(2)
    low, dense = f.terms[0], f.terms[2]
    assert isinstance(low, LowRank) and isinstance(dense, Dense)
    low.g[1, 0, 2] = float("nan")  # client 1: NaN in an output gradient
    low.a[2, 1, 3] = float("inf")  # client 2: inf in an input
    low.g[3].zero_()  # client 3: a zero gradient times an infinite input is NaN
    low.a[3, 0, 0] = float("inf")
    # Client 4: finite factors whose product overflows float32.
    low.g[4].fill_(1e20)
    low.a[4].fill_(1e20)
    rows = f.rows()
    want = torch.isfinite(rows).all(dim=1).tolist()
    assert want == [True, False, False, False, False]
    assert f.finite().tolist() == want


def test_large_but_finite_rows_are_finite():
    """Factors past the cheap bound (their product near float32's top) are checked exactly."""
    f, _ = _factored(3)
    low = f.terms[0]
    assert isinstance(low, LowRank)
    low.g[0].zero_()
    low.a[0].zero_()
    low.g[0, 0, 0], low.a[0, 0, 0] = 1e19, 1e19  # alpha * 1e38: finite, past the bound
    rows = f.rows()
    assert torch.isfinite(rows[0]).all() and rows[0].abs().max() > 1e37
    assert f.finite().tolist() == [True] * C


class _Counting:
    """A RowFactors that counts how often its rows are written out."""

    def __init__(self, f: FactoredDeltas) -> None:
        self.f, self.dim, self.written = f, f.dim, 0

    def __len__(self) -> int:
        return len(self.f)

    def rows(self) -> torch.Tensor:
        self.written += 1
        return self.f.rows()

    def weighted_sum(self, coefficients: torch.Tensor) -> torch.Tensor:
        return self.f.weighted_sum(coefficients)

    def finite(self) -> np.ndarray:
        return self.f.finite()

    def take(self, index: np.ndarray) -> FactoredDeltas:
        return self.f.take(index)


def _batch(factors) -> UpdateBatch:
    return UpdateBatch(
        client_ids=np.arange(10, 10 + C),
        deltas=None,
        weights=np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
        factors=factors,
    )


def test_a_factored_batch_writes_its_rows_only_when_read():
    f, want = _factored(4)
    counting = _Counting(f)
    batch = _batch(counting)
    assert not batch.rows_written
    assert batch.finite_rows().all()
    mean = WeightedMean().aggregate(batch, None).delta  # type: ignore[arg-type]
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64) / 15
    assert torch.allclose(mean.double(), w @ want, atol=1e-5)
    assert counting.written == 0  # the mean and the check used the factors
    assert torch.allclose(batch.deltas.double(), want, atol=1e-5)
    assert batch.deltas is batch.deltas and counting.written == 1  # written once, kept
    # FedAvg keeps averaging the factors once the rows exist: the model does not depend on
    # whether an attack looked at the rows.
    assert torch.equal(WeightedMean().aggregate(batch, None).delta, mean)  # type: ignore[arg-type]


def test_select_and_with_deltas_keep_rows_and_factors_consistent():
    f, want = _factored(5)
    batch = _batch(f)
    keep = np.array([True, False, True, True, False])
    part = batch.select(keep)
    assert part.client_ids.tolist() == [10, 12, 13] and not part.rows_written
    assert torch.allclose(part.deltas.double(), want[keep], atol=1e-5)
    replaced = part.with_deltas(torch.zeros((3, 38)))
    assert replaced.factors is None and torch.equal(replaced.deltas, torch.zeros((3, 38)))
    with pytest.raises(ValueError, match="deltas shape"):
        part.with_deltas(torch.zeros((3, 37)))
    with pytest.raises(ValueError, match="deltas or their factors"):
        UpdateBatch(client_ids=np.arange(2), deltas=None, weights=np.ones(2))


# ----------------------------------------------------------------------------- in a round


def _federation(**federation):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import small_config

    from privfl.federation import Federation

    cfg = small_config(
        federation={"rounds": 2, "clients_per_round": 5, "engine": "vectorized", **federation}
    )
    return Federation(cfg)


class _ReadsRows:
    """A stage that reads every plaintext update and changes nothing: as an observer (an
    inversion attack), and as a client transform before aggregation (a norm monitor)."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def observe(self, view, ctx):
        self.seen.append(view.updates.deltas.clone())
        return []

    def apply(self, batch, ctx):
        assert batch.deltas.shape[0] == len(batch)
        return batch


def test_the_model_does_not_depend_on_whether_a_stage_read_the_rows():
    plain, watched = _federation(), _federation()
    observer = _ReadsRows()
    watched.stages.observers.append(observer)  # type: ignore[arg-type]
    watched.stages.client_transforms.append(observer)  # type: ignore[arg-type]
    for _ in range(2):
        batch = plain.engine.train_batch(plain.params, [0, 1, 2, 3, 4], plain.round + 1)
        assert batch.factors is not None  # plain SGD on an MLP: the factored path
        plain.run_round()
        watched.run_round()
        assert torch.equal(plain.params, watched.params)
    # What the observer saw is each client's update: their weighted mean is the model's step.
    rows = observer.seen[-1]
    sizes = torch.tensor(
        [len(watched.data.partition.indices[c]) for c in watched.metrics[-1]["clients"]],
        dtype=torch.float64,
    )
    before = _federation()
    before.run_round()
    mean = (sizes / sizes.sum()).float() @ rows
    assert torch.allclose(watched.params, before.params + mean, atol=1e-6)


def test_nonfinite_factors_drop_exactly_their_clients():
    fed, reference = _federation(), _federation()
    real = fed.engine.train_batch

    def poisoned(*args, **kwargs):
        batch = real(*args, **kwargs)
        first = batch.factors.terms[0]  # the first layer's factors, rows in clients' order
        first.g[1, 0, 0] = float("nan")
        first.a[3].mul_(1e30)  # finite inputs whose products overflow
        first.g[3].mul_(1e30)
        return batch

    fed.engine.train_batch = poisoned
    rec = fed.run_round()
    clients = rec["clients"]
    assert rec["nonfinite"] == 2 and rec["dropped"] == sorted([clients[1], clients[3]])
    ups = reference.engine.train(reference.params, clients, 1)
    keep = [u for i, u in enumerate(ups) if i not in (1, 3)]
    w = torch.tensor([u.num_examples for u in keep], dtype=torch.float64)
    mean = (w / w.sum()).float() @ torch.stack([u.delta for u in keep])
    assert torch.allclose(fed.params, reference.params + mean, atol=1e-6)


def test_compression_drops_the_factors_of_the_deltas_it_replaced():
    """A top-k compressed batch must not keep the factors of the uncompressed updates: a mean
    taken from them would undo the compression."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import small_config

    from privfl.federation import Federation

    cfg = small_config(
        federation={"rounds": 1, "clients_per_round": 5, "engine": "vectorized"},
        compression={"method": "topk", "ratio": 0.1},
    )
    fed = Federation(cfg)
    batch = fed.engine.train_batch(fed.params, [0, 1, 2, 3, 4], 1)
    assert batch.factors is not None
    from privfl.stages import RoundContext

    ctx = RoundContext(
        1, cfg.seed, fed.params, fed.spec, fed.data.num_clients, np.arange(5), fed.ledger
    )
    for transform in fed.stages.client_transforms:
        batch = transform.apply(batch, ctx)
    assert batch.factors is None
    kept = (batch.deltas != 0).float().mean().item()
    assert kept <= 0.11  # the rows are the compressed ones
    mean = WeightedMean().aggregate(batch, ctx).delta
    w = torch.from_numpy(batch.weights)
    assert torch.allclose(mean, (w / w.sum()).float() @ batch.deltas, atol=1e-7)


def test_the_factored_and_written_row_paths_train_the_same_model():
    factored, rows = _federation(), _federation()
    rows.engine.factored_updates = False  # type: ignore[attr-defined]
    for _ in range(2):
        a, b = factored.run_round(), rows.run_round()
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    assert rows.engine.train_batch(rows.params, [0, 1], 3).factors is None
    torch.testing.assert_close(factored.params, rows.params, rtol=1e-5, atol=1e-7)


def test_rows_a_stage_puts_in_place_replace_the_factors():
    """``dataclasses.replace(batch, deltas=...)`` (how the DP transforms clip and noise) must
    not leave the old updates' factors for FedAvg's mean to read."""
    from dataclasses import replace

    f, want = _factored(6)
    batch = _batch(f)
    halved = (want / 2).float()
    changed = replace(batch, deltas=halved)
    assert changed.factors is None and changed.deltas is halved
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64) / 15
    mean = WeightedMean().aggregate(changed, None).delta  # type: ignore[arg-type]
    assert torch.allclose(mean.double(), w @ (want / 2), atol=1e-6)
    # The factors' own rows, carried along by a replace that changes something else, keep
    # them (the mean still reads the factors: the model does not depend on who looked).
    read = _batch(f)
    rows = read.deltas
    carried = replace(read, metrics={"m": np.zeros(C)})
    assert carried.factors is f and carried.deltas is rows
    part = carried.select(np.array([True, True, False, True, True]))
    assert part.factors is not None and part.rows_written
    assert replace(part, deltas=part.deltas * 0).factors is None


def test_rows_a_stage_changes_in_place_replace_the_factors():
    """A stage that edits the written-out rows in place (the whole tensor or one row's view)
    makes the rows the updates: FedAvg's mean must read them, not the factors of the updates
    before the edit. Reading the rows (a norm, a copy) keeps the factors."""
    f, want = _factored(7)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64) / 15
    read = _batch(f)
    torch.linalg.vector_norm(read.deltas, dim=1)
    read.deltas.clone().mul_(3)
    assert read.factors is f  # a read, or an edit of a copy, changes nothing

    whole = _batch(f)
    whole.deltas.mul_(0.5)
    assert whole.factors is None
    mean = WeightedMean().aggregate(whole, None).delta  # type: ignore[arg-type]
    torch.testing.assert_close(mean.double(), w @ (want / 2), rtol=0, atol=1e-6)

    one = _batch(f)
    one.deltas[2].zero_()  # through a view of one row
    zeroed = want.clone()
    zeroed[2] = 0
    mean = WeightedMean().aggregate(one, None).delta  # type: ignore[arg-type]
    torch.testing.assert_close(mean.double(), w @ zeroed, rtol=0, atol=1e-6)

    part = _batch(f).select(np.array([True, False, True, True, True]))
    assert part.deltas.shape == (4, f.dim)  # written out from the selected factors
    assert part.factors is not None
    part.deltas[0].fill_(1.0)
    assert part.factors is None and part.select(np.ones(4, dtype=bool)).factors is None


DP_DEFENSES = {
    # clip far below the updates' norms (~1): every update is clipped
    "central, noise 0": {"mode": "central", "noise_multiplier": 0.0, "clip": 0.05},
    "central, noise 1": {"mode": "central", "noise_multiplier": 1.0, "clip": 0.05},
    "local": {"mode": "local", "noise_multiplier": 1.0, "clip": 0.05},
}


@pytest.mark.parametrize("dp", DP_DEFENSES)
def test_dp_fedavg_averages_the_clipped_updates_on_the_factored_path(dp):
    """The attacker's view of DP-FedAvg: each client's influence on the model is bounded by
    the clip S. The batched MLP kernel's factored updates used to reach FedAvg's mean past the
    clipping (and local DP's noise), so the vectorized engine averaged the raw updates under a
    ledger that assumed S: 0.013 off the sequential engine's model after one round."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import small_config

    from privfl.federation import Federation

    def federation(engine: str) -> Federation:
        cfg = small_config(
            data={"clients": 20},
            federation={"rounds": 2, "clients_per_round": 10, "lr": 0.5, "engine": engine},
            defense={"dp": DP_DEFENSES[dp]},
        )
        return Federation(cfg)

    seq, vec = federation("sequential"), federation("vectorized")
    start = vec.params.clone()
    assert vec.engine.train_batch(vec.params, [0, 1, 2], 1).factors is not None
    for _ in range(2):
        a, b = seq.run_round(), vec.run_round()
        assert a["clients"] == b["clients"] and b["dp_clipped_fraction"] == 1.0
        torch.testing.assert_close(vec.params, seq.params, rtol=0, atol=1e-6)
    if dp == "central, noise 0":  # two rounds of sums of clipped updates over q N
        q_n = 10  # q = 10/20 of N = 20 clients
        clients = sum(len(m["clients"]) for m in vec.metrics)
        assert (vec.params - start).norm() <= clients * 0.05 / q_n + 1e-6
