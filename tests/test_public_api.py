"""Every name a module exports in ``__all__`` exists (a broken ``__all__`` is a defect)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import privfl
import privfl.attacks
import privfl.defenses


def _modules() -> list[str]:
    names = []
    for pkg in (privfl, privfl.attacks, privfl.defenses):
        names.append(pkg.__name__)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + "."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return sorted(set(names))


@pytest.mark.parametrize("module", _modules())
def test_all_names_exist(module):
    mod = importlib.import_module(module)
    for name in getattr(mod, "__all__", []):
        assert hasattr(mod, name), f"{module}.__all__ lists {name!r}, which it does not define"


def test_top_level_api():
    assert {"run", "resume", "Config", "load_config", "PrivflError", "RunResult"} <= set(
        privfl.__all__
    )
    assert issubclass(privfl.ConfigError, privfl.PrivflError)
    assert issubclass(privfl.PrivflError, ValueError)
