"""``engine = "auto"``, the default: the vectorized engine's numbers where it applies, the
sequential engine's where it does not, the reason logged once and the engine used recorded in
every timing line."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import small_config

from privfl.engine import AutoEngine
from privfl.federation import Federation


def _run(cfg, engine: str, rounds: int = 2) -> Federation:
    fed = Federation(
        cfg.model_copy(update={"federation": cfg.federation.model_copy(update={"engine": engine})})
    )
    for _ in range(rounds):
        fed.run_round()
    return fed


def test_auto_is_the_default_engine():
    assert small_config().federation.engine == "auto"


def test_auto_trains_an_mlp_exactly_as_the_vectorized_engine():
    cfg = small_config()
    auto, vec = _run(cfg, "auto"), _run(cfg, "vectorized")
    assert isinstance(auto.engine, AutoEngine) and auto.engine.trains_with == "vectorized"
    assert torch.equal(auto.params, vec.params)
    assert [t["engine"] for t in auto.timings] == ["vectorized", "vectorized"]


def test_auto_falls_back_to_the_sequential_numbers_with_the_reason_logged_once(caplog):
    # A poisoner's trainer has no vectorized path: auto trains those runs one client at a time.
    cfg = small_config(
        attack={"poisoning": {"method": "label_flip", "fraction": 0.5}},
    )
    with caplog.at_level(logging.INFO, logger="privfl.engine.vectorized"):
        auto = _run(cfg, "auto")
    seq = _run(cfg, "sequential")
    assert auto.engine.trains_with == "sequential"
    assert torch.equal(auto.params, seq.params)
    said = [r for r in caplog.records if "training clients sequentially" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    assert "engine = 'auto'" in said[0].getMessage()
    assert {t["engine"] for t in auto.timings} == {"sequential"}


def test_an_explicit_vectorized_engine_still_warns_when_it_falls_back(caplog):
    cfg = small_config(attack={"poisoning": {"method": "label_flip", "fraction": 0.5}})
    with caplog.at_level(logging.INFO, logger="privfl.engine.vectorized"):
        _run(cfg, "vectorized", rounds=1)
    said = [r for r in caplog.records if "training clients sequentially" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING]


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_every_timing_line_names_the_engine_that_trained(engine):
    fed = _run(small_config(), engine, rounds=1)
    assert fed.timings[0]["engine"] == engine
