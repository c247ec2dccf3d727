"""Models: logistic regression, MLP, a LeNet-style CNN with GroupNorm, and next-token LSTMs
(character and word level) for text.

Every model here passes ``opacus.validators.ModuleValidator.validate`` (no BatchNorm, no
buffers; the LSTMs when built with ``dp_layers``, which sample-level DP-SGD runs ask for), so
the same architecture runs with and without DP-SGD. Each model's config class
carries its own ``name`` tag and builds the module, so the name lives in one place.
"""

from __future__ import annotations

import logging
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


class NextTokenLSTM(nn.Module):
    """Next-token LSTM: embedding, LSTM layers, an optional linear projection of the last
    step's output, and a linear head over the vocabulary (the logits of the token that follows
    the window).

    ``dp_layers`` builds the recurrent layers from Opacus' ``DPLSTM`` (the same maths as
    ``nn.LSTM``, written with linear layers Opacus can take per-example gradients of; its
    parameters come in another order than nn.LSTM's, so one run builds every model one way).
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        hidden: int,
        layers: int,
        projection: int | None = None,
        *,
        dp_layers: bool = False,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        #: the input embedding (the text attacks read its gradient rows)
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        if dp_layers:
            # Importing Opacus adds a root logging handler (logging.basicConfig); it is removed
            # as privfl.accounting.import_opacus does (models sit below accounting's layer).
            root = logging.getLogger()
            before = list(root.handlers)
            from opacus.layers import DPLSTM

            for handler in [h for h in root.handlers if h not in before]:
                root.removeHandler(handler)

            self.lstm: nn.Module = DPLSTM(
                embedding_dim, hidden, num_layers=layers, batch_first=True
            )
        else:
            self.lstm = nn.LSTM(embedding_dim, hidden, num_layers=layers, batch_first=True)
        self.projection = nn.Linear(hidden, projection) if projection else None
        self.head = nn.Linear(projection or hidden, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, vocab_size)`` of the token after each window ``x`` ``(batch, T)``."""
        out, _ = self.lstm(self.embedding(x))
        h = out[:, -1]
        if self.projection is not None:
            h = self.projection(h)
        return self.head(h)


class _TextModelConfigBase(_ModelConfigBase):
    """Options of the next-token models (inputs: int64 token windows ``(seq_len,)``)."""

    embedding_dim: PositiveInt = Field(8, description="token embedding width")
    hidden: PositiveInt = Field(256, description="LSTM hidden width")
    layers: PositiveInt = Field(2, description="stacked LSTM layers")

    def _projection(self) -> int | None:
        return None

    def build(
        self, input_shape: tuple[int, ...], num_classes: int, *, dp_layers: bool = False
    ) -> nn.Module:
        if len(input_shape) != 1:
            raise ValueError(
                f"{self.name} reads token windows (seq_len,), got inputs of shape {input_shape}; "
                "use a text data set (pydoc, shakespeare, stackoverflow)"
            )
        return NextTokenLSTM(
            num_classes,
            self.embedding_dim,
            self.hidden,
            self.layers,
            self._projection(),
            dp_layers=dp_layers,
        )


class CharLSTMConfig(_TextModelConfigBase):
    """Character LSTM of LEAF's Shakespeare baseline and McMahan et al. 2017 (AISTATS,
    Sec. 3): an 8-dimensional character embedding, two LSTM layers of 256 units, and a linear
    head on the last step's output over the characters."""

    name: Literal["char_lstm"] = Field("char_lstm", description="model type")


class WordLSTMConfig(_TextModelConfigBase):
    """Word LSTM of the Stack Overflow / Reddit next-word tasks: a word embedding, one LSTM
    layer, a linear projection back to the embedding width and a head over the vocabulary (the
    shape of McMahan et al. 2018, ICLR, and Reddi et al. 2021, ICLR, App. C: there 96-dim
    embedding and projection, 670 LSTM units on Stack Overflow; smaller defaults here)."""

    name: Literal["word_lstm"] = Field("word_lstm", description="model type")
    embedding_dim: PositiveInt = Field(96, description="word embedding width")
    hidden: PositiveInt = Field(256, description="LSTM hidden width")
    layers: PositiveInt = Field(1, description="stacked LSTM layers")
    projection: PositiveInt | None = Field(
        96, description="width of the projection of the LSTM output (unset: none)"
    )

    def _projection(self) -> int | None:
        return self.projection


def _num_groups(channels: int, max_groups: int = 8) -> int:
    """Largest divisor of ``channels`` not above ``max_groups`` (GroupNorm needs a divisor)."""
    return max(g for g in range(1, max_groups + 1) if channels % g == 0)


_MODEL_CONFIGS = (LogisticRegressionConfig, MLPConfig, CNNConfig, CharLSTMConfig, WordLSTMConfig)
ModelConfig = Annotated[
    LogisticRegressionConfig | MLPConfig | CNNConfig | CharLSTMConfig | WordLSTMConfig,
    Field(discriminator="name"),
]
#: the model names that read token windows (text data)
TEXT_MODEL_NAMES: tuple[str, ...] = ("char_lstm", "word_lstm")
MODEL_NAMES: tuple[str, ...] = tuple(c.model_fields["name"].default for c in _MODEL_CONFIGS)


def create_model(
    config: LogisticRegressionConfig | MLPConfig | CNNConfig | CharLSTMConfig | WordLSTMConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    *,
    dp_layers: bool = False,
) -> nn.Module:
    """Build the model ``config`` names, with weights drawn from ``seed``.

    The global torch RNG is used inside ``torch.random.fork_rng`` only, so building a model
    leaves the caller's random state untouched. All parameters are float32 and trainable.
    ``dp_layers``: build recurrent layers from Opacus' DP layers (``DPLSTM``), for sample-level
    DP-SGD; the other models ignore it.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            if isinstance(config, _TextModelConfigBase):
                model = config.build(tuple(input_shape), num_classes, dp_layers=dp_layers)
            else:
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
    "CharLSTMConfig",
    "DLG_LENET",
    "LogisticRegressionConfig",
    "MLPConfig",
    "MODEL_NAMES",
    "ModelConfig",
    "NextTokenLSTM",
    "TEXT_MODEL_NAMES",
    "WordLSTMConfig",
    "create_model",
]
