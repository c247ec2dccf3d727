"""An experiment as pydantic models, loaded from TOML; every bad value gets a clear error.

Each TOML section maps to one model here: ``[data]`` -> :class:`DataConfig`, ``[model]`` ->
a model config (discriminated by ``name``), ``[federation]`` -> :class:`FederationConfig`,
``[evaluation]``, ``[defense.*]``, ``[attack.*]``. Unknown keys are errors, never ignored.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from privfl.attacks.inversion.config import InversionConfig
from privfl.attacks.membership.config import MembershipConfig
from privfl.attacks.poisoning.config import PoisoningConfig, check_poisoning_population
from privfl.audit.config import AuditConfig
from privfl.combinations import check_combinations
from privfl.compression.config import CompressionConfig
from privfl.config_rules import SECTION_CONFIG, only_with
from privfl.data import DATASET_NAMES, PARTITION_NAMES
from privfl.data.text import check_text_model
from privfl.decentralized.config import DecentralizedConfig, Topology
from privfl.defenses.dp.config import DPConfig
from privfl.defenses.he.config import HEConfig
from privfl.defenses.robust.config import (
    RobustConfig,
    check_robust_cohort,
)
from privfl.defenses.secagg.config import SecAggConfig
from privfl.device import DEVICE_PATTERN
from privfl.engine import ENGINE_NAMES
from privfl.engine.ray_config import RayConfig
from privfl.errors import ConfigError
from privfl.heterogeneity.config import HeterogeneityConfig
from privfl.incentives.config import IncentivesConfig
from privfl.models import TEXT_MODEL_NAMES, MLPConfig, ModelConfig
from privfl.server_optim import SERVER_OPTIMIZER_NAMES


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors; values are immutable."""

    model_config = SECTION_CONFIG

    def _only_with(self, field: str, condition: bool, requirement: str) -> None:
        """Reject ``field`` when the user gave it a non-default value although ``condition`` is
        false (a default written out by a resolved config.toml passes)."""
        only_with(self, field, condition, requirement)


