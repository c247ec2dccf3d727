"""Tests of privfl/update.py: the flat parameter layout and the stacked update batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from privfl.models import CNNConfig, create_model
from privfl.update import ParamSpec, Update, UpdateBatch


@pytest.fixture
def cnn() -> nn.Module:
    return create_model(CNNConfig(channels=[4, 8], hidden=[16]), (1, 8, 8), 10, seed=0)


def test_paramspec_layout_matches_named_parameters(cnn):
    spec = ParamSpec.of(cnn)

    named = list(cnn.named_parameters())
    assert spec.names == tuple(n for n, _ in named)
    assert spec.shapes == tuple(tuple(p.shape) for _, p in named)
    assert spec.dim == sum(p.numel() for _, p in named)
    assert spec.offsets[0] == 0
    assert spec.offsets[-1] + named[-1][1].numel() == spec.dim


def test_flatten_equals_torch_parameters_to_vector(cnn):
    spec = ParamSpec.of(cnn)

    flat = spec.flatten(cnn)

    assert flat.dtype == torch.float32
    assert torch.equal(flat, parameters_to_vector(cnn.parameters()))
    # a new vector, not a view of the parameters
    flat.add_(1.0)
    assert not torch.equal(flat, parameters_to_vector(cnn.parameters()))


def test_load_into_then_flatten_round_trips_and_agrees_with_torch(cnn):
    spec = ParamSpec.of(cnn)
    vector = torch.randn(spec.dim, generator=torch.Generator().manual_seed(1))
    reference = create_model(CNNConfig(channels=[4, 8], hidden=[16]), (1, 8, 8), 10, seed=5)
    vector_to_parameters(vector, reference.parameters())

    spec.load_into(cnn, vector)

    assert torch.equal(spec.flatten(cnn), vector)
    for (n, p), (_, q) in zip(cnn.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.equal(p, q), n
        assert p.grad_fn is None and p.requires_grad


def test_unflatten_gives_named_views_with_the_right_shapes(cnn):
    spec = ParamSpec.of(cnn)
    vector = torch.arange(spec.dim, dtype=torch.float32)

    parts = spec.unflatten(vector)

    params = dict(cnn.named_parameters())
    assert list(parts) == list(params)
    for n, t in parts.items():
        assert t.shape == params[n].shape
    # concatenating the pieces in order gives back 0..dim-1
    assert torch.equal(torch.cat([t.reshape(-1) for t in parts.values()]), vector)
    # views: writing into one changes the vector
    name = spec.names[2]
    parts[name].fill_(-7.0)
    start = spec.offsets[2]
    assert torch.all(vector[start : start + params[name].numel()] == -7.0)
    assert vector[start - 1] == start - 1


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda d: torch.zeros(d - 1), id="short"),
        pytest.param(lambda d: torch.zeros(d + 1), id="long"),
        pytest.param(lambda d: torch.zeros(1, d), id="2d"),
    ],
)
@pytest.mark.parametrize("method", ["unflatten", "load_into"])
def test_wrong_size_vector_is_a_value_error(cnn, bad, method):
    spec = ParamSpec.of(cnn)
    before = spec.flatten(cnn)
    call = {
        "unflatten": lambda v: spec.unflatten(v),
        "load_into": lambda v: spec.load_into(cnn, v),
    }[method]

    with pytest.raises(ValueError, match=f"flat vector of {spec.dim} values"):
        call(bad(spec.dim))
    assert torch.equal(spec.flatten(cnn), before)


def test_paramspec_skips_frozen_parameters():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    model[0].weight.requires_grad_(False)

    spec = ParamSpec.of(model)

    assert spec.names == ("0.bias", "1.weight", "1.bias")
    assert spec.dim == 2 + 2 + 1


# ---------------------------------------------------------------------------- UpdateBatch


def make_updates() -> list[Update]:
    # Row i's delta is filled with its client id, so row alignment is visible in the values.
    return [
        Update(7, torch.full((4,), 7.0), 70, {"loss": 0.7, "steps": 3.0}),
        Update(2, torch.full((4,), 2.0), 20, {"loss": 0.2}),
        Update(9, torch.full((4,), 9.0), 90, {"loss": 0.9, "steps": 5.0}),
        Update(4, torch.full((4,), 4.0), 40, {"steps": 1.0}),
    ]


def assert_rows_aligned(batch: UpdateBatch) -> None:
    """Independent check: every row's delta, weight and metrics all come from the client the
    row's id names (delta = id, weight = 10 * id, loss = id / 10)."""
    for i, cid in enumerate(batch.client_ids):
        assert torch.all(batch.deltas[i] == float(cid))
        assert batch.weights[i] == 10 * cid
        loss = batch.metrics["loss"][i]
        assert np.isnan(loss) or loss == pytest.approx(cid / 10)


