"""The hand-written batched CNN kernel against torch.func (vmap + one reverse pass) and against
plain per-client SGD; its DP-SGD clipped sums (mixed ghost clipping) against Opacus' per-sample
gradients; the vectorized engine on CNNs against the sequential engine (plain SGD, momentum,
weight decay, FedProx, unequal clients, and DP-SGD on Opacus); which models it takes."""

from __future__ import annotations

import pytest
import torch
from conftest import small_config
from torch import nn
from torch.func import functional_call, vmap

import privfl
from privfl.accounting import import_opacus
from privfl.engine import VectorizedEngine
from privfl.engine.batched_cnn import BatchedCNN, CohortCNNSGD, _channels_last
from privfl.federation import Federation
from privfl.models import CNNConfig

MODELS = {
    # W2's shape, small: conv-relu-maxpool twice, dense head (the relu/maxpool swap)
    "relu-pool": lambda: CNNConfig(channels=[4, 6], hidden=[8], norm="none").build((3, 12, 12), 5),
    # one input channel (MNIST, digits): channels-last strides must be set, not inferred
    "one-channel": lambda: CNNConfig(channels=[4, 6], hidden=[8], norm="none").build(
        (1, 12, 12), 5
    ),
    # DLG's LeNet shape: 5x5 kernels, strides 2 then 1, sigmoid, no pooling, no hidden layer
    "sigmoid-stride": lambda: CNNConfig(
        channels=[4, 6],
        hidden=[],
        norm="none",
        kernel_size=5,
        stride=[2, 1],
        pool=False,
        activation="sigmoid",
    ).build((3, 12, 12), 5),
    # odd sizes, rectangular kernel, dilation, no bias, average and overlapping max pooling
    "misc": lambda: nn.Sequential(
        nn.Conv2d(2, 5, (3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1), bias=False),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(5, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(3 * 3 * 1, 7),
        nn.Sigmoid(),
        nn.Linear(7, 4, bias=False),
    ),
    # a second conv (weight gradient from its patches) with stride, dilation, a rectangular
    # kernel and uneven padding
    "patches": lambda: nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 3, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 5 * 9, 4),
    ),
    # privfl's default CNN: conv, GroupNorm, ReLU, max-pool
    "group-norm": lambda: CNNConfig(channels=[4, 6], hidden=[8]).build((3, 12, 12), 5),
}
SHAPES = {
    "relu-pool": (3, 12, 12),
    "one-channel": (1, 12, 12),
    "sigmoid-stride": (3, 12, 12),
    "misc": (2, 11, 7),
    "patches": (2, 9, 7),
    "group-norm": (3, 12, 12),
}


