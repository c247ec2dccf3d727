"""[defense.robust]: validation, the registry, and the rejection of secure channels."""

from __future__ import annotations

import pytest
import tomli_w

import privfl
from privfl.config import config_from_dict, load_config
from privfl.defenses.robust import ROBUST_AGGREGATORS, RobustRule
from privfl.defenses.robust.config import RULE_NAMES
from privfl.errors import ConfigError
from privfl.federation import Federation


def test_registry_covers_every_rule_once():
    assert set(ROBUST_AGGREGATORS) == set(RobustRule) and set(RULE_NAMES) == set(RobustRule)
    for rule, cls in ROBUST_AGGREGATORS.items():
        assert cls.rule is rule and not cls.is_weighted_mean


@pytest.mark.parametrize(
    ("robust", "message"),
    [
        (
            {"rule": "median", "trim": 0.3},
            "defense.robust.trim applies only when rule is trimmed_mean",
        ),
        ({"rule": "krum", "norm": 2.0}, "defense.robust.norm applies only when rule is norm_bound"),
        (
            {"rule": "median", "f": 2},
            "defense.robust.f applies only when rule is krum or multi_krum",
        ),
        (
            {"rule": "trimmed_mean", "trimm": 0.3},
            "unknown key 'defense.robust.trimm' (did you mean 'trim'?)",
        ),
        ({"rule": "mean"}, "defense.robust.rule"),
        ({"trim": 0.2}, "defense.robust.rule"),
        ({"rule": "trimmed_mean", "trim": 0.5}, "defense.robust.trim"),
        ({"rule": "krum", "f": 4}, "defense.robust.f = 4 with rule = 'krum' needs at least 11"),
        ({"rule": "bulyan", "f": 2}, "needs at least 11 clients a round"),
        ({"rule": "multi_krum", "m": 11}, "defense.robust.m = 11 exceeds"),
    ],
)
def test_bad_values_name_the_field(make_config, robust, message):
    with pytest.raises(ConfigError) as e:
        make_config(
            data={"clients": 20}, federation={"clients_per_round": 10}, defense={"robust": robust}
        )
    assert message in str(e.value)


def test_resolved_config_round_trips(make_config, tmp_path):
    cfg = make_config(defense={"robust": {"rule": "trimmed_mean", "trim": 0.25}})
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(cfg.to_toml_dict()))
    assert load_config(path) == cfg
    # Switching the rule of a config that sets another rule's parameter is an error, not a
    # silently ignored key.
    with pytest.raises(ConfigError, match="trim applies only when rule is trimmed_mean"):
        load_config(path, ["defense.robust.rule=krum"])


def test_set_on_a_config_without_the_section(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[data]\nname = "digits"\n')
    cfg = load_config(path, ["defense.robust.rule=median"])
    assert cfg.defense.robust.rule == "median"
    assert Federation(cfg).stages.aggregator.rule is RobustRule.MEDIAN


@pytest.mark.parametrize(
    ("channel", "section"), [("secagg", {"threshold": 0.6}), ("he", {"scheme": "ckks"})]
)
def test_robust_rules_are_rejected_with_secure_channels(channel, section):
    from privfl.config import config_from_dict
    from privfl.errors import ConfigError

    raw = {"defense": {"robust": {"rule": "median"}, channel: section}}
    with pytest.raises(ConfigError, match=f"cannot be combined with defense.{channel}"):
        config_from_dict(raw)
    assert config_from_dict({"defense": {channel: section}}).defense.robust is None


def test_secagg_and_he_together_are_rejected():
    from privfl.config import config_from_dict
    from privfl.errors import ConfigError

    with pytest.raises(ConfigError, match="defense.secagg and defense.he cannot be combined"):
        config_from_dict({"defense": {"secagg": {}, "he": {}}})


def test_no_robust_section_is_plain_fedavg(make_config):
    cfg = make_config()
    assert cfg.defense.robust is None
    assert Federation(cfg).stages.aggregator.is_weighted_mean


def test_config_default_dict_has_no_robust_table():
    assert "robust" not in privfl.Config().to_toml_dict()["defense"]


@pytest.mark.parametrize(
    ("robust", "attrs"),
    [
        ({"rule": "krum", "f": 2}, {"f": 2}),
        ({"rule": "multi_krum", "f": 1, "m": 5}, {"f": 1, "m": 5}),
        ({"rule": "median"}, {}),
        ({"rule": "trimmed_mean", "trim": 0.3}, {"beta": 0.3}),
        ({"rule": "bulyan", "f": 1}, {"f": 1}),
        ({"rule": "norm_bound", "norm": 2.5}, {"bound": 2.5}),
        ({"rule": "centered_clip", "tau": 0.5, "iterations": 3}, {"tau": 0.5, "iterations": 3}),
        ({"rule": "fltrust", "root_size": 20}, {}),
    ],
)
def test_each_rule_is_built_with_its_parameters(make_config, robust, attrs):
    cfg = make_config(federation={"clients_per_round": 8}, defense={"robust": robust})
    agg = Federation(cfg).stages.aggregator
    assert agg.rule == robust["rule"]
    assert {k: getattr(agg, k) for k in attrs} == attrs


def test_config_from_dict_error_is_one_line():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"defense": {"robust": {"rule": "median", "tau": 3.0}}})
    assert "\n" not in str(e.value)
