"""Models: logistic regression, MLP and a LeNet-style CNN with GroupNorm.

Every model here passes ``opacus.validators.ModuleValidator.validate`` (no BatchNorm, no
buffers), so the same architecture runs with and without DP-SGD. Each model's config class
carries its own ``name`` tag and builds the module, so the name lives in one place.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, Field, PositiveInt, model_validator
from torch import nn

from privfl.config_rules import SECTION_CONFIG
from privfl.errors import ConfigError

Activation = Literal["relu", "tanh", "sigmoid"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class _ModelConfigBase(BaseModel):
    """Options every model shares."""

    model_config = SECTION_CONFIG

    init: Literal["default", "uniform"] = Field(
        "default",
        description="'default': PyTorch's layer init; 'uniform': every weight and bias drawn "
        "from U(-init_scale, init_scale), the setting of the DLG/iDLG papers.",
    )
    init_scale: float = Field(0.5, gt=0, description="half-width of the 'uniform' init")

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        raise NotImplementedError


class LogisticRegressionConfig(_ModelConfigBase):
    """Multinomial logistic regression on flattened inputs."""

    name: Literal["logreg"] = Field("logreg", description="model type")

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


class MLPConfig(_ModelConfigBase):
    """Fully connected network: flatten, then ``hidden`` layers with ``activation``."""

    name: Literal["mlp"] = Field("mlp", description="model type")
    hidden: list[PositiveInt] = Field(default_factory=lambda: [64], description="hidden widths")
    activation: Activation = Field("relu", description="nonlinearity after each hidden layer")

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in self.hidden:
            layers += [nn.Linear(width, h), _ACTIVATIONS[self.activation]()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        return nn.Sequential(*layers)


class CNNConfig(_ModelConfigBase):
    """LeNet-style CNN: per entry of ``channels`` a conv, GroupNorm (optional), activation and
    2x2 max-pool (optional, skipped once the map is smaller than 2x2); then ``hidden`` dense
    layers. With ``norm="none", pool=false, kernel_size=5, stride=[2, 2, 1],
    activation="sigmoid", init="uniform"`` it is the LeNet of DLG (Zhu et al. 2019)."""

    name: Literal["cnn"] = Field("cnn", description="model type")
    channels: list[PositiveInt] = Field(
        default_factory=lambda: [32, 64], description="output channels of each conv layer"
    )
    hidden: list[PositiveInt] = Field(
        default_factory=lambda: [128], description="dense widths after the convs"
    )
    kernel_size: PositiveInt = Field(3, description="conv kernel size (padding k // 2)")
    stride: PositiveInt | list[PositiveInt] = Field(1, description="conv stride, or one per layer")
    activation: Activation = Field("relu", description="nonlinearity")
    norm: Literal["group", "none"] = Field("group", description="GroupNorm after each conv")
    pool: bool = Field(True, description="2x2 max-pool after each conv")

    @model_validator(mode="after")
    def _check_strides(self) -> CNNConfig:
        if isinstance(self.stride, list) and len(self.stride) != len(self.channels):
            raise ValueError(
                f"stride has {len(self.stride)} entries but channels has {len(self.channels)}; "
                "give one stride per conv layer or a single int"
            )
        return self

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        if len(input_shape) != 3:
            raise ValueError(f"cnn needs (C, H, W) inputs, got shape {input_shape}")
        strides = (
            self.stride if isinstance(self.stride, list) else [self.stride] * len(self.channels)
        )
        layers: list[nn.Module] = []
        c_in, size = input_shape[0], min(input_shape[1:])
        for c_out, s in zip(self.channels, strides, strict=True):
            layers.append(
                nn.Conv2d(c_in, c_out, self.kernel_size, stride=s, padding=self.kernel_size // 2)
            )
            size = (size + 2 * (self.kernel_size // 2) - self.kernel_size) // s + 1
            if size < 1:
                raise ValueError(f"the conv layers shrink a {input_shape} input to nothing")
            if self.norm == "group":
                groups = _num_groups(c_out)
                if (c_out // groups) * size * size == 1:
                    raise ValueError(
                        f"GroupNorm after a conv with {c_out} channels on a 1x1 map normalizes "
                        "single values; use fewer layers, pool = false, or norm = 'none'"
                    )
                layers.append(nn.GroupNorm(groups, c_out))
            layers.append(_ACTIVATIONS[self.activation]())
            if self.pool and size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c_in = c_out
        layers.append(nn.Flatten())
        features = nn.Sequential(*layers)
        with torch.no_grad():
            width = features(torch.zeros(1, *input_shape)).shape[1]
        head: list[nn.Module] = []
        for h in self.hidden:
            head += [nn.Linear(width, h), _ACTIVATIONS[self.activation]()]
            width = h
        head.append(nn.Linear(width, num_classes))
        return nn.Sequential(*features, *head)


def _num_groups(channels: int, max_groups: int = 8) -> int:
    """Largest divisor of ``channels`` not above ``max_groups`` (GroupNorm needs a divisor)."""
    return max(g for g in range(1, max_groups + 1) if channels % g == 0)


_MODEL_CONFIGS = (LogisticRegressionConfig, MLPConfig, CNNConfig)
ModelConfig = Annotated[
    LogisticRegressionConfig | MLPConfig | CNNConfig, Field(discriminator="name")
]
MODEL_NAMES: tuple[str, ...] = tuple(c.model_fields["name"].default for c in _MODEL_CONFIGS)


def create_model(
    config: LogisticRegressionConfig | MLPConfig | CNNConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
) -> nn.Module:
    """Build the model ``config`` names, with weights drawn from ``seed``.

    The global torch RNG is used inside ``torch.random.fork_rng`` only, so building a model
    leaves the caller's random state untouched. All parameters are float32 and trainable.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = config.build(tuple(input_shape), num_classes)
        except ValueError as e:
            raise ConfigError(
                f"model {config.name!r} on inputs {tuple(input_shape)}: {e}"
            ) from None
        if config.init == "uniform":
            with torch.no_grad():
                for p in model.parameters():
                    p.uniform_(-config.init_scale, config.init_scale)
    if any(True for _ in model.buffers()):
        raise ValueError("privfl models must not have buffers (BatchNorm breaks DP-SGD)")
    return model.float()


#: The LeNet of DLG (Zhu et al., NeurIPS 2019; also iDLG): sigmoid activations, no pooling or
#: norm, strides 2-2-1, weights drawn from U(-0.5, 0.5) — the attacks' published setting.
DLG_LENET = CNNConfig(
    channels=[12, 12, 12],
    kernel_size=5,
    stride=[2, 2, 1],
    norm="none",
    pool=False,
    activation="sigmoid",
    hidden=[],
    init="uniform",
)

__all__ = [
    "CNNConfig",
    "DLG_LENET",
    "LogisticRegressionConfig",
    "MLPConfig",
    "MODEL_NAMES",
    "ModelConfig",
    "create_model",
]