def _cohort(name: str, k: int = 3, b: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MODELS[name]()
    classes = model[-1].out_features
    params = {
        n: w.detach() + 0.3 * torch.randn((k, *w.shape), generator=g)
        for n, w in model.named_parameters()
    }
    x = torch.randn((k, b, *SHAPES[name]), generator=g)
    y = torch.randint(0, classes, (k, b), generator=g)
    mask = (torch.rand((k, b), generator=g) < 0.7).float()
    mask[:, 0] = 1.0
    return model, params, x, y, mask


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


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("masked", [False, True])
def test_gradients_and_losses_equal_torch_func(name, masked, gemm_library):
    model, params, x, y, mask = _cohort(name)
    mask = mask if masked else None
    kernel = BatchedCNN.of(model)
    assert kernel is not None
    grads, loss = kernel.gradients(params, x, y, mask)
    ref, ref_loss = _reference_grads(model, params, x, y, mask)
    assert grads.keys() == ref.keys()
    for n in ref:
        assert grads[n].shape == ref[n].shape
        assert torch.allclose(grads[n], ref[n], atol=2e-6, rtol=1e-5), n
    assert torch.allclose(loss, ref_loss, atol=1e-6)


def test_one_channel_maps_get_channels_last_strides_on_the_same_memory():
    # PyTorch infers a one-channel map's layout from its strides: row-major ones count as NCHW
    # (the next conv's output would be NCHW, and every kernel after it), unit channel strides
    # as channels-last. The kernel runs channels-last either way, on the same numbers.
    x = torch.randn(5, 1, 4, 4)
    assert x.contiguous(memory_format=torch.channels_last).stride() == (16, 16, 4, 1)  # as is
    h = _channels_last(x)
    assert h.stride() == (16, 1, 4, 1) and h.data_ptr() == x.data_ptr() and torch.equal(h, x)
    assert not nn.functional.conv2d(h, torch.randn(3, 1, 3, 3)).is_contiguous()  # NHWC out
    many = torch.randn(5, 3, 4, 4)
    assert _channels_last(many).is_contiguous(memory_format=torch.channels_last)
    model, params, x, y, _ = _cohort("one-channel")
    unit = torch.empty_strided(x.shape, (720, 144, 1, 12, 1))  # (k, b, 1, 12, 12)
    kernel = BatchedCNN.of(model)
    a, _ = kernel.gradients(params, x, y, None)
    b, _ = kernel.gradients(params, unit.copy_(x), y, None)
    assert all(torch.equal(a[n], b[n]) for n in a)  # the same arithmetic, whatever the strides


def test_max_pool_ties_go_where_pytorch_sends_them():
    # A zero input makes every conv output equal its bias: each 2x2 window is a four-way tie,
    # which PyTorch resolves to the first; a kernel that split the gradient would differ.
    model, params, x, y, _ = _cohort("relu-pool")
    x[:, :2] = 0.0
    for n in params:
        if n.endswith("bias"):
            params[n] = params[n].abs() + 0.1  # positive: the ReLU passes the ties through
    grads, _ = BatchedCNN.of(model).gradients(params, x, y, None)
    ref, _ = _reference_grads(model, params, x, y, None)
    for n in ref:
        assert torch.allclose(grads[n], ref[n], atol=2e-6, rtol=1e-5), n


@pytest.mark.parametrize("name", ["relu-pool", "misc", "patches", "group-norm"])
def test_cohort_sgd_is_plain_sgd(name, gemm_library):
    # 4 clients from one start, 3 steps, the last client stopping after 1 and padded batches:
    # each client's result equals torch.optim.SGD on its own copy of the model.
    model, _, _, _, _ = _cohort(name)
    c, b, steps, lr = 4, 5, 3, 0.3
    g = torch.Generator().manual_seed(1)
    xs = torch.randn((steps, c, b, *SHAPES[name]), generator=g)
    ys = torch.randint(0, model[-1].out_features, (steps, c, b), generator=g)
    active = [4, 3, 3]
    masks = torch.ones((steps, c, b))
    masks[1, 2, 3:] = 0.0  # client 2 has a short second batch
    start = {n: w.detach().clone() for n, w in model.named_parameters()}
    kernel = BatchedCNN.of(model)
    cohort = CohortCNNSGD(kernel, start, c, b)
    for t, k in enumerate(active):
        mask = masks[t, :k] if t == 1 else None
        cohort.step(xs[t, :k], ys[t, :k], mask, lr)
    deltas = cohort.deltas(list(start))
    for i in range(c):
        m = MODELS[name]()
        m.load_state_dict(start)
        opt = torch.optim.SGD(m.parameters(), lr=lr)
        for t, k in enumerate(active):
            if i >= k:
                break
            real = masks[t, i] > 0
            opt.zero_grad()
            nn.functional.cross_entropy(m(xs[t, i][real]), ys[t, i][real]).backward()
            opt.step()
        want = torch.cat([(p.detach() - start[n]).flatten() for n, p in m.named_parameters()])
        assert torch.allclose(deltas[i], want, atol=2e-6), i


@pytest.mark.parametrize("name", ["relu-pool", "misc", "group-norm"])
def test_clients_split_over_threads_give_the_one_thread_numbers(name):
    # With n > 1 torch threads the spatial layers run in n groups of clients side by side,
    # each single-threaded: the same per-client arithmetic as one thread, in any grouping.
    model, params, x, y, mask = _cohort(name, k=5)
    kernel = BatchedCNN.of(model)
    start = {n: w[0].clone() for n, w in params.items()}
    threads = torch.get_num_threads()
    results = []
    for n in (1, 3):
        torch.set_num_threads(n)
        try:
            grads, loss = kernel.gradients(params, x, y, mask)
            cohort = CohortCNNSGD(kernel, start, 5, x.shape[1])
            cohort.step(x, y, mask, 0.3)
            cohort.step(x[:3], y[:3], None, 0.3)
            results.append((grads, loss, cohort.deltas(list(start))))
        finally:
            torch.set_num_threads(threads)
    (g1, l1, d1), (g3, l3, d3) = results
    assert d1.abs().max() > 1e-3
    assert torch.allclose(d1, d3, atol=1e-6, rtol=0)
    assert torch.allclose(l1, l3, atol=1e-6)
    for n in g1:
        assert torch.allclose(g1[n], g3[n], atol=1e-6, rtol=1e-5), n


def test_takes_affine_group_norm_only():
    model = MODELS["group-norm"]()
    groups = [m.num_groups for m in model if isinstance(m, nn.GroupNorm)]
    assert [n.groups for n in BatchedCNN.of(model).norm_layers] == groups
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2, affine=False), nn.Flatten())
    assert "affine" in BatchedCNN.unsupported(nn.Sequential(*plain, nn.Linear(72, 2)))


