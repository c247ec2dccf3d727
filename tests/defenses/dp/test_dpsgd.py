"""DP-SGD inside a client: per-example clipping against a slow per-example loop, the
degenerate equivalence with SGD, the noise level, empty Poisson lots, bad models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from privfl.client import LocalTraining, SGDTrainer
from privfl.defenses.dp.dpsgd import DPSGDTrainer, RecordExampleLevelSpending, client_schedule
from privfl.errors import PrivflError
from privfl.ledger import Ledger, Unit, client_party
from privfl.stages import RoundContext
from privfl.update import ParamSpec, UpdateBatch


def _setup(n=12, seed=0, model=None):
    torch.manual_seed(seed)
    model = model or nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    spec = ParamSpec.of(model)
    g = spec.flatten(model)
    x = torch.randn(n, 1, 4, 4)
    y = torch.randint(0, 3, (n,))
    return model, spec, g, x, y


def _train(trainer, model, spec, g, x, y, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return trainer.train(model, spec, g, x, y, gen, client_id=0, round=1)


def _slow_clipped_step(make_model, spec, g, x, y, lr):
    """The reference for one full-batch DP-SGD step (q = 1, sigma = 0), one backward pass per
    example: the update ``-lr * sum_i clip(g_i) / n`` with Opacus' flat clipping factor
    ``min(1, C / (||g_i|| + 1e-6))`` for C the median norm (half the examples clipped), C,
    and how many were clipped."""
    ref = make_model()
    spec.load_into(ref, g)
    grads = []
    for i in range(len(y)):
        loss = F.cross_entropy(ref(x[i : i + 1]), y[i : i + 1])
        grads.append(
            torch.cat([gr.reshape(-1) for gr in torch.autograd.grad(loss, ref.parameters())])
        )
    norms = [float(gr.norm()) for gr in grads]
    clip = float(np.median(norms))
    total = sum(gr * min(1.0, clip / (nm + 1e-6)) for gr, nm in zip(grads, norms, strict=True))
    return -lr * total / len(y), clip, sum(nm > clip for nm in norms)


def _dp_step(mode, model, spec, g, x, y, lr, clip):
    trainer = DPSGDTrainer(
        LocalTraining(lr=lr, steps=1, batch_size=None),
        clip=clip,
        noise_multiplier=0.0,
        grad_sample_mode=mode,
    )
    return _train(trainer, model, spec, g, x, y)


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
def test_clipped_gradient_matches_a_slow_per_example_loop(mode):
    model, spec, g, x, y = _setup()

    def make():
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))

    want, clip, clipped = _slow_clipped_step(make, spec, g, x, y, lr=0.5)
    delta, metrics = _dp_step(mode, model, spec, g, x, y, 0.5, clip)
    assert torch.allclose(delta, want, atol=1e-6)
    assert metrics["dp_clipped_fraction"] == pytest.approx(clipped / len(y))
    assert 0 < clipped < len(y)  # the test exercises both branches of the clip


def _cnn(channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 3),
    )


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
@pytest.mark.parametrize(
    ("channels", "layout"),
    [(1, "row-major"), (1, "unit channel stride"), (2, "row-major"), (2, "channels-last")],
)
def test_cnn_clipped_gradient_matches_a_slow_per_example_loop_in_any_layout(mode, channels, layout):
    # Opacus' "hooks" unfolds a convolution's input as if row-major: a channels-last input
    # (one-channel images with a unit channel stride count as such, as scikit-learn's digits
    # are stored, and pass the layout on to the next convolution) gave wrong per-example
    # gradients until DPSGDTrainer handed convolutions row-major inputs.
    torch.manual_seed(0)
    x = torch.randn(10, channels, 4, 4)
    if layout == "unit channel stride":
        x = torch.empty_strided(x.shape, (16, 1, 4, 1)).copy_(x)  # as the digits are stored
    elif layout == "channels-last":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (10,))
    model = _cnn(channels)
    spec = ParamSpec.of(model)
    g = spec.flatten(model)
    want, clip, clipped = _slow_clipped_step(
        lambda: _cnn(channels), spec, g, x.clone(memory_format=torch.contiguous_format), y, 0.5
    )
    delta, metrics = _dp_step(mode, model, spec, g, x, y, 0.5, clip)
    assert torch.allclose(delta, want, atol=1e-6)
    assert metrics["dp_clipped_fraction"] == pytest.approx(clipped / len(y))
    assert 0 < clipped < len(y)
    assert all(not m._forward_pre_hooks for m in model.modules())  # the layout hooks are gone


def test_no_noise_and_huge_clip_equals_plain_sgd():
    model, spec, g, x, y = _setup()
    training = LocalTraining(
        lr=0.3, momentum=0.5, weight_decay=1e-3, steps=4, batch_size=None, prox_mu=0.2
    )
    dp = DPSGDTrainer(training, clip=1e20, noise_multiplier=0.0)
    d_dp, _ = _train(dp, model, spec, g, x, y)
    d_plain, _ = _train(SGDTrainer(training), model, spec, g, x, y)
    assert torch.allclose(d_dp, d_plain, atol=1e-6)
    # Either knob turned on makes it differ.
    for kw in ({"clip": 1e-2, "noise_multiplier": 0.0}, {"clip": 1e20, "noise_multiplier": 1.0}):
        d, _ = _train(DPSGDTrainer(training, **kw), model, spec, g, x, y)
        assert not torch.allclose(d, d_plain, atol=1e-4)


def test_noise_level_matches_sigma():
    # Gradients clipped to ~0, so the update is the noise alone:
    # ||delta||^2 ~ steps * d * (sigma C lr / B)^2 (Opacus' test_noise_level, within 10%).
    model, spec, g, x, y = _setup(n=40)
    steps, lr, b, sigma, clip = 5, 0.1, 10, 1e6, 1e-6
    trainer = DPSGDTrainer(
        LocalTraining(lr=lr, steps=steps, batch_size=b), clip=clip, noise_multiplier=sigma
    )
    delta, _ = _train(trainer, model, spec, g, x, y)
    expected = steps * spec.dim * (sigma * clip * lr / b) ** 2
    assert float(delta.pow(2).sum()) == pytest.approx(expected, rel=0.1)


def test_empty_poisson_lots_still_take_a_noisy_step():
    model, spec, g, x, y = _setup(n=20)
    trainer = DPSGDTrainer(
        LocalTraining(lr=0.1, steps=30, batch_size=1), clip=1.0, noise_multiplier=1.0
    )
    delta, metrics = _train(trainer, model, spec, g, x, y)
    assert metrics["dp_steps"] == 30 and metrics["dp_sample_rate"] == pytest.approx(0.05)
    assert torch.isfinite(delta).all() and float(delta.norm()) > 0
    # The model is clean afterwards: no Opacus hooks or per-example attributes remain.
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_same_generator_same_update_and_schedule():
    model, spec, g, x, y = _setup()
    trainer = DPSGDTrainer(
        LocalTraining(lr=0.1, epochs=2, batch_size=4), clip=1.0, noise_multiplier=1.0
    )
    a, ma = _train(trainer, model, spec, g, x, y, seed=3)
    b, _ = _train(trainer, model, spec, g, x, y, seed=3)
    c, _ = _train(trainer, model, spec, g, x, y, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    sched = client_schedule(12, LocalTraining(lr=0.1, epochs=2, batch_size=4))
    assert ma["dp_steps"] == sched.steps == 6 and sched.sample_rate == pytest.approx(1 / 3)


def test_batchnorm_model_is_refused_with_the_fix():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    _, spec, g, x, y = _setup(model=model)
    trainer = DPSGDTrainer(LocalTraining(lr=0.1, steps=1), clip=1.0, noise_multiplier=1.0)
    with pytest.raises(PrivflError, match="replace BatchNorm with GroupNorm"):
        _train(trainer, model, spec, g, x, y)


def test_record_stage_writes_one_event_per_client():
    led = Ledger(delta=1e-5)
    ctx = RoundContext(2, 0, torch.zeros(3), None, 10, np.array([1, 4]), led)  # type: ignore[arg-type]
    batch = UpdateBatch(
        client_ids=np.array([1, 4, 10]),
        deltas=torch.zeros(3, 3),
        weights=np.array([10.0, 30.0, 5.0]),
        metrics={
            "dp_steps": np.array([5.0, 8.0, np.nan]),  # client 10: a canary, no budget
            "dp_sample_rate": np.array([0.1, 0.05, np.nan]),
            "dp_noise_multiplier": np.array([1.2, 1.2, np.nan]),
            "dp_clipped_fraction": np.array([0.5, 1.0, np.nan]),
        },
    )
    out = RecordExampleLevelSpending().apply(batch, ctx)
    assert [(e.party, e.steps, e.sample_rate, e.round, e.protects) for e in led.events] == [
        (client_party(1), 5, 0.1, 2, Unit.EXAMPLE.value),
        (client_party(4), 8, 0.05, 2, Unit.EXAMPLE.value),
    ]
    assert out.info["dp_clipped_fraction"] == pytest.approx((0.5 * 10 + 1.0 * 30) / 40)
