"""The hand-written batched MLP kernel against torch.func (vmap + one reverse pass, the
vectorized engine's general path); its deferred low-rank SGD against SGD steps on explicit
weights, with clients stopping early, padding, and folds; and which models it takes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from privfl.engine.batched_mlp import (
    BatchedMLP,
    CohortSGD,
    _RoundDeferred,
    _Windowed,
    cohort_rows,
)
from privfl.models import MLPConfig


def _reference_grads(model, params, x, y, mask):
    """Each client's gradient of its masked mean cross-entropy, through torch.func."""
    k, b = y.shape
    leaves = {n: w.detach().clone().requires_grad_(True) for n, w in params.items()}
    logits = vmap(lambda p, xx: functional_call(model, p, (xx,)))(leaves, x)
    ce = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
    ce = ce.view(k, b)
    loss = ce.mean(1) if mask is None else (ce * mask).sum(1) / mask.sum(1)
    grads = torch.autograd.grad(loss.sum(), list(leaves.values()))
    return dict(zip(leaves, grads, strict=True)), loss


def _cohort(activation: str, k: int = 4, b: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = MLPConfig(hidden=[7, 5], activation=activation).build((2, 3, 3), 4)
    params = {
        n: w.detach() + 0.3 * torch.randn((k, *w.shape), generator=g)
        for n, w in model.named_parameters()
    }
    x = torch.randn((k, b, 2, 3, 3), generator=g)
    y = torch.randint(0, 4, (k, b), generator=g)
    mask = (torch.rand((k, b), generator=g) < 0.7).float()
    mask[:, 0] = 1.0  # every client has a real example
    return model, params, x, y, mask


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("masked", [False, True])
def test_gradients_and_losses_equal_torch_func(activation, masked):
    model, params, x, y, mask = _cohort(activation)
    mask = mask if masked else None
    kernel = BatchedMLP.of(model)
    assert kernel is not None
    grads, loss = kernel.gradients(params, x, y, mask)
    ref, ref_loss = _reference_grads(model, params, x, y, mask)
    assert grads.keys() == ref.keys()
    for n in ref:
        assert torch.allclose(grads[n], ref[n], atol=1e-6, rtol=1e-5), n
    assert torch.allclose(loss, ref_loss, atol=1e-6)


@pytest.mark.parametrize(
    ("hidden", "batch"),
    [
        ([40, 30], 4),  # deferred layers: capacity 12 and 12 (3 steps), then folds
        ([200], 5),  # a wide layer that never folds in 6 steps; the 4-logit one is dense
        ([6], 8),  # too narrow to defer: dense everywhere
    ],
)
def test_cohort_sgd_is_plain_sgd(hidden, batch, gemm_library):
    g = torch.Generator().manual_seed(7)
    model = MLPConfig(hidden=hidden, activation="tanh").build((2, 3, 3), 4)
    start = {n: w.detach().clone() for n, w in model.named_parameters()}
    c, lr = 5, 0.3
    active = [5, 5, 4, 4, 2, 1]  # clients stop early: rows [0, k) train at each step
    cohort = CohortSGD(BatchedMLP.of(model), start, c, batch)
    explicit = {n: w.expand(c, *w.shape).clone() for n, w in start.items()}
    for k in active:
        x = torch.randn((k, batch, 2, 3, 3), generator=g)
        y = torch.randint(0, 4, (k, batch), generator=g)
        mask = (torch.rand((k, batch), generator=g) < 0.6).float()
        mask[:, 0] = 1.0
        ref, ref_loss = _reference_grads(model, {n: w[:k] for n, w in explicit.items()}, x, y, mask)
        for n in explicit:
            explicit[n][:k] -= lr * ref[n]
        loss = cohort.step(x, y, mask, lr)
        assert torch.allclose(loss, ref_loss, atol=1e-5)
    want = torch.cat([(explicit[n] - start[n]).reshape(c, -1) for n in start], dim=1)
    got = cohort.deltas(list(start))
    assert got.shape == want.shape
    assert want.abs().max() > 1e-2  # the steps moved the weights
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


def test_takes_only_flatten_linear_activation_stacks():
    assert BatchedMLP.of(nn.Sequential(nn.Linear(3, 2))) is not None
    assert BatchedMLP.of(nn.Sequential(nn.Flatten(), nn.Linear(3, 4, bias=False))) is not None
    others = [
        nn.Sequential(nn.Linear(3, 4), nn.ReLU()),  # ends with an activation
        nn.Sequential(nn.Linear(3, 4), nn.Dropout(), nn.Linear(4, 2)),
        nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)),
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2)),
        nn.Sequential(nn.Linear(3, 4), nn.Flatten(), nn.Linear(4, 2)),  # a Flatten inside
        nn.Sequential(nn.ReLU(), nn.Linear(3, 2)),
        nn.Linear(3, 2),  # not a Sequential
    ]
    assert all(BatchedMLP.of(m) is None for m in others)


