"""DP-SGD where PyTorch's ExpandedWeights ("ew", the default grad_sample_mode) fails: on a
CNN fed channels-last inputs (its convolution rule views a gradient in that layout), the
trainer finds it out once and computes the per-example gradients with "functorch", giving the
functorch trainer's numbers. (privfl's digits were stored with a unit channel stride, which
PyTorch reads as channels-last, until ArrayDataset gave every data set row-major strides.)"""

from __future__ import annotations

import logging

import torch
from conftest import small_config

from privfl.defenses.dp.dpsgd import DPSGDTrainer
from privfl.federation import Federation
from privfl.plan import local_training_of
from privfl.seeding import torch_generator

CNN = {"name": "cnn", "channels": [4, 6], "hidden": [8], "norm": "none"}


def _delta(fed, cfg, mode: str, x: torch.Tensor) -> torch.Tensor:
    y = fed.data.bundle.train.y[fed.data.partition.indices[0]]
    trainer = DPSGDTrainer(
        local_training_of(cfg), clip=0.3, noise_multiplier=0.5, grad_sample_mode=mode
    )
    delta, _ = trainer.train(
        fed.make_model(), fed.spec, fed.params, x, y, torch_generator(0, "c"), client_id=0, round=1
    )
    return delta


def test_ew_falls_back_to_functorch_on_channels_last_inputs(caplog):
    cfg = small_config(model=CNN, federation={"batch_size": 12, "lr": 0.5, "local_steps": 3})
    fed = Federation(cfg)
    x = fed.data.client_train(0)[0]
    assert x.stride() == (64, 64, 8, 1)  # row-major, as ArrayDataset keeps every data set
    unit = torch.empty_strided(x.shape, (64, 1, 8, 1)).copy_(x)  # read as channels-last
    with caplog.at_level(logging.WARNING, logger="privfl.defenses.dp.dpsgd"):
        ew = _delta(fed, cfg, "ew", unit)
    assert any("per-example gradients by 'functorch'" in r.getMessage() for r in caplog.records)
    functorch = _delta(fed, cfg, "functorch", unit)
    assert torch.equal(ew, functorch)
    assert ew.abs().max() > 0
    # In the row-major layout ExpandedWeights works on the same CNN, and agrees.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="privfl.defenses.dp.dpsgd"):
        row_major = _delta(fed, cfg, "ew", x)
    assert not any("by 'functorch'" in r.getMessage() for r in caplog.records)
    assert torch.allclose(row_major, functorch, atol=1e-6)


def test_ew_is_kept_where_it_works():
    cfg = small_config(federation={"batch_size": 12, "lr": 0.5, "local_steps": 2})
    fed = Federation(cfg)
    trainer = DPSGDTrainer(local_training_of(cfg), clip=0.3, noise_multiplier=0.0)
    model = fed.make_model()
    x, y = fed.data.client_train(0)
    trainer.train(model, fed.spec, fed.params, x, y, torch_generator(0, "c"), client_id=0, round=1)
    assert trainer._modes[id(model)] == "ew"
