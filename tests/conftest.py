"""Shared fixtures: small, fast configs on the bundled digits data."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import privfl


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run where CUDA exists and are skipped elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def small_config(**sections: Any) -> privfl.Config:
    """A fast digits config; keyword arguments update whole sections or top-level keys."""
    raw: dict[str, Any] = {
        "name": "t",
        "seed": 0,
        "data": {"name": "digits", "partition": "iid", "clients": 10},
        "model": {"name": "mlp", "hidden": [32]},
        "federation": {"rounds": 3, "clients_per_round": 4, "batch_size": 16, "lr": 0.1},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return privfl.config.config_from_dict(raw)


@pytest.fixture
def make_config():
    return small_config


@pytest.fixture(params=["mkl", "onednn"])
def gemm_library(request, monkeypatch):
    """Runs a test once with the kernels' shared-weight products on MKL and conv weight
    gradients from patches, and once with both on oneDNN (``privfl.engine.gemm``), whichever
    this CPU would pick; skips oneDNN where this torch has no oneDNN matmul."""
    from privfl.engine import gemm

    monkeypatch.setenv(gemm.ENV, request.param)
    gemm.onednn_matmul.cache_clear()
    gemm.fused_conv_weights.cache_clear()
    if request.param == "onednn" and not gemm.onednn_matmul():
        pytest.skip("this torch build has no oneDNN matmul")
    yield request.param
    monkeypatch.undo()
    gemm.onednn_matmul.cache_clear()
    gemm.fused_conv_weights.cache_clear()
