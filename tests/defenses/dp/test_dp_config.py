"""[defense.dp] and [audit] configs: clear errors naming the key, the value and the fix."""

from __future__ import annotations

import pytest
from conftest import small_config

from privfl.errors import ConfigError, PrivflError
from privfl.federation import Federation


@pytest.mark.parametrize(
    "dp,match",
    [
        (
            {"mode": "central", "noise_multiplier": -1.0},
            r"defense\.dp\.noise_multiplier: must be >= 0 .*got -1\.0",
        ),
        (
            {"mode": "central", "noise_multiplier": 1.0, "delta": 1.0},
            r"defense\.dp\.delta: must lie in \(0, 1\), got 1\.0",
        ),
        (
            {"mode": "central", "noise_multiplier": 1.0, "delta": 0.0},
            r"defense\.dp\.delta: must lie in \(0, 1\), got 0\.0",
        ),
        ({"mode": "central"}, "give exactly one of noise_multiplier and target_epsilon"),
        (
            {"mode": "central", "noise_multiplier": 1.0, "target_epsilon": 3.0},
            "give exactly one of",
        ),
        (
            {"mode": "local", "noise_multiplier": 1.0, "adaptive": True},
            r"defense\.dp\.adaptive applies only when mode = 'central'",
        ),
        (
            {"mode": "central", "noise_multiplier": 1.0, "target_quantile": 0.3},
            r"defense\.dp\.target_quantile applies only when adaptive = true",
        ),
        (
            {"mode": "central", "noise_multiplier": 1.0, "grad_sample_mode": "hooks"},
            "grad_sample_mode applies only when mode = 'sample'",
        ),
        ({"mode": "global", "noise_multiplier": 1.0}, r"defense\.dp\.mode: .*'sample', 'central'"),
        (
            {"mode": "central", "noise_multiplier": 1.0, "sigma": 1.0},
            r"unknown key 'defense\.dp\.sigma'.*allowed: accountant, adaptive",
        ),
    ],
)
def test_bad_dp_config_names_the_key(dp, match):
    with pytest.raises(ConfigError, match=match):
        small_config(defense={"dp": dp})


def test_audit_with_sample_level_dp_is_refused():
    with pytest.raises(ConfigError, match="audit measures user-level privacy"):
        small_config(
            defense={"dp": {"mode": "sample", "noise_multiplier": 1.0}}, audit={"canaries": 10}
        )


def test_unreachable_target_epsilon_is_a_clear_error():
    cfg = small_config(defense={"dp": {"mode": "central", "target_epsilon": 0.01}})
    with pytest.raises(PrivflError, match="no noise multiplier up to 1e\\+06 reaches epsilon 0.01"):
        Federation(cfg)


def test_adaptive_count_noise_too_small_is_a_clear_error():
    cfg = small_config(
        defense={
            "dp": {
                "mode": "central",
                "noise_multiplier": 1.0,
                "adaptive": True,
                "count_noise_multiplier": 0.4,
            }
        }
    )
    with pytest.raises(ConfigError, match="must exceed noise_multiplier / 2"):
        Federation(cfg)


def test_target_epsilon_is_calibrated_over_every_round():
    from privfl.accounting import epsilon_of

    cfg = small_config(
        federation={"rounds": 30, "clients_per_round": 3},
        defense={"dp": {"mode": "central", "target_epsilon": 2.0}},
    )
    fed = Federation(cfg)
    sigma = fed.stages.server_transforms[0].noise_multiplier
    assert 1.98 <= epsilon_of(((sigma, 0.3, 30),), delta=1e-5) <= 2.0


def test_central_dp_uses_poisson_sampling_and_says_so(caplog):
    from privfl.sampling import PoissonSampler

    cfg = small_config(defense={"dp": {"mode": "central", "noise_multiplier": 1.0}})
    fed = Federation(cfg)
    assert isinstance(fed.sampler, PoissonSampler) and fed.sampler.rate == pytest.approx(0.4)
    assert "Poisson-sampled at q = 4/10" in caplog.text
