"""DP-SGD on a CNN whose convolution follows a max-pool: PyTorch's ExpandedWeights ("ew",
the default grad_sample_mode) fails there, so the trainer finds it out once and computes the
per-example gradients with "functorch", giving the functorch trainer's numbers."""

from __future__ import annotations

import logging

import torch
from conftest import small_config

from privfl.defenses.dp.dpsgd import DPSGDTrainer
from privfl.federation import Federation
from privfl.plan import local_training_of
from privfl.seeding import torch_generator

CNN = {"name": "cnn", "channels": [4, 6], "hidden": [8], "norm": "none"}


def _delta(fed, cfg, mode: str) -> torch.Tensor:
    part = fed.data.partition.indices[0]
    x, y = fed.data.bundle.train.x[part], fed.data.bundle.train.y[part]
    trainer = DPSGDTrainer(
        local_training_of(cfg), clip=0.3, noise_multiplier=0.5, grad_sample_mode=mode
    )
    delta, _ = trainer.train(
        fed.make_model(), fed.spec, fed.params, x, y, torch_generator(0, "c"), client_id=0, round=1
    )
    return delta


def test_ew_falls_back_to_functorch_on_a_conv_after_a_max_pool(caplog):
    cfg = small_config(model=CNN, federation={"batch_size": 12, "lr": 0.5, "local_steps": 3})
    fed = Federation(cfg)
    with caplog.at_level(logging.WARNING, logger="privfl.defenses.dp.dpsgd"):
        ew = _delta(fed, cfg, "ew")
    assert any("per-example gradients by 'functorch'" in r.getMessage() for r in caplog.records)
    functorch = _delta(fed, cfg, "functorch")
    assert torch.equal(ew, functorch)
    assert ew.abs().max() > 0


def test_ew_is_kept_where_it_works():
    cfg = small_config(federation={"batch_size": 12, "lr": 0.5, "local_steps": 2})
    fed = Federation(cfg)
    trainer = DPSGDTrainer(local_training_of(cfg), clip=0.3, noise_multiplier=0.0)
    model = fed.make_model()
    x, y = fed.data.client_train(0)
    trainer.train(model, fed.spec, fed.params, x, y, torch_generator(0, "c"), client_id=0, round=1)
    assert trainer._modes[id(model)] == "ew"
