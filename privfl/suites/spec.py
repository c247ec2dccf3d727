"""A benchmark suite: a grid of ``--set`` overrides on one base experiment config.

A suite TOML names a base config and four axes; every combination is one cell, one run::

    name = "robustness"
    base = "../../examples/quickstart.toml"     # relative to the suite file
    set = ["federation.rounds=10"]              # applied to every cell first
    seeds = [0, 1]                              # the cell's ``seed``

    [attacks]                                   # label -> overrides
    none = []
    alie = ["attack.poisoning.method=alie", "attack.poisoning.fraction={fraction}"]

    [defenses]
    none = []
    median = ["defense.robust.rule=median"]

    [parameters]                                # name -> values; {name} in an override
    fraction = [0.1, 0.2, 0.3]                  # is replaced by each value (as TOML)

Overrides are applied in the order ``set``, attack, defense, ``seed=N``. A cell whose
overrides do not mention a parameter resolves to the same config for every value of it; the
runner then runs that config once (see :mod:`privfl.suites.runner`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, Field, ValidationError, field_validator

from privfl.config import Config, apply_overrides, config_from_dict, read_toml
from privfl.config_rules import SECTION_CONFIG
from privfl.errors import ConfigError

#: ``{name}`` placeholders in an override string.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LABEL = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"

ParamValue = bool | int | float | str


class SuiteSpec(BaseModel):
    """The parsed suite file (see the module docstring for the format)."""

    model_config = SECTION_CONFIG

    name: str = Field(pattern=_LABEL, description="suite name")
    description: str = Field("", description="one paragraph shown on the suite's page")
    base: str = Field(description="experiment TOML, relative to the suite file")
    set: list[str] = Field(default_factory=list, description="overrides applied to every cell")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    attacks: dict[str, list[str]] = Field(default_factory=lambda: {"none": []}, min_length=1)
    defenses: dict[str, list[str]] = Field(default_factory=lambda: {"none": []}, min_length=1)
    parameters: dict[str, list[ParamValue]] = Field(default_factory=dict)
    keep_runs: bool = Field(
        False, description="write each cell's run folder (metrics, plots, privacy report)"
    )
    # Derived figures need a reference cell; a suite without that label simply has none.
    baseline_attack: str = Field("none", description="row that accuracy_drop is measured from")
    baseline_defense: str = Field("none", description="column overheads are measured from")

    @field_validator("attacks", "defenses")
    @classmethod
    def _labels(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for label in v:
            if not re.match(_LABEL, label):
                raise ValueError(f"label {label!r} must match {_LABEL}")
        return v

    @field_validator("parameters")
    @classmethod
    def _params(cls, v: dict[str, list[ParamValue]]) -> dict[str, list[ParamValue]]:
        for name, values in v.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"parameter name {name!r} must be an identifier")
            if not values:
                raise ValueError(f"parameter {name!r} has no values")
        return v


@dataclass(frozen=True)
class Cell:
    """One grid point: which attack, defense, parameter values and seed, and its overrides."""

    attack: str
    defense: str
    params: tuple[tuple[str, ParamValue], ...]
    seed: int
    overrides: tuple[str, ...]

    @property
    def params_label(self) -> str:
        """``"fraction=0.1,z=1"``, or ``""`` without parameters."""
        return ",".join(f"{k}={v}" for k, v in self.params)

    @property
    def slug(self) -> str:
        """A file-name-safe identifier of the cell, unique within its suite."""
        parts = [self.attack, self.defense, *(f"{k}-{v}" for k, v in self.params), f"s{self.seed}"]
        return re.sub(r"[^A-Za-z0-9._-]", "-", "__".join(parts))[:120]


@dataclass(frozen=True)
class Suite:
    """A loaded suite: its spec, the folder of its file and the base config's raw TOML."""

    spec: SuiteSpec
    path: Path
    base_raw: dict[str, Any]
    extra: tuple[str, ...] = ()  # --set given on the command line, after the suite's own

    @property
    def name(self) -> str:
        return self.spec.name

    def cells(self) -> list[Cell]:
        """Every grid point, attacks outermost, then defenses, parameters, seeds."""
        s = self.spec
        names = list(s.parameters)
        combos = list(itertools.product(*(s.parameters[n] for n in names)))
        out = []
        for (a, a_sets), (d, d_sets), combo, seed in itertools.product(
            s.attacks.items(), s.defenses.items(), combos, s.seeds
        ):
            params = tuple(zip(names, combo, strict=True))
            values = dict(params)
            sets = [*s.set, *self.extra, *a_sets, *d_sets]
            overrides = tuple(_substitute(o, values) for o in sets) + (f"seed={seed}",)
            out.append(Cell(a, d, params, seed, overrides))
        return out

    def resolve(self, cell: Cell) -> Config:
        """The cell's validated config (named after the cell).

        Raises:
            ConfigError: the base config with the cell's overrides is not a valid experiment.
        """
        raw = apply_overrides(self.base_raw, list(cell.overrides))
        raw["name"] = cell.slug
        return config_from_dict(raw)


def config_key(config: Config) -> str:
    """SHA-256 of the resolved config without its name: cells that would run the same
    experiment share it (and the cache entry)."""
    data = config.to_toml_dict()
    data.pop("name", None)
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _substitute(text: str, values: dict[str, ParamValue]) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise ConfigError(
                f"override {text!r} uses {{{m.group(1)}}}, which is not in [parameters] "
                f"(parameters: {', '.join(values) or 'none'})"
            )
        return tomli_w.dumps({"v": values[m.group(1)]})[4:].strip()

    return _PLACEHOLDER.sub(repl, text)


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Read a suite TOML and its base config; ``overrides`` (``--set``) apply to every cell.

    Raises:
        ConfigError: the file is missing, is not TOML, has unknown keys or bad values, or an
            override names a parameter the suite does not define.
    """
    p = Path(path)
    raw = read_toml(p, "suite file")
    try:
        spec = SuiteSpec.model_validate(raw)
    except ValidationError as e:
        msgs = [
            f"{'.'.join(str(x) for x in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()
        ]
        raise ConfigError(f"{p}: " + "; ".join(msgs)) from None
    base = (p.parent / spec.base).resolve()
    base_raw = read_toml(base, f"{p}: base config")
    suite = Suite(spec, p.resolve(), base_raw, tuple(overrides or ()))
    suite.cells()  # placeholders are checked here, before anything runs
    return suite


__all__ = ["Cell", "ParamValue", "Suite", "SuiteSpec", "config_key", "load_suite"]
