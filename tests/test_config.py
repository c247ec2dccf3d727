"""Tests of privfl/config.py: error messages, overrides, loading and the TOML round trip."""

from __future__ import annotations

import copy

import pytest
import tomli_w

from privfl.config import (
    Config,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_override,
)
from privfl.errors import ConfigError
from privfl.models import CNNConfig

# (raw config, fragments the message must contain: the dotted field, then what is allowed)
BAD_CONFIGS = [
    pytest.param(
        {"federation": {"rounds": -3}},
        ["federation.rounds", "greater than 0", "-3"],
        id="negative-rounds",
    ),
    pytest.param(
        {"data": {"partition": "dirichlet", "alpha": 0}},
        ["data.alpha", "greater than 0"],
        id="alpha-zero",
    ),
    pytest.param(
        {"data": {"partition": "dirichlet", "alpha": -0.5}},
        ["data.alpha", "greater than 0"],
        id="alpha-negative",
    ),
    pytest.param(
        {"data": {"clients": 4}, "federation": {"clients_per_round": 5}},
        ["federation.clients_per_round", "data.clients", "<="],
        id="cohort-bigger-than-population",
    ),
    pytest.param(
        {"model": {"name": "resnet"}},
        ["model", "resnet", "'logreg'", "'mlp'", "'cnn'"],
        id="unknown-model",
    ),
    pytest.param(
        {"data": {"clinets": 5}},
        ["data.clinets", "unknown", "did you mean 'clients'"],
        id="unknown-data-key",
    ),
    pytest.param(
        {"federation": {"server_lr": 0.5, "server_optimiser": "fedadam"}},
        ["federation.server_optimiser", "unknown", "did you mean 'server_optimizer'"],
        id="unknown-federation-key",
    ),
    pytest.param(
        {"model": {"name": "mlp", "hiden": [8]}},
        ["hiden", "unknown", "did you mean 'hidden'"],
        id="unknown-model-key",
    ),
    pytest.param(
        {"fedration": {"rounds": 3}},
        ["fedration", "unknown", "did you mean 'federation'"],
        id="unknown-section",
    ),
    pytest.param(
        {"data": {"partition": "iid", "alpha": 0.1}},
        ["data.alpha", "only", "dirichlet"],
        id="alpha-with-iid",
    ),
    pytest.param(
        {"data": {"name": "mnist"}},
        ["data.dir", "required", "mnist"],
        id="mnist-without-dir",
    ),
    pytest.param(
        {"evaluation": {"federated_every": 2}, "data": {"client_test_fraction": 0}},
        ["evaluation.federated_every", "data.client_test_fraction > 0"],
        id="federated-eval-without-holdout",
    ),
    pytest.param(
        {"name": "my run"},
        ["name", "pattern", "A-Za-z0-9", "'my run'"],
        id="name-with-space",
    ),
    pytest.param(
        {"name": "-run"},
        ["name", "pattern"],
        id="name-starting-with-dash",
    ),
]


@pytest.mark.parametrize(("raw", "fragments"), BAD_CONFIGS)
def test_bad_config_raises_config_error_naming_field_and_what_is_allowed(raw, fragments):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)

    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_several_bad_fields_are_all_reported():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"federation": {"rounds": 0, "lr": -1}, "seed": -2})

    message = str(info.value)
    for field in ("federation.rounds", "federation.lr", "seed"):
        assert field in message


def test_the_same_fields_are_accepted_when_valid():
    # The counterpart of the error cases: the conditions are what the messages say.
    cfg = config_from_dict(
        {
            "name": "run-1.a_b",
            "data": {
                "partition": "dirichlet",
                "alpha": 0.1,
                "clients": 5,
                "client_test_fraction": 0.1,
            },
            "federation": {"rounds": 3, "clients_per_round": 5},
            "evaluation": {"federated_every": 2},
        }
    )
    assert cfg.data.alpha == 0.1 and cfg.federation.clients_per_round == 5