class DataConfig(StrictModel):
    """``[data]``: which data set, how it is split among clients."""

    name: Literal[DATASET_NAMES] = Field(  # type: ignore[valid-type]
        "digits", description="data set; digits, synthetic and patches need no files"
    )
    dir: Path | None = Field(
        None, description="local folder of mnist / cifar10 / femnist / shakespeare / stackoverflow"
    )
    partition: Literal[PARTITION_NAMES] = Field(  # type: ignore[valid-type]
        "iid", description="how examples are split among clients"
    )
    clients: PositiveInt = Field(10, description="registered clients (the population)")
    alpha: PositiveFloat = Field(0.5, description="Dirichlet concentration (partition='dirichlet')")
    shards_per_client: PositiveInt = Field(2, description="classes per client (partition='shards')")
    min_examples: PositiveInt = Field(2, description="smallest client allowed (dirichlet)")
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="held-out share for data sets without a test split"
    )
    client_test_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of each client's data held out for federated eval (unset: 0.2 "
        "when evaluation.federated_every is set, else 0)",
    )
    samples: PositiveInt = Field(2000, description="synthetic: number of examples")
    shape: list[PositiveInt] = Field(
        default_factory=lambda: [1, 28, 28], description="synthetic: shape of one example"
    )
    classes: PositiveInt = Field(10, description="synthetic: number of classes")
    noise: NonNegativeFloat = Field(1.0, description="synthetic: cluster noise level")
    seq_len: PositiveInt | None = Field(
        None,
        description="text: tokens per window (unset: 80 for characters as LEAF, 20 for words as "
        "Stack Overflow)",
    )
    stride: PositiveInt = Field(
        4, description="pydoc characters: a window starts every stride characters (1: all)"
    )
    level: Literal["char", "word"] = Field(
        "char", description="pydoc: next-character or next-word prediction"
    )
    vocab_size: PositiveInt | None = Field(
        None,
        description="words: vocabulary size with its 4 special tokens (unset: pydoc every "
        "training word, stackoverflow 10004)",
    )
    class_fraction: dict[NonNegativeInt, float] = Field(
        default_factory=dict,
        description='share of a class\'s training examples kept, e.g. {"8" = 0.0855} '
        "(under-represented class; test split untouched)",
    )

    @field_validator("class_fraction")
    @classmethod
    def _fractions(cls, v: dict[int, float]) -> dict[int, float]:
        for label, fraction in v.items():
            if not (math.isfinite(fraction) and 0 < fraction <= 1):
                raise ValueError(
                    f"class {label}: the share of its training examples kept must lie in (0, 1], "
                    f"got {fraction} (e.g. 0.0855 keeps 500 of MNIST's 5,851 eights)"
                )
        return v

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        self._only_with("alpha", self.partition == "dirichlet", "partition = 'dirichlet'")
        self._only_with("shards_per_client", self.partition == "shards", "partition = 'shards'")
        self._only_with("min_examples", self.partition == "dirichlet", "partition = 'dirichlet'")
        for key in ("samples", "shape", "classes", "noise"):
            self._only_with(key, self.name == "synthetic", "name = 'synthetic'")
        needs_dir = self.name in ("mnist", "cifar10", "femnist", "shakespeare", "stackoverflow")
        self._only_with(
            "dir", needs_dir, "name is mnist, cifar10, femnist, shakespeare or stackoverflow"
        )
        text = ("pydoc", "shakespeare", "stackoverflow")
        self._only_with("seq_len", self.name in text, "a text data set (" + ", ".join(text) + ")")
        self._only_with("stride", self.name == "pydoc", "name = 'pydoc'")
        self._only_with("level", self.name == "pydoc", "name = 'pydoc'")
        words = self.name == "stackoverflow" or (self.name == "pydoc" and self.level == "word")
        self._only_with("vocab_size", words, "word-level text (stackoverflow, pydoc words)")
        if needs_dir and self.dir is None:
            raise ValueError(f"dir is required for name = '{self.name}' (the local folder)")
        self._only_with(
            "test_fraction",
            self.name in ("digits", "synthetic", "patches", "pydoc"),
            "name is digits, synthetic, patches or pydoc (the others ship a test split)",
        )
        if self.partition == "natural" and self.name not in ("femnist", *text):
            raise ValueError(
                "partition = 'natural' needs writer or user ids: femnist and the text data sets "
                "(pydoc, shakespeare, stackoverflow) have them"
            )
        return self


