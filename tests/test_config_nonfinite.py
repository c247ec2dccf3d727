"""Every float field of every config section refuses inf and nan (issue 16, item 10): with
``lr = inf`` a run used to train on NaN; with ``clip = nan`` clipping silently did nothing."""

from __future__ import annotations

import math
import typing

import pytest
from pydantic import BaseModel

from privfl.config import Config, config_from_dict, load_config
from privfl.errors import ConfigError
from privfl.suites.spec import SuiteSpec


def _models(root: type[BaseModel]) -> set[type[BaseModel]]:
    """Every pydantic model reachable from ``root`` through its fields' annotations."""
    seen: set[type[BaseModel]] = set()
    todo = [root]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for f in m.model_fields.values():
            todo.extend(_model_args(f.annotation))
    return seen


def _model_args(tp: object) -> list[type[BaseModel]]:
    """The models named in an annotation (``X | None``, ``list[X]``, ``Annotated[...]``)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for a in typing.get_args(tp) for m in _model_args(a)]


def test_every_section_reachable_from_config_refuses_non_finite_floats():
    models = _models(Config) | _models(SuiteSpec)
    names = {m.__name__ for m in models}
    # the walk does reach the feature sections defined beside their features
    assert {"DPConfig", "SecAggConfig", "HEConfig", "FederationConfig"} <= names
    lax = sorted(m.__name__ for m in models if m.model_config.get("allow_inf_nan", True))
    assert lax == []


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize(
    "raw, where",
    [
        ({"federation": {"lr": None}}, "federation.lr"),
        ({"federation": {"momentum": None}}, "federation.momentum"),
        ({"defense": {"dp": {"mode": "central", "clip": None}}}, "defense.dp.clip"),
        (
            {"defense": {"dp": {"mode": "central", "noise_multiplier": None}}},
            "defense.dp.noise_multiplier",
        ),
        ({"defense": {"secagg": {"threshold": None}}}, "defense.secagg.threshold"),
        ({"data": {"partition": "dirichlet", "alpha": None}}, "data.alpha"),
    ],
)
def test_a_non_finite_value_is_a_config_error_naming_the_field(raw, where, bad):
    def fill(d):
        return {
            k: fill(v) if isinstance(v, dict) else (bad if v is None else v) for k, v in d.items()
        }

    with pytest.raises(ConfigError, match=rf"{where}.*finite"):
        config_from_dict(fill(raw))


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\x00\xff\xfe not utf-8")
    with pytest.raises(ConfigError, match="not a UTF-8"):
        load_config(p)


def test_a_config_path_that_is_a_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load_config(tmp_path)