def test_takes_only_the_layers_it_batches():
    assert BatchedCNN.of(MODELS["relu-pool"]()) is not None
    assert "no convolution" in BatchedCNN.unsupported(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    depthwise = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(2, 2))
    assert "groups = 1" in BatchedCNN.unsupported(depthwise)


def _opacus_clipped_sums(model, params, x, y, clip):
    """Per client: Opacus' per-sample gradients (GradSampleModule hooks) of each example's
    cross-entropy, flat-clipped with Opacus' factor and summed."""
    import_opacus()
    from opacus import GradSampleModule

    sums, norms = [], []
    for i in range(len(y)):
        m = GradSampleModule(MODELS_BY_ID[id(model)]())
        m._module.load_state_dict({n: w[i] for n, w in params.items()})
        loss = nn.functional.cross_entropy(m(x[i]), y[i])  # grad_sample: each own loss
        loss.backward()
        per = {n: p.grad_sample for n, p in m._module.named_parameters()}
        norm = torch.stack([g.flatten(1).norm(dim=1) for g in per.values()], 1).norm(dim=1)
        factor = (clip / (norm + 1e-6)).clamp(max=1.0)
        sums.append({n: torch.einsum("l,l...->...", factor, g) for n, g in per.items()})
        norms.append(norm)
    return sums, torch.stack(norms)


MODELS_BY_ID: dict[int, object] = {}


@pytest.mark.parametrize("name", MODELS)
def test_clipped_sums_equal_opacus_per_sample_clipping(name, monkeypatch):
    model, params, x, y, mask = _cohort(name, k=3, b=6)
    MODELS_BY_ID[id(model)] = MODELS[name]
    kernel = BatchedCNN.of(model)
    _, _, norms = kernel.clipped_gradient_sums(params, x, y, torch.ones_like)
    clip = float(norms.median())  # half the examples clipped
    sums, _, norms = kernel.clipped_gradient_sums(
        params, x, y, lambda nrm: (clip / (nrm + 1e-6)).clamp(max=1.0)
    )
    ref, ref_norms = _opacus_clipped_sums(model, params, x, y, clip)
    assert torch.allclose(norms, ref_norms, rtol=1e-5, atol=1e-6)
    for i in range(len(y)):
        for n, want in ref[i].items():
            assert torch.allclose(sums[n][i], want, atol=2e-6, rtol=1e-5), (i, n)


def test_mixed_rule_takes_both_branches_and_they_agree(monkeypatch):
    # On 4x4 inputs the first conv has T = 16 outputs, D = 27, p = 4: 2 T^2 > p D, the
    # per-example gradient is formed; after the pool the second has T = 4, D = 36, p = 6:
    # 2 T^2 <= p D, the ghost norm. Forcing either branch everywhere gives the same numbers.
    import privfl.engine.batched_cnn as bc

    model = CNNConfig(channels=[4, 6], hidden=[8], norm="none").build((3, 4, 4), 5)
    g = torch.Generator().manual_seed(3)
    k, n = 2, 5
    params = {
        name: w.detach() + 0.3 * torch.randn((k, *w.shape), generator=g)
        for name, w in model.named_parameters()
    }
    x, y = torch.randn((k, n, 3, 4, 4), generator=g), torch.randint(0, 5, (k, n), generator=g)
    kernel = BatchedCNN.of(model)
    factor = lambda nrm: (0.5 / (nrm + 1e-6)).clamp(max=1.0)  # noqa: E731
    rule, calls = bc._ghost_norm_pays, []
    monkeypatch.setattr(bc, "_ghost_norm_pays", lambda *a: calls.append(a) or rule(*a))
    mixed = kernel.clipped_gradient_sums(params, x, y, factor)
    assert calls == [(4, 6, 36), (16, 4, 27)]  # backward order: conv 2 (ghost), conv 1
    assert [rule(*c) for c in calls] == [True, False]
    for forced in (True, False):
        monkeypatch.setattr(bc, "_ghost_norm_pays", lambda *a, f=forced: f)
        sums, _, norms = kernel.clipped_gradient_sums(params, x, y, factor)
        assert torch.allclose(norms, mixed[2], rtol=1e-5)
        for name in sums:
            assert torch.allclose(sums[name], mixed[0][name], atol=1e-6, rtol=1e-5), name


