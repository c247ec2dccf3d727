"""privfl.registry: one registry helper with a duplicate check."""

import pytest

from privfl.attacks.poisoning import POISONING_ATTACKS
from privfl.attacks.poisoning.config import PoisoningMethod
from privfl.data import LOADERS, PARTITIONERS
from privfl.defenses.robust import ROBUST_AGGREGATORS
from privfl.engine import ENGINES
from privfl.registry import Registry
from privfl.server_optim import SERVER_OPTIMIZERS


def test_duplicate_key_is_refused_and_the_first_stays():
    reg = Registry[str, int]("number")
    reg.register("one", 1)
    with pytest.raises(ValueError, match="number 'one' registered twice"):
        reg.register("one", 2)
    assert reg["one"] == 1 and len(reg) == 1


def test_by_attribute_refuses_two_classes_with_one_key():
    class A:
        key = "x"

    class B:
        key = "x"

    with pytest.raises(ValueError, match="registered twice"):
        Registry.by_attribute("thing", "key", (A, B))


def test_unknown_key_names_the_registered_ones():
    reg = Registry.of("engine", (("a", 1), ("b", 2)))
    with pytest.raises(KeyError, match="unknown engine 'c'; registered: 'a', 'b'"):
        reg["c"]


def test_create_calls_the_factory():
    reg = Registry.of("pair", (("p", lambda a, b=0: (a, b)),))
    assert reg.create("p", 1, b=2) == (1, 2)


def test_the_registries_keep_the_config_names():
    assert list(ENGINES) == ["auto", "sequential", "vectorized", "ray"]
    assert list(PARTITIONERS) == ["iid", "dirichlet", "shards", "natural"]
    assert list(SERVER_OPTIMIZERS) == [
        "fedavg",
        "fedavgm",
        "fedadagrad",
        "fedadam",
        "fedyogi",
        "qffl",
    ]
    assert "digits" in LOADERS
    assert set(POISONING_ATTACKS) == set(PoisoningMethod)
    for key, cls in ROBUST_AGGREGATORS.items():
        assert cls.rule == key