class FederationConfig(StrictModel):
    """``[federation]``: the round loop, local training and the server optimizer.

    ``local_steps``, when set, replaces ``local_epochs``: each client takes exactly that many
    SGD steps (``local_steps = 1`` with ``batch_size = "full"`` is FedSGD). With
    ``sampling = "poisson"`` every client joins a round independently with probability
    ``q = clients_per_round / clients``.
    """

    rounds: PositiveInt = Field(20, description="federated rounds")
    clients_per_round: PositiveInt = Field(
        10, description="cohort size (the expected size with poisson sampling)"
    )
    sampling: Literal["uniform", "poisson"] = Field(
        "uniform", description="uniform without replacement, or poisson at q = m / N"
    )
    local_epochs: PositiveInt = Field(1, description="passes over the local data")
    local_steps: PositiveInt | None = Field(
        None, description="exact local SGD steps instead of epochs"
    )
    batch_size: PositiveInt | Literal["full"] = Field(
        32, description='local mini-batch; "full" = all local data'
    )
    lr: PositiveFloat = Field(0.05, description="client SGD learning rate")
    momentum: float = Field(0.0, ge=0, lt=1, description="client SGD momentum")
    weight_decay: NonNegativeFloat = Field(0.0, description="client SGD weight decay")
    prox_mu: NonNegativeFloat = Field(
        0.0, description="FedProx proximal weight mu (Li et al. 2020)"
    )
    server_optimizer: Literal[SERVER_OPTIMIZER_NAMES] = Field(  # type: ignore[valid-type]
        "fedavg", description="how the aggregate moves the global model"
    )
    server_lr: PositiveFloat = Field(1.0, description="server learning rate eta")
    server_q: NonNegativeFloat = Field(
        1.0, description="qffl's fairness q (0: FedAvg; Li et al., ICLR 2020)"
    )
    server_momentum: float = Field(0.9, ge=0, lt=1, description="fedavgm's beta")
    server_beta1: float = Field(0.9, ge=0, lt=1, description="fedadam/fedyogi/fedadagrad beta_1")
    server_beta2: float = Field(0.99, ge=0, lt=1, description="fedadam/fedyogi beta_2")
    server_tau: PositiveFloat = Field(1e-3, description="adaptivity tau (Reddi et al. 2021)")
    engine: Literal[ENGINE_NAMES] = Field(  # type: ignore[valid-type]
        "auto",
        description="how a round's clients are trained: auto = vectorized where the model and "
        "trainer allow, sequential otherwise (the reason logged once)",
    )
    device: str = Field(
        "auto",
        pattern=DEVICE_PATTERN.pattern,
        description="where clients train, the global model is evaluated and attacks optimise: "
        "auto (cuda when available), cpu, cuda or cuda:N; cuda without one is an error",
    )
    heterogeneity: HeterogeneityConfig | None = Field(
        None, description="per-client local work, device speeds, deadline, FedNova"
    )
    ray: RayConfig | None = Field(None, description="the Ray cluster (engine = 'ray')")
    topology: Topology = Field(
        "star", description="star (a server) or a peer-to-peer graph trained with D-PSGD"
    )
    decentralized: DecentralizedConfig | None = Field(
        None, description="mixing and gossip of a peer-to-peer topology (docs/decentralized.md)"
    )

    @model_validator(mode="after")
    def _check(self) -> FederationConfig:
        self._only_with("local_epochs", self.local_steps is None, "local_steps is not set")
        self._only_with("decentralized", self.topology != "star", "topology is not 'star'")
        p = None if self.decentralized is None else self.decentralized.p
        if self.topology == "erdos_renyi" and p is None:
            raise ValueError(
                "topology = 'erdos_renyi' needs federation.decentralized.p, the edge probability"
            )
        if p is not None and self.topology != "erdos_renyi":
            raise ValueError("decentralized.p applies only when topology = 'erdos_renyi'")
        self._only_with("ray", self.engine == "ray", "engine = 'ray'")
        self._only_with(
            "server_momentum", self.server_optimizer == "fedavgm", "server_optimizer = 'fedavgm'"
        )
        qffl = self.server_optimizer == "qffl"
        self._only_with("server_q", qffl, "server_optimizer = 'qffl'")
        # q-FedAvg's step is its own, -sum Delta_k / sum h_k: no server learning rate.
        self._only_with("server_lr", not qffl, "server_optimizer is not 'qffl'")
        adaptive = self.server_optimizer in ("fedadam", "fedyogi", "fedadagrad")
        for key in ("server_beta1", "server_tau"):
            self._only_with(key, adaptive, "server_optimizer is fedadam, fedyogi or fedadagrad")
        self._only_with(
            "server_beta2",
            self.server_optimizer in ("fedadam", "fedyogi"),
            "server_optimizer is fedadam or fedyogi",
        )
        return self


class EvaluationConfig(StrictModel):
    """``[evaluation]``: how often the global model is tested.

    ``every``: centralized test-set evaluation every that many rounds (the last round always).
    ``federated_every``: evaluation on each client's held-out data (needs
    ``data.client_test_fraction > 0``), reporting mean, std and worst-10% client accuracy;
    0 turns it off.
    """

    every: PositiveInt = Field(1, description="central test evaluation every N rounds")
    federated_every: NonNegativeInt = Field(
        0, description="evaluation on clients' held-out data every N rounds (0: never)"
    )
    batch_size: PositiveInt = Field(1024, description="evaluation batch size")