def test_clipped_sums_equal_clipping_per_example_gradients():
    # Ghost norms against the definition: every example's own gradient (torch.func, one
    # example at a time), Opacus' flat clipping factor, the sum over the lot's real examples.
    model, params, x, y, mask = _cohort("relu", k=3, b=5, seed=4)
    clip = 0.3
    sums, losses, norms = BatchedMLP.of(model).clipped_gradient_sums(
        params, x, y, lambda n: (clip / (n + 1e-6)).clamp(max=1.0) * mask
    )
    for i in range(3):
        want = {n: torch.zeros_like(w[i]) for n, w in params.items()}
        for j in range(5):
            one = {n: w[i : i + 1] for n, w in params.items()}
            g, loss = _reference_grads(
                model, one, x[i : i + 1, j : j + 1], y[i : i + 1, j : j + 1], None
            )
            norm = torch.sqrt(sum(v.square().sum() for v in g.values()))
            assert norms[i, j] == pytest.approx(float(norm), rel=1e-5)
            assert losses[i, j] == pytest.approx(float(loss.detach()), rel=1e-5)
            factor = min(1.0, clip / (float(norm) + 1e-6)) * float(mask[i, j])
            for n in want:
                want[n] += factor * g[n][0]
        assert (norms[i] > clip).any()  # the clip bites
        for n in want:
            assert torch.allclose(sums[n][i], want[n], atol=1e-6), n


