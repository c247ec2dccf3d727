"""The plain SGD client trains CNNs in channels-last layout on the CPU: the same model as an
NCHW autograd loop to float rounding, in the flat layout of ParamSpec; a hand-written CNN
stays NCHW."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from privfl.client import LocalTraining, SGDTrainer, batch_schedule
from privfl.models import CNNConfig
from privfl.update import ParamSpec


def _nchw_reference(model, start, spec, x, y, training, seed):
    """Plain autograd SGD in NCHW on the same batches (the client's own stream)."""
    spec.load_into(model, start)
    opt = torch.optim.SGD(model.parameters(), lr=training.lr)
    g = torch.Generator().manual_seed(seed)
    for idx in batch_schedule(len(y), training.batch_size, training.epochs, training.steps, g):
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]) - start


def test_a_cnn_trains_channels_last_to_the_nchw_model():
    torch.manual_seed(0)
    build = lambda: CNNConfig(channels=[8, 16], hidden=[32]).build((3, 16, 16), 10)  # noqa: E731
    model = build()
    spec = ParamSpec.of(model)
    start = spec.flatten(model)
    x, y = torch.randn(40, 3, 16, 16), torch.randint(0, 10, (40,))
    training = LocalTraining(lr=0.1, batch_size=8, epochs=2)
    delta, _ = SGDTrainer(training).train(
        model, spec, start, x, y, torch.Generator().manual_seed(5), client_id=0, round=1
    )
    conv = model[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    want = _nchw_reference(build(), start, spec, x, y, training, 5)
    assert want.abs().max() > 1e-2  # it trained
    torch.testing.assert_close(delta, want, rtol=1e-4, atol=1e-6)
    # The flat vector is in ParamSpec's (logical) order whatever the layout.
    assert torch.equal(spec.unflatten(spec.flatten(model))["0.weight"], conv.weight.detach())


class _ViewsItsMaps(torch.nn.Module):
    """A hand-written CNN whose forward ``.view``s its feature map (fine in NCHW, an error
    on channels-last strides)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.head(h.view(h.shape[0], -1))


def test_a_hand_written_cnn_keeps_nchw():
    torch.manual_seed(0)
    model = _ViewsItsMaps()
    spec = ParamSpec.of(model)
    start = spec.flatten(model)
    x, y = torch.randn(12, 1, 4, 4), torch.randint(0, 3, (12,))
    training = LocalTraining(lr=0.1, batch_size=4)
    delta, _ = SGDTrainer(training).train(
        model, spec, start, x, y, torch.Generator().manual_seed(2), client_id=0, round=1
    )
    assert model.conv.weight.is_contiguous()
    want = _nchw_reference(_ViewsItsMaps(), start, spec, x, y, training, 2)
    torch.testing.assert_close(delta, want, rtol=1e-5, atol=1e-7)