class DefenseConfig(StrictModel):
    """``[defense.*]``: one sub-table per active defense (added by the defense issues)."""

    dp: DPConfig | None = Field(None, description="differential privacy ([defense.dp])")
    he: HEConfig | None = Field(
        None, description="homomorphic-encrypted aggregation (TenSEAL CKKS or BFV); absent: off"
    )
    robust: RobustConfig | None = Field(None, description="robust aggregation rule")
    secagg: SecAggConfig | None = Field(
        None, description="secure aggregation with pairwise masks (Bonawitz et al. 2017)"
    )

    def without_secure_channels(self) -> DefenseConfig:
        """These defenses for a replay of the training (an attacker's shadow runs): secure
        aggregation and HE removed, as they change who sees the updates, not the model they
        sum to; except secure aggregation under distributed DP, whose noise lives in it."""
        keep = self.dp is not None and self.dp.mode == "distributed"
        return self.model_copy(update={"he": None, "secagg": self.secagg if keep else None})


class AttackConfig(StrictModel):
    """``[attack.*]``: one sub-table per active attack (added by the attack issues)."""

    poisoning: PoisoningConfig | None = Field(None, description="model poisoning")
    inversion: InversionConfig | None = Field(
        None, description="gradient inversion by the server (see [attack.inversion])"
    )
    membership: MembershipConfig | None = Field(
        None, description="membership inference ([attack.membership])"
    )


class Config(StrictModel):
    """A whole experiment; ``privfl.run(Config(...))`` runs it."""

    name: str = Field(
        "run",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=120,
        description="run folder name",
    )
    seed: NonNegativeInt = Field(0, description="root of every random stream")
    checkpoint_every: PositiveInt = Field(1, description="rounds between checkpoints")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=MLPConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    audit: AuditConfig | None = Field(None, description="empirical privacy audit ([audit])")
    incentives: IncentivesConfig | None = Field(
        None, description="each client's contribution, from the server's view ([incentives])"
    )
    compression: CompressionConfig | None = Field(
        None, description="client-side update compression ([compression])"
    )

    @model_validator(mode="before")
    @classmethod
    def _client_test_default(cls, raw: Any) -> Any:
        """Federated evaluation without ``data.client_test_fraction`` holds out 20% of each
        client's data (the 80/20 split of each device of Li et al. 2020); a fraction given,
        0 included, is kept."""
        if not isinstance(raw, dict):
            return raw
        ev, data = raw.get("evaluation"), raw.get("data")
        every = (
            ev.get("federated_every") if isinstance(ev, dict) else getattr(ev, "federated_every", 0)
        )
        if not every:
            return raw
        if data is None or isinstance(data, dict):
            if "client_test_fraction" not in (data or {}):
                raw = {**raw, "data": {**(data or {}), "client_test_fraction": 0.2}}
        elif isinstance(data, DataConfig) and "client_test_fraction" not in data.model_fields_set:
            raw = {**raw, "data": data.model_copy(update={"client_test_fraction": 0.2})}
        return raw

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Config:
        if self.federation.clients_per_round > self.data.clients:
            raise ValueError(
                f"federation.clients_per_round ({self.federation.clients_per_round}) must be "
                f"<= data.clients ({self.data.clients})"
            )
        check_text_model(self.data.name, self.model.name, TEXT_MODEL_NAMES)
        if self.defense.robust is not None:
            check_robust_cohort(self.defense.robust, self.federation.clients_per_round)
        if self.attack.poisoning is not None:
            check_poisoning_population(self.attack.poisoning, self.data.clients)
        # Every rule about two sections lives in privfl/combinations.py; tests that examine
        # one rule on a refused config validate with context={"combinations": False}.
        if (info.context or {}).get("combinations", True):
            check_combinations(self)
        if self.evaluation.federated_every and self.data.client_test_fraction == 0:
            raise ValueError(
                "evaluation.federated_every needs data.client_test_fraction > 0 "
                "(held-out data on each client)"
            )
        return self

    def to_toml_dict(self) -> dict[str, Any]:
        """Every value written out, defaults included, ready for ``tomli_w`` (None dropped)."""
        return _drop_none(self.model_dump(mode="json"))


def _drop_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    return d


