"""Evaluation runs a CNN channels-last (PyTorch's CPU max-pool is far faster so): the same
losses and predictions as the model's own NCHW forward, to float rounding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from privfl.evaluation import per_example
from privfl.models import CNNConfig, MLPConfig


def test_cnn_evaluation_equals_its_nchw_forward():
    g = torch.Generator().manual_seed(0)
    model = CNNConfig(channels=[4, 6], hidden=[8], norm="none").build((3, 12, 12), 5)
    x = torch.randn((37, 3, 12, 12), generator=g)
    y = torch.randint(0, 5, (37,), generator=g)
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    hook = conv.register_forward_pre_hook(
        lambda _, inp: seen.append(inp[0].is_contiguous(memory_format=torch.channels_last))
    )
    losses, correct = per_example(model, x, y, batch_size=16)
    hook.remove()
    assert seen == [True, True, True]  # three batches, each channels-last
    with torch.no_grad():
        logits = model(x)  # NCHW throughout
    want = F.cross_entropy(logits, y, reduction="none").double()
    assert torch.allclose(losses, want, atol=1e-6)
    assert torch.equal(correct, (logits.argmax(1) == y).double())
    assert x.is_contiguous()  # the caller's tensor is not changed


def test_images_into_an_mlp_stay_as_they_are():
    g = torch.Generator().manual_seed(1)
    model = MLPConfig(hidden=[7]).build((1, 4, 4), 3)
    x = torch.randn((10, 1, 4, 4), generator=g)
    y = torch.randint(0, 3, (10,), generator=g)
    losses, _ = per_example(model, x, y, batch_size=4)
    with torch.no_grad():
        want = F.cross_entropy(model(x), y, reduction="none").double()
    assert torch.equal(losses, want)  # no layout change, so bit for bit
