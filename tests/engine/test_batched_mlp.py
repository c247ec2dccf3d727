"""The hand-written batched MLP step against torch.func (vmap + one reverse pass, the
vectorized engine's general path) and against plain SGD written out; and which models it
takes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from privfl.engine.batched_mlp import BatchedMLP
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
    grads, loss = kernel.step(params, x, y, mask)
    ref, ref_loss = _reference_grads(model, params, x, y, mask)
    assert grads.keys() == ref.keys()
    for n in ref:
        assert torch.allclose(grads[n], ref[n], atol=1e-6, rtol=1e-5), n
    assert torch.allclose(loss, ref_loss, atol=1e-6)


def test_fused_step_is_plain_sgd_in_place():
    model, params, x, y, mask = _cohort("relu", seed=1)
    ref, _ = _reference_grads(model, params, x, y, mask)
    expected = {n: w - 0.25 * ref[n] for n, w in params.items()}
    stacked = {n: w.clone() for n, w in params.items()}
    live = {n: w[:3] for n, w in stacked.items()}  # the engine passes views of active rows
    grads, _ = BatchedMLP.of(model).step(live, x[:3], y[:3], mask[:3], lr=0.25)
    assert grads == {}
    for n in params:
        assert torch.allclose(stacked[n][:3], expected[n][:3], atol=1e-6), n
        assert torch.equal(stacked[n][3:], params[n][3:])  # inactive rows untouched


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