# ---------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into ``(["a", "b", "c"], value)``.

    The value is read as a TOML value (``5``, ``0.1``, ``true``, ``[256, 256]``, ``"x"``);
    anything that is not valid TOML is taken as a plain string.

    >>> parse_override("federation.rounds=5")
    (['federation', 'rounds'], 5)
    >>> parse_override("model.hidden=[256, 256]")
    (['model', 'hidden'], [256, 256])
    >>> parse_override("data.name=femnist")  # not TOML: a plain string
    (['data', 'name'], 'femnist')
    """
    key, sep, raw = text.partition("=")
    path = [p.strip() for p in key.strip().split(".")]
    if not sep or not all(path):
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of the raw TOML dict with each ``section.key=value`` override set.

    Missing sections are created; ``raw`` itself is left unchanged:

    >>> raw = {"name": "demo", "federation": {"rounds": 10}}
    >>> apply_overrides(raw, ["federation.rounds=2", "defense.dp.mode=sample"])
    {'name': 'demo', 'federation': {'rounds': 2}, 'defense': {'dp': {'mode': 'sample'}}}
    >>> raw["federation"]["rounds"]
    10
    """
    out = _deep_copy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate a raw dict (as parsed from TOML) into a :class:`Config`.

    Raises:
        ConfigError: naming every bad field, what was given and what is allowed.
    """
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The table of a TOML file; a missing file or bad TOML is a :class:`ConfigError`
    naming ``what`` and the path."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{p}: not a UTF-8 text file (byte {e.start}: {e.reason}); TOML files are UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"{what} unreadable: {p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a TOML experiment file, apply ``--set`` overrides, validate."""
    return config_from_dict(apply_overrides(read_toml(path), overrides or []))


def _format_errors(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        if err["type"] == "extra_forbidden":
            allowed, path = _resolve(err["loc"][:-1])
            loc = ".".join([*path, str(err["loc"][-1])])
            hint = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
            msg = f"unknown key {loc!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            msg += f"; allowed: {', '.join(allowed) if allowed else 'none yet'}"
        else:
            allowed, path = _resolve(err["loc"])
            loc = ".".join(path)
            msg = err["msg"].removeprefix("Value error, ")
            if (
                err["type"] != "value_error"
                and "input" in err
                and not isinstance(err["input"], dict)
            ):
                msg += f" (got {err['input']!r})"
            if loc and msg.split(" ", 1)[0] in allowed:
                # A section validator's message about one of its fields: "data.alpha ...".
                msg = f"{loc}.{msg}"
            else:
                msg = f"{loc}: {msg}" if loc else msg
        lines.append(msg)
    return "invalid config: " + "; ".join(lines)


def _resolve(loc: tuple[Any, ...]) -> tuple[list[str], list[str]]:
    """The field names of the config section at ``loc``, and ``loc`` as the user writes it.

    A discriminated union's tag (the ``mlp`` in pydantic's ``model.mlp.hiddn``) picks the
    member class and is left out of the path (the user wrote ``model.hiddn``).
    """
    node: Any = Config
    union: dict[str, Any] | None = None
    path: list[str] = []
    for part in map(str, loc):
        if union is not None:
            node, union = union.get(part), None
            if node is None:
                return [], [*path, part]
            continue
        path.append(part)
        field = getattr(node, "model_fields", {}).get(part)
        if field is None:
            node = None
            continue
        ann = field.annotation
        optional = [a for a in get_args(ann) if a is not type(None)]
        if len(get_args(ann)) == 2 and len(optional) == 1 and isinstance(optional[0], type):
            # `Section | None`: an optional table
            ann = optional[0]
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            node = ann
        else:
            members = {
                a.model_fields["name"].default: a
                for a in get_args(ann)
                if isinstance(a, type) and issubclass(a, BaseModel) and "name" in a.model_fields
            }
            node, union = (None, members) if members else (None, None)
    keys = [] if union is not None or node is None else sorted(node.model_fields)
    return keys, path


__all__ = [
    "AttackConfig",
    "Config",
    "DataConfig",
    "DefenseConfig",
    "EvaluationConfig",
    "FederationConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "read_toml",
    "parse_override",
]
