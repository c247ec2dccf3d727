"""Tests of privfl/server_optim.py against two steps of Reddi et al. 2021, Algorithm 2,
written out by hand in plain Python floats (m_0 = 0, v_0 = tau^2, no bias correction)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from privfl.config import FederationConfig
from privfl.server_optim import (
    SERVER_OPTIMIZER_NAMES,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedYogi,
    create_server_optimizer,
)

X0 = [0.5, -1.0]
DELTA1 = [0.2, -0.4]
DELTA2 = [-0.1, 0.3]


def sign(x: float) -> float:
    return (x > 0) - (x < 0)


def two_steps(
    opt, x0=X0, d1=DELTA1, d2=DELTA2, dtype=torch.float64
) -> tuple[list[float], list[float]]:
    """Run two implementation steps; return x1, x2 as Python floats."""
    x1 = opt.step(torch.tensor(x0, dtype=dtype), torch.tensor(d1, dtype=dtype))
    x2 = opt.step(x1, torch.tensor(d2, dtype=dtype))
    assert x1.dtype == x2.dtype == dtype
    return x1.tolist(), x2.tolist()


def assert_close(got: list[float], want: list[float]) -> None:
    assert got == pytest.approx(want, abs=1e-6, rel=0)


def test_fedavg_two_steps_by_hand():
    # x1 = x0 + 0.7 * d1 = [0.5 + 0.14, -1.0 - 0.28] = [0.64, -1.28]
    # x2 = x1 + 0.7 * d2 = [0.64 - 0.07, -1.28 + 0.21] = [0.57, -1.07]
    got1, got2 = two_steps(FedAvg(lr=0.7))

    assert_close(got1, [0.64, -1.28])
    assert_close(got2, [0.57, -1.07])


def test_fedavgm_two_steps_by_hand():
    eta, beta = 0.5, 0.9
    # step 1: m1 = beta * 0 + d1 = [0.2, -0.4];  x1 = x0 + eta * m1 = [0.6, -1.2]
    # step 2: m2 = 0.9 * [0.2, -0.4] + [-0.1, 0.3] = [0.08, -0.06]
    #         x2 = [0.6, -1.2] + 0.5 * [0.08, -0.06] = [0.64, -1.23]
    got1, got2 = two_steps(FedAvgM(lr=eta, momentum=beta))

    assert_close(got1, [0.6, -1.2])
    assert_close(got2, [0.64, -1.23])


def adaptive_by_hand(kind: str, eta, b1, b2, tau, x0, deltas) -> list[list[float]]:
    """Algorithm 2 of Reddi et al. 2021, one coordinate at a time, plain floats."""
    xs = []
    x = list(x0)
    m = [0.0, 0.0]
    v = [tau**2, tau**2]
    for d in deltas:
        for i in range(2):
            m[i] = b1 * m[i] + (1 - b1) * d[i]
            d2 = d[i] * d[i]
            if kind == "adagrad":
                v[i] = v[i] + d2
            elif kind == "adam":
                v[i] = b2 * v[i] + (1 - b2) * d2
            elif kind == "yogi":
                v[i] = v[i] - (1 - b2) * d2 * sign(v[i] - d2)
            x[i] = x[i] + eta * m[i] / (math.sqrt(v[i]) + tau)
        xs.append(list(x))
    return xs


def test_fedadam_two_steps_written_out():
    # eta = 0.1, beta1 = 0.9, beta2 = 0.99, tau = 0.01 -> v0 = 1e-4.
    # step 1, coord 0: m = 0.1 * 0.2 = 0.02; v = 0.99e-4 + 0.01 * 0.04 = 4.99e-4
    #   x = 0.5 + 0.1 * 0.02 / (sqrt(4.99e-4) + 0.01)
    m = 0.02
    v = 0.99 * 1e-4 + 0.01 * 0.04
    x1_0 = 0.5 + 0.1 * m / (math.sqrt(v) + 0.01)
    # step 2, coord 0: m = 0.9 * 0.02 + 0.1 * -0.1 = 0.008; v = 0.99 * 4.99e-4 + 0.01 * 0.01
    m = 0.9 * m + 0.1 * -0.1
    v = 0.99 * v + 0.01 * 0.01
    x2_0 = x1_0 + 0.1 * m / (math.sqrt(v) + 0.01)

    got1, got2 = two_steps(FedAdam(lr=0.1, beta1=0.9, beta2=0.99, tau=0.01))

    assert got1[0] == pytest.approx(x1_0, abs=1e-6)
    assert got2[0] == pytest.approx(x2_0, abs=1e-6)
    # and the generic hand loop agrees on both coordinates
    want = adaptive_by_hand("adam", 0.1, 0.9, 0.99, 0.01, X0, [DELTA1, DELTA2])
    assert_close(got1, want[0])
    assert_close(got2, want[1])


@pytest.mark.parametrize(
    ("kind", "cls", "kwargs"),
    [
        pytest.param("adagrad", FedAdagrad, {"beta1": 0.8}, id="fedadagrad"),
        pytest.param("adam", FedAdam, {"beta1": 0.8, "beta2": 0.9}, id="fedadam"),
        pytest.param("yogi", FedYogi, {"beta1": 0.8, "beta2": 0.9}, id="fedyogi"),
    ],
)
# tau = 0.3: v0 = 0.09 lies between DELTA1^2 = [0.04, 0.16], so Yogi's sign differs by coordinate.
@pytest.mark.parametrize("tau", [1e-3, 0.3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_adaptive_two_steps_match_hand_loop(kind, cls, kwargs, tau, dtype):
    eta = 0.05
    want = adaptive_by_hand(
        kind,
        eta,
        kwargs["beta1"],
        kwargs.get("beta2", 0.0),
        tau,
        X0,
        [
            DELTA1,
            DELTA2,
        ],
    )

    got1, got2 = two_steps(cls(lr=eta, tau=tau, **kwargs), dtype=dtype)

    assert_close(got1, want[0])
    assert_close(got2, want[1])


def test_fedyogi_sign_term_matters_per_coordinate():
    # tau = 0.5 -> v0 = 0.25. Delta = [0.1, 1.0]: Delta^2 = [0.01, 1.0].
    #   coord 0: v0 > Delta^2 -> sign +1 -> v1 = 0.25 - 0.1 * 0.01 = 0.249  (v shrinks)
    #   coord 1: v0 < Delta^2 -> sign -1 -> v1 = 0.25 + 0.1 * 1.0  = 0.35   (v grows)
    # FedAdam would give 0.9 * 0.25 + 0.1 * Delta^2 = [0.226, 0.325] instead.
    eta, b1, b2, tau = 1.0, 0.9, 0.9, 0.5
    d1, d2 = [0.1, 1.0], [0.1, 1.0]
    m1 = [0.1 * 0.1, 0.1 * 1.0]  # [0.01, 0.1]
    v1 = [0.249, 0.35]
    x1 = [0.0 + m1[0] / (math.sqrt(v1[0]) + tau), 0.0 + m1[1] / (math.sqrt(v1[1]) + tau)]
    # step 2, same delta: m2 = 0.9 * m1 + 0.1 * d
    #   coord 0: 0.249 > 0.01 -> v2 = 0.249 - 0.001 = 0.248
    #   coord 1: 0.35 < 1.0   -> v2 = 0.35 + 0.1   = 0.45
    m2 = [0.9 * 0.01 + 0.01, 0.9 * 0.1 + 0.1]  # [0.019, 0.19]
    v2 = [0.248, 0.45]
    x2 = [x1[i] + m2[i] / (math.sqrt(v2[i]) + tau) for i in range(2)]

    yogi = FedYogi(lr=eta, beta1=b1, beta2=b2, tau=tau)
    zero = torch.zeros(2, dtype=torch.float64)
    got1 = yogi.step(zero, torch.tensor(d1, dtype=torch.float64))
    # v after step 1: ignoring the sign (always +1 or always -1) would give [0.249, 0.15]
    # or [0.251, 0.35]; FedAdam's rule [0.226, 0.325].
    assert yogi.v.tolist() == pytest.approx(v1, abs=1e-12)
    got2 = yogi.step(got1, torch.tensor(d2, dtype=torch.float64))
    assert yogi.v.tolist() == pytest.approx(v2, abs=1e-12)

    assert_close(got1.tolist(), x1)
    assert_close(got2.tolist(), x2)


def test_step_leaves_params_unchanged_and_float32_in_float32_out():
    params = torch.tensor([1.0, 2.0])
    copy = params.clone()
    for opt in (FedAvg(), FedAvgM(), FedAdagrad(lr=0.1), FedAdam(lr=0.1), FedYogi(lr=0.1)):
        out = opt.step(params, torch.tensor([0.5, -0.5]))
        assert torch.equal(params, copy)
        assert out.dtype == torch.float32 and out.shape == (2,)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: FedAvgM(lr=0.5, momentum=0.8), id="fedavgm"),
        pytest.param(lambda: FedAdagrad(lr=0.1, beta1=0.7, tau=0.01), id="fedadagrad"),
        pytest.param(lambda: FedAdam(lr=0.1, beta1=0.7, beta2=0.95, tau=0.01), id="fedadam"),
        pytest.param(lambda: FedYogi(lr=0.1, beta1=0.7, beta2=0.95, tau=0.01), id="fedyogi"),
    ],
)
def test_state_dict_round_trip_gives_identical_next_steps(make):
    g = torch.Generator().manual_seed(0)
    deltas = [torch.randn(5, generator=g) for _ in range(5)]
    x = torch.zeros(5)
    a = make()
    for d in deltas[:2]:
        x = a.step(x, d)

    # Execute: restore into a new optimizer, as a checkpoint would (a deep copy)
    b = make()
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    fresh_next = make().step(x, deltas[2])

    # Assert: identical continuations; a fresh optimizer continues differently
    xa, xb = a.step(x, deltas[2]), b.step(x, deltas[2])
    assert torch.equal(xa, xb)
    assert not torch.allclose(fresh_next, xb)
    for d in deltas[3:]:
        xa, xb = a.step(xa, d), b.step(xb, d)
        assert torch.equal(xa, xb)


@pytest.mark.parametrize(
    ("kwargs", "cls", "attrs"),
    [
        pytest.param({"server_lr": 0.3}, FedAvg, {"lr": 0.3}, id="fedavg"),
        pytest.param(
            {"server_optimizer": "fedavgm", "server_lr": 0.4, "server_momentum": 0.7},
            FedAvgM,
            {"lr": 0.4, "momentum": 0.7},
            id="fedavgm",
        ),
        pytest.param(
            {
                "server_optimizer": "fedadagrad",
                "server_lr": 0.02,
                "server_beta1": 0.5,
                "server_tau": 0.004,
            },
            FedAdagrad,
            {"lr": 0.02, "beta1": 0.5, "tau": 0.004},
            id="fedadagrad",
        ),
        pytest.param(
            {
                "server_optimizer": "fedadam",
                "server_lr": 0.03,
                "server_beta1": 0.6,
                "server_beta2": 0.95,
                "server_tau": 0.005,
            },
            FedAdam,
            {"lr": 0.03, "beta1": 0.6, "beta2": 0.95, "tau": 0.005},
            id="fedadam",
        ),
        pytest.param(
            {
                "server_optimizer": "fedyogi",
                "server_lr": 0.04,
                "server_beta1": 0.7,
                "server_beta2": 0.97,
                "server_tau": 0.006,
            },
            FedYogi,
            {"lr": 0.04, "beta1": 0.7, "beta2": 0.97, "tau": 0.006},
            id="fedyogi",
        ),
    ],
)
def test_create_server_optimizer_maps_config_to_class_and_parameters(kwargs, cls, attrs):
    opt = create_server_optimizer(FederationConfig(**kwargs))

    assert type(opt) is cls
    for name, value in attrs.items():
        assert getattr(opt, name) == value, name


def test_every_config_name_has_a_factory():
    built = {
        type(create_server_optimizer(FederationConfig(server_optimizer=n)))
        for n in SERVER_OPTIMIZER_NAMES
    }
    assert built == {FedAvg, FedAvgM, FedAdagrad, FedAdam, FedYogi}