def _run(cfg, engine: str) -> Federation:
    fed = Federation(
        cfg.model_copy(update={"federation": cfg.federation.model_copy(update={"engine": engine})})
    )
    for _ in range(cfg.federation.rounds):
        fed.run_round()
    return fed


CNN = {"name": "cnn", "channels": [4, 6], "hidden": [8], "norm": "none"}
ENGINE_CASES = {
    "plain": {},
    "dirichlet": {"data": {"partition": "dirichlet", "alpha": 0.3, "clients": 12}},
    "momentum+wd+prox": {
        "federation": {"momentum": 0.9, "weight_decay": 1e-3, "prox_mu": 0.5, "batch_size": 7},
        "data": {"partition": "dirichlet", "alpha": 1.0, "clients": 12},
    },
}


def _cnn_config(case: str, norm: str) -> privfl.Config:
    """The CNN run of ``ENGINE_CASES[case]`` with ``norm`` (tests/test_device_workloads.py runs
    the "plain" one on the GPU)."""
    extra = ENGINE_CASES[case]
    return small_config(
        model={**CNN, "norm": norm},
        data=extra.get("data", {}),
        federation={
            "rounds": 2,
            "clients_per_round": 4,
            "batch_size": 16,
            "lr": 0.1,
            **extra.get("federation", {}),
        },
    )


def _dp_cnn_config(noise: float, norm: str, **dp) -> privfl.Config:
    """DP-SGD on the CNN with ``norm``: Dirichlet clients, momentum, clip 0.3; ``dp`` adds to
    the defense.dp section (tests/test_device_workloads.py runs it on the GPU)."""
    return small_config(
        model={**CNN, "norm": norm},
        data={"partition": "dirichlet", "alpha": 0.5, "clients": 10},
        federation={
            "rounds": 2,
            "clients_per_round": 3,
            "batch_size": 12,
            "lr": 0.5,
            "momentum": 0.5,
        },
        defense={"dp": {"mode": "sample", "noise_multiplier": noise, "clip": 0.3, **dp}},
    )


@pytest.mark.parametrize("norm", ["none", "group"])
@pytest.mark.parametrize("case", ENGINE_CASES)
def test_vectorized_cnn_gives_the_sequential_model(case, norm, gemm_library):
    cfg = _cnn_config(case, norm)
    seq, vec = _run(cfg, "sequential"), _run(cfg, "vectorized")
    assert not vec.engine.falls_back and vec.engine._cnn is not None
    moved = (seq.params - Federation(cfg).params).abs().max()
    assert moved > 1e-2
    assert torch.allclose(vec.params, seq.params, atol=2e-5, rtol=0)
    for a, b in zip(seq.metrics, vec.metrics, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


@pytest.mark.parametrize(
    ("noise", "norm", "opacus"),
    [(0.0, "none", "functorch"), (1.0, "none", "functorch"), (1.0, "group", "functorch")]
    + [(1.0, "none", "hooks"), (1.0, "group", "hooks")],
)
def test_vectorized_cnn_dp_sgd_gives_the_opacus_model(noise, norm, opacus):
    # Same seed: the same Poisson lots and noise draws as DPSGDTrainer on Opacus, so the
    # models agree to float rounding (noise 0: Opacus' clipping alone).
    # "hooks" drifted 0.08-0.13 from both here while the digits were stored with a unit
    # channel stride, which PyTorch reads as channels-last: Opacus' hooks unfold assumes
    # row-major (DPSGDTrainer now hands convolutions row-major inputs, and ArrayDataset
    # keeps data row-major; the default "ew" failed on that layout too).
    cfg = _dp_cnn_config(noise, norm, grad_sample_mode=opacus)
    seq, vec = _run(cfg, "sequential"), _run(cfg, "vectorized")
    assert not vec.engine.falls_back and vec.engine._dp._cnn is not None
    moved = (seq.params - Federation(cfg).params).abs().max()
    assert moved > 1e-2
    assert torch.allclose(vec.params, seq.params, atol=5e-5, rtol=0)
    for a, b in zip(seq.metrics, vec.metrics, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["dp_clipped_fraction"] == pytest.approx(b["dp_clipped_fraction"], abs=1e-9)
    assert 0 < seq.metrics[-1]["dp_clipped_fraction"] <= 1
    assert VectorizedEngine.use_batched_cnn
