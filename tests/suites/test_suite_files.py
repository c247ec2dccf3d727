"""A suite file or its base config that is missing or not TOML is a clear ConfigError."""

from __future__ import annotations

import pytest

from privfl.errors import ConfigError
from privfl.suites.spec import load_suite


def test_missing_suite_file(tmp_path):
    with pytest.raises(ConfigError, match="suite file not found"):
        load_suite(tmp_path / "nope.toml")


def test_suite_file_that_is_not_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_suite(bad)


def test_missing_and_bad_base_config(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\nbase = "base.toml"\n')
    with pytest.raises(ConfigError, match=r"s\.toml: base config not found: .*base\.toml"):
        load_suite(suite)
    (tmp_path / "base.toml").write_text("seed = \n")
    with pytest.raises(ConfigError, match=r"base\.toml: not valid TOML"):
        load_suite(suite)