@pytest.mark.parametrize(
    ("shape", "hidden", "batch", "bias", "windows"),
    [
        ((2, 3, 3), [40, 30], 4, True, 5),  # 18 inputs: windows of 2 steps (8 rows), 4 folds
        ((4, 8, 8), [200], 5, True, 1),  # 256 inputs: one window (100 rows) for the round
        ((2, 3, 3), [6], 3, False, 10),  # too narrow to defer: windows of one step, no biases
        ((2, 3, 3), [], 4, True, 10),  # one Linear (4 logits, too narrow: one-step windows)
        ((2, 3, 3), [40, "none", 30], 4, True, 5),  # Linear into Linear, no activation
    ],
)
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_cohort_run_is_plain_sgd_on_each_clients_batches(
    shape, hidden, batch, bias, windows, activation, monkeypatch, gemm_library
):
    g = torch.Generator().manual_seed(3)
    if "none" in hidden:  # hidden Linear layers without an activation between the first two
        widths = [w for w in hidden if w != "none"]
        model = MLPConfig(hidden=widths, activation=activation).build(shape, 4)
        first_act = next(
            i for i, m in enumerate(model) if not isinstance(m, (nn.Linear, nn.Flatten))
        )
        model = nn.Sequential(*[m for i, m in enumerate(model) if i != first_act])
    else:
        model = MLPConfig(hidden=hidden, activation=activation).build(shape, 4)
    if not bias:
        model = nn.Sequential(
            *[
                nn.Linear(m.in_features, m.out_features, bias=False)
                if isinstance(m, nn.Linear)
                else m
                for m in model
            ]
        )
    start = {n: w.detach().clone() for n, w in model.named_parameters()}
    c, lr, n = 5, 0.3, 200
    active = [5, 4, 4, 4, 4, 3, 3, 2, 2, 1]  # clients stop early (one after its first step)
    x = torch.randn((n, *shape), generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    index = torch.randint(0, n, (len(active), c, batch), generator=g)
    mask = (torch.rand((len(active), c, batch), generator=g) < 0.7).float()
    mask[:, :, 0] = 1.0
    for t, k in enumerate(active):
        mask[t, k:] = 0.0
    explicit = {name: w.expand(c, *w.shape).clone() for name, w in start.items()}
    want_losses = torch.zeros((len(active), c))
    for t, k in enumerate(active):
        live = {name: w[:k] for name, w in explicit.items()}
        ref, ref_loss = _reference_grads(model, live, x[index[t, :k]], y[index[t, :k]], mask[t, :k])
        for name in explicit:
            explicit[name][:k] -= lr * ref[name]
        want_losses[t, :k] = ref_loss.detach()
    cohort = CohortSGD(BatchedMLP.of(model), start, c, batch, rows=len(active) * batch)
    folds = []
    real_fold = _Windowed.fold
    monkeypatch.setattr(_Windowed, "fold", lambda self: folds.append(1) or real_fold(self))
    losses = cohort.run(x, y, index, mask, active, lr)
    assert len(folds) == windows - 1
    assert torch.allclose(losses, want_losses, atol=1e-5)
    want = torch.cat([(explicit[name] - start[name]).reshape(c, -1) for name in start], dim=1)
    got = cohort.deltas(list(start))
    assert want.abs().max() > 1e-2  # the steps moved the weights
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)
    # The same updates kept factored: written out, averaged without the rows, checked.
    factored = cohort.factored(list(start))
    assert torch.allclose(factored.rows(), want, atol=1e-5, rtol=1e-4)
    coef = torch.tensor([0.1, 0.3, 0.2, 0.25, 0.15])
    mean = factored.weighted_sum(coef)
    assert torch.allclose(mean.double(), coef.double() @ want.double(), atol=1e-6, rtol=1e-4)
    assert factored.finite().tolist() == [True] * c
    with pytest.raises(RuntimeError, match="after CohortSGD.run"):
        cohort.step(x[index[0]], y[index[0]], None, lr)
    # The factors' buffers start uninitialized: with NaN in them (what reused memory may
    # hold), the rows of clients that stopped must still be written (zeros), not read.
    real_init, real_begin = _RoundDeferred.__init__, _Windowed.begin

    def nan_init(self, *args):
        real_init(self, *args)
        self.a.fill_(float("nan"))
        self.g.fill_(float("nan"))

    def nan_begin(self, *args):
        real_begin(self, *args)
        self.g.fill_(float("nan"))

    monkeypatch.setattr(_RoundDeferred, "__init__", nan_init)
    monkeypatch.setattr(_Windowed, "begin", nan_begin)
    again = CohortSGD(BatchedMLP.of(model), start, c, batch, rows=len(active) * batch)
    again.run(x, y, index, mask, active, lr)
    assert torch.equal(again.deltas(list(start)), got)
    assert torch.equal(again.factored(list(start)).rows(), factored.rows())


def test_cohort_rows_start_on_cache_lines():
    rows = cohort_rows(3, 199210, torch.empty(0))  # W1's dim: 199210 floats, 8 bytes off
    assert rows.shape == (3, 199210) and rows.stride() == (199216, 1)
    assert all(row.data_ptr() % 64 == 0 for row in rows)
    assert cohort_rows(2, 16, torch.empty(0, dtype=torch.float64)).stride() == (16, 1)


def test_a_round_layers_delta_applies_its_step_size_and_it_refuses_descend():
    """_RoundDeferred keeps raw gradients with -lr as alpha: its (inherited) delta must apply
    alpha, before and after a fold; descend (which stores -lr g) is the step path's only."""
    g = torch.Generator().manual_seed(0)
    start = torch.randn((3, 5), generator=g)
    layer = _RoundDeferred(start, None, clients=2, capacity=2, alpha=-0.5)
    want = torch.zeros((2, 3, 5), dtype=torch.float64)
    for _ in range(3):  # 3 steps of 1 row into a capacity of 2: one fold on the way
        layer.prepare(1)
        a, gr = torch.randn((2, 1, 5), generator=g), torch.randn((2, 1, 3), generator=g)
        layer.input_slot(2, 1).copy_(a)
        layer.grad_slot(2, 1).copy_(gr)
        layer.commit(2, 1)
        want += -0.5 * gr.double().transpose(1, 2) @ a.double()
    assert layer.stacked  # the fold happened
    torch.testing.assert_close(layer.delta(start).double(), want, rtol=1e-5, atol=1e-6)
    out = torch.empty((2, 3, 5))
    torch.testing.assert_close(layer.delta(start, out).double(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="commit"):
        layer.descend(gr, a, 0.1)