def test_stack_keeps_order_and_fills_missing_metrics_with_nan():
    batch = UpdateBatch.stack(make_updates(), dim=4)

    assert len(batch) == 4
    assert batch.client_ids.tolist() == [7, 2, 9, 4]
    assert batch.client_ids.dtype == np.int64
    assert batch.weights.dtype == np.float64
    assert batch.deltas.shape == (4, 4)
    assert sorted(batch.metrics) == ["loss", "steps"]
    np.testing.assert_array_equal(batch.metrics["steps"], [3.0, np.nan, 5.0, 1.0])
    np.testing.assert_array_equal(batch.metrics["loss"], [0.7, 0.2, 0.9, np.nan])
    assert_rows_aligned(batch)


def test_stack_of_nothing_is_an_empty_batch_of_the_right_width():
    batch = UpdateBatch.stack([], dim=5)

    assert len(batch) == 0
    assert batch.deltas.shape == (0, 5)
    assert batch.deltas.dtype == torch.float32
    assert list(batch) == []


@pytest.mark.parametrize(
    "mask",
    [
        [True, False, True, False],
        [False, True, True, True],
        [False, False, False, False],
        [True, True, True, True],
    ],
    ids=str,
)
def test_select_keeps_rows_ids_weights_and_metrics_aligned(mask):
    batch = UpdateBatch.stack(make_updates(), dim=4)

    sub = batch.select(np.array(mask))

    expected_ids = [u.client_id for u, keep in zip(make_updates(), mask, strict=True) if keep]
    assert sub.client_ids.tolist() == expected_ids
    assert len(sub) == sum(mask)
    assert sub.deltas.shape == (sum(mask), 4)
    assert all(len(v) == sum(mask) for v in sub.metrics.values())
    assert_rows_aligned(sub)


def test_iteration_gives_back_the_original_updates():
    updates = make_updates()
    batch = UpdateBatch.stack(updates, dim=4)

    back = list(batch)

    assert [u.client_id for u in back] == [u.client_id for u in updates]
    assert [u.num_examples for u in back] == [u.num_examples for u in updates]
    for u, b in zip(updates, back, strict=True):
        assert torch.equal(u.delta, b.delta)
        # present metrics come back; missing ones come back as NaN
        for k in ("loss", "steps"):
            if k in u.metrics:
                assert b.metrics[k] == pytest.approx(u.metrics[k])
            else:
                assert np.isnan(b.metrics[k])


def test_with_deltas_replaces_only_the_deltas_and_checks_the_shape():
    batch = UpdateBatch.stack(make_updates(), dim=4)

    doubled = batch.with_deltas(batch.deltas * 2)

    assert torch.equal(doubled.deltas, batch.deltas * 2)
    assert doubled.client_ids is batch.client_ids and doubled.weights is batch.weights
    with pytest.raises(ValueError, match="deltas shape"):
        batch.with_deltas(torch.zeros(3, 4))


@pytest.mark.parametrize(
    ("rows", "shares"),
    [
        ([0, 1, 2, 3], True),  # the consecutive rows of one tensor: a view, no copy
        ([1, 2, 3], True),  # consecutive from an offset
        ([0, 2, 1, 3], False),  # out of order: stacked (a copy)
        ([0, 2, 3], False),  # a gap
    ],
)
def test_stack_of_one_tensors_rows_is_that_tensor_without_a_copy(rows, shares):
    flat = torch.arange(20, dtype=torch.float32).reshape(4, 5)
    batch = UpdateBatch.stack([Update(i, flat[r], 3, {}) for i, r in enumerate(rows)], 5)
    assert torch.equal(batch.deltas, torch.stack([flat[r] for r in rows]))
    assert (batch.deltas.data_ptr() == flat[rows[0]].data_ptr()) == shares


def test_stack_of_rows_padded_to_an_aligned_stride_is_a_view():
    padded = torch.arange(32, dtype=torch.float32).reshape(4, 8)[:, :5]  # rows 8 apart
    batch = UpdateBatch.stack([Update(i, padded[i], 3, {}) for i in range(4)], 5)
    assert torch.equal(batch.deltas, padded) and batch.deltas.stride() == (8, 1)
    assert batch.deltas.data_ptr() == padded.data_ptr()
    backwards = UpdateBatch.stack([Update(i, padded[3 - i], 3, {}) for i in range(4)], 5)
    assert torch.equal(backwards.deltas, padded.flip(0)) and backwards.deltas.is_contiguous()


def test_stack_copies_rows_of_different_tensors_and_strided_rows():
    a, b = torch.ones(5), torch.zeros(5)
    batch = UpdateBatch.stack([Update(0, a, 1, {}), Update(1, b, 1, {})], 5)
    assert torch.equal(batch.deltas, torch.stack([a, b]))
    assert batch.deltas.data_ptr() != a.data_ptr()
    cols = torch.arange(20, dtype=torch.float32).reshape(5, 4).t()  # rows with stride 4
    batch = UpdateBatch.stack([Update(i, cols[i], 1, {}) for i in range(4)], 5)
    assert torch.equal(batch.deltas, cols) and batch.deltas.is_contiguous()
