"""Tests of privfl/models.py: opacus compatibility, shapes, hand-counted sizes, seeding, init."""

from __future__ import annotations

import pytest
import torch
from opacus.validators import ModuleValidator
from pydantic import ValidationError
from torch import nn

from privfl.models import DLG_LENET, CNNConfig, LogisticRegressionConfig, MLPConfig, create_model

INPUT_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]

MODEL_CONFIGS = [
    pytest.param(LogisticRegressionConfig(), id="logreg"),
    pytest.param(MLPConfig(hidden=[32, 16], activation="relu"), id="mlp-relu"),
    pytest.param(MLPConfig(hidden=[32], activation="tanh"), id="mlp-tanh"),
    pytest.param(MLPConfig(hidden=[32], activation="sigmoid"), id="mlp-sigmoid"),
    pytest.param(MLPConfig(hidden=[]), id="mlp-no-hidden"),
    pytest.param(CNNConfig(), id="cnn-group"),
    pytest.param(CNNConfig(channels=[12, 6], hidden=[16]), id="cnn-group-odd-channels"),
    pytest.param(CNNConfig(channels=[8, 8], norm="none"), id="cnn-no-norm"),
    pytest.param(CNNConfig(channels=[8, 8], pool=False), id="cnn-no-pool"),
    pytest.param(CNNConfig(channels=[16, 16, 16, 16], pool=True), id="cnn-pool-until-small"),
    pytest.param(CNNConfig(channels=[8, 16], stride=[2, 1], pool=False), id="cnn-strides"),
    pytest.param(DLG_LENET, id="cnn-dlg-lenet"),
]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("config", MODEL_CONFIGS)
@pytest.mark.parametrize("input_shape", INPUT_SHAPES, ids=str)
def test_every_model_is_opacus_valid_and_outputs_batch_by_classes(config, input_shape):
    model = create_model(config, input_shape, num_classes=7, seed=0)

    assert ModuleValidator.validate(model, strict=False) == []
    out = model(torch.randn(3, *input_shape))
    assert out.shape == (3, 7)
    assert out.dtype == torch.float32
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())


# Each count written out layer by layer: weights + biases (+ GroupNorm's 2 per channel).
PARAM_COUNTS = [
    pytest.param(LogisticRegressionConfig(), (1, 8, 8), 10, 64 * 10 + 10, id="logreg-64-10"),
    pytest.param(MLPConfig(hidden=[64]), (1, 8, 8), 10, 64 * 64 + 64 + 64 * 10 + 10, id="mlp"),
    pytest.param(
        MLPConfig(hidden=[256, 256]),
        (1, 8, 8),
        10,
        (64 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10),
        id="mlp-64-256-256-10",
    ),
    pytest.param(
        # 28 -conv(k3,p1)-> 28 -pool-> 14 -conv-> 14 -pool-> 7: 64 * 7 * 7 = 3136 features
        CNNConfig(),
        (1, 28, 28),
        10,
        (32 * 1 * 9 + 32)
        + 2 * 32
        + (64 * 32 * 9 + 64)
        + 2 * 64
        + (3136 * 128 + 128)
        + (128 * 10 + 10),
        id="cnn-default-28",
    ),
    pytest.param(
        # 32 -conv(k3,p1,s2)-> 16 -conv(s1)-> 16: 16 * 16 * 16 = 4096 features
        CNNConfig(channels=[8, 16], stride=[2, 1], pool=False, norm="none", hidden=[]),
        (3, 32, 32),
        5,
        (8 * 3 * 9 + 8) + (16 * 8 * 9 + 16) + (4096 * 5 + 5),
        id="cnn-strides-32",
    ),
    pytest.param(
        # 8 -pool-> 4 -pool-> 2 -pool-> 1, then no pool (map < 2x2): 4 * 1 * 1 features
        CNNConfig(channels=[4, 4, 4, 4], norm="none", hidden=[]),
        (1, 8, 8),
        3,
        (4 * 1 * 9 + 4) + 3 * (4 * 4 * 9 + 4) + (4 * 3 + 3),
        id="cnn-pool-skip-8",
    ),
]


@pytest.mark.parametrize(("config", "input_shape", "num_classes", "expected"), PARAM_COUNTS)
def test_parameter_count_matches_hand_formula(config, input_shape, num_classes, expected):
    model = create_model(config, input_shape, num_classes, seed=0)
    assert n_params(model) == expected


def test_mlp_64_256_256_10_has_85002_parameters():
    # The acceptance check of a later issue relies on this exact number.
    model = create_model(MLPConfig(hidden=[256, 256]), (1, 8, 8), 10, seed=0)
    assert n_params(model) == 85_002


def test_dlg_lenet_has_the_architecture_of_zhu_et_al_2019():
    # DLG (Zhu et al. 2019) LeNet for 32x32x3: three 5x5 convs with 12 channels, strides
    # 2, 2, 1, padding 2, sigmoid, no pooling or norm: 32 -> 16 -> 8 -> 8, so the single
    # Linear layer sees 12 * 8 * 8 = 768 features.
    model = create_model(DLG_LENET, (3, 32, 32), 10, seed=0)

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 12), (12, 12), (12, 12)]
    assert [c.kernel_size for c in convs] == [(5, 5)] * 3
    assert [c.stride for c in convs] == [(2, 2), (2, 2), (1, 1)]
    assert [c.padding for c in convs] == [(2, 2)] * 3
    assert len(linears) == 1
    assert (linears[0].in_features, linears[0].out_features) == (768, 10)
    assert sum(isinstance(m, nn.Sigmoid) for m in model.modules()) == 3
    assert not any(isinstance(m, nn.MaxPool2d | nn.GroupNorm) for m in model.modules())


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("config", MODEL_CONFIGS)
def test_create_model_seeding_is_reproducible_and_leaves_global_rng_alone(config):
    torch.manual_seed(1234)
    before = torch.get_rng_state()

    a = create_model(config, (1, 8, 8), 10, seed=7)
    b = create_model(config, (1, 8, 8), 10, seed=7)
    c = create_model(config, (1, 8, 8), 10, seed=8)

    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(c))


@pytest.mark.parametrize("scale", [0.05, 0.3, 2.0])
def test_uniform_init_fills_every_parameter_from_the_whole_interval(scale):
    # PyTorch's default init of Linear(256, ...) is U(+-1/16) and of GroupNorm is 1 / 0, so
    # a tensor whose largest |value| is near `scale` really was re-drawn.
    config = CNNConfig(channels=[8, 16], hidden=[256], init="uniform", init_scale=scale)
    model = create_model(config, (1, 28, 28), 10, seed=0)

    for name, p in model.named_parameters():
        assert p.abs().max().item() <= scale, name
        assert p.abs().max().item() > 0.5 * scale, name
        assert p.unique().numel() > 1, name


def test_stride_list_of_wrong_length_is_a_validation_error():
    with pytest.raises(ValidationError, match="stride has 3 entries but channels has 2"):
        CNNConfig(channels=[8, 8], stride=[1, 2, 1])


def test_cnn_on_flat_input_shape_is_an_error():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        create_model(CNNConfig(), (64,), 10, seed=0)


def test_degenerate_groupnorm_and_wrong_input_rank_are_config_errors():
    from privfl.errors import ConfigError

    with pytest.raises(ConfigError, match="1x1 map"):
        create_model(CNNConfig(channels=[8, 8, 8, 8]), (1, 8, 8), 10, 0)
    with pytest.raises(ConfigError, match=r"\(C, H, W\)"):
        create_model(CNNConfig(), (64,), 10, 0)