# ---------------------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("federation.rounds=5", ["federation", "rounds"], 5),
        ("federation.lr=0.1", ["federation", "lr"], 0.1),
        ("data.pool=true", ["data", "pool"], True),
        ("model.hidden=[256, 256]", ["model", "hidden"], [256, 256]),
        ("model.name=abc", ["model", "name"], "abc"),
        ('name="a b"', ["name"], "a b"),
        (" data . clients = 7 ", ["data", "clients"], 7),
        ("a.b.c=x=y", ["a", "b", "c"], "x=y"),
    ],
)
def test_parse_override_reads_toml_values_else_strings(text, path, value):
    got_path, got_value = parse_override(text)

    assert got_path == path
    assert got_value == value
    assert type(got_value) is type(value)


@pytest.mark.parametrize("text", ["rounds", "=5", "a..b=1", "a.=1"])
def test_parse_override_without_key_is_a_config_error(text):
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override(text)


def test_apply_overrides_creates_nested_sections_and_does_not_mutate_input():
    raw = {"data": {"clients": 10}, "federation": {"rounds": 3}}
    before = copy.deepcopy(raw)

    out = apply_overrides(raw, ["data.clients=4", "model.name=cnn", "defense.clip.norm=1.5"])

    assert raw == before
    assert out == {
        "data": {"clients": 4},
        "federation": {"rounds": 3},
        "model": {"name": "cnn"},
        "defense": {"clip": {"norm": 1.5}},
    }
    out["federation"]["rounds"] = 99
    assert raw["federation"]["rounds"] == 3


def test_apply_overrides_into_a_value_is_a_config_error():
    with pytest.raises(ConfigError, match="'seed' is a value, not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


# ---------------------------------------------------------------------------- loading


def test_load_config_of_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_load_config_of_invalid_toml_is_a_config_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[federation\nrounds = = 3\n")

    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_load_config_applies_overrides_before_validating(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[federation]\nrounds = 3\n")

    assert load_config(path, ["federation.rounds=8"]).federation.rounds == 8
    with pytest.raises(ConfigError, match="federation.rounds"):
        load_config(path, ["federation.rounds=0"])


ROUND_TRIP = [
    pytest.param({}, id="default"),
    pytest.param(
        {
            "name": "dir-adam-cnn",
            "seed": 11,
            "data": {
                "partition": "dirichlet",
                "alpha": 0.1,
                "min_examples": 5,
                "clients": 20,
                "client_test_fraction": 0.25,
            },
            "model": {"name": "cnn", "channels": [8, 16], "stride": [1, 2], "norm": "none"},
            "federation": {
                "server_optimizer": "fedadam",
                "server_lr": 0.01,
                "server_beta2": 0.95,
                "server_tau": 0.005,
                "clients_per_round": 5,
                "local_steps": 3,
                "batch_size": "full",
            },
            "evaluation": {"federated_every": 2},
        },
        id="dirichlet-fedadam-cnn",
    ),
    pytest.param(
        {"data": {"name": "mnist", "dir": "/data/mnist", "partition": "shards"}},
        id="mnist-shards",
    ),
]


@pytest.mark.parametrize("raw", ROUND_TRIP)
def test_resolved_config_round_trips_through_toml(raw, tmp_path):
    cfg = config_from_dict(raw)
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(cfg.to_toml_dict()))

    back = load_config(path)

    assert back == cfg
    assert back.to_toml_dict() == cfg.to_toml_dict()
    assert type(back.model) is type(cfg.model)


def test_round_trip_keeps_the_values_that_were_set():
    # Independent of equality: the values written in are the values read back.
    cfg = config_from_dict(ROUND_TRIP[1].values[0])

    assert isinstance(cfg.model, CNNConfig)
    assert cfg.model.stride == [1, 2]
    assert cfg.federation.batch_size == "full"
    assert cfg.data.alpha == 0.1
    assert cfg == Config.model_validate(cfg.to_toml_dict())
