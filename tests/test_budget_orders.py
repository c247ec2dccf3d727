"""The RDP orders do not limit the bound: for tiny and huge epsilons alike, the order at which
Opacus' conversion is smallest lies strictly inside privfl's grid (Opacus warns "Optimal order
is the smallest/largest alpha" otherwise), and the extended grid never gives more than
Opacus' default alphas (a minimum over more orders)."""

from __future__ import annotations

import math
import warnings

import pytest
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from privfl.accounting import _orders, epsilon_of, rdp_of

DELTA = 1e-5

CASES = [
    # (sigma, q, steps): epsilon from ~0.03 to ~6000
    (100.0, 1.0, 1),  # tiny: optimal order ~ sigma * sqrt(2 log(1/delta)) ~ 480
    (5.0, 0.01, 10),  # tiny, subsampled
    (1.1, 0.004, 15000),  # Abadi et al. 2016's MNIST setting: 2.5
    (0.5, 0.34, 300),  # the demo's DP-SGD clients: ~200
    (0.3, 1.0, 1000),  # huge: ~6000, optimal order ~1.05
    (0.1, 0.01, 1000),  # huge, subsampled
]


@pytest.mark.parametrize(("sigma", "q", "steps"), CASES)
def test_optimal_order_lies_strictly_inside_the_grid(sigma, q, steps):
    orders = list(_orders())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Opacus' edge-of-grid warning would raise here
        eps, best = get_privacy_spent(orders=orders, rdp=rdp_of(((sigma, q, steps),)), delta=DELTA)
    assert orders[0] < best < orders[-1]
    assert eps == pytest.approx(epsilon_of(((sigma, q, steps),), delta=DELTA), rel=1e-12)
    # A minimum over more orders: never above Opacus' default alphas' figure.
    default = list(RDPAccountant.DEFAULT_ALPHAS)
    rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=default)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eps_default, _ = get_privacy_spent(orders=default, rdp=rdp, delta=DELTA)
    assert eps <= eps_default * (1 + 1e-12)


def test_the_default_alphas_limited_the_tiny_epsilon():
    # sigma = 100 without sampling: the Gaussian mechanism's RDP is alpha / (2 sigma^2) exactly
    # (Mironov 2017, Proposition 7); the conversion at the best order is about 0.05, where the
    # default alphas (up to 63) stop at about 0.19.
    sigma = 100.0
    eps = epsilon_of(((sigma, 1.0, 1),), delta=DELTA)
    best = min(
        a / (2 * sigma**2) + math.log((a - 1) / a) - (math.log(DELTA) + math.log(a)) / (a - 1)
        for a in _orders()
    )  # Balle et al. 2020, Theorem 21, on the closed-form RDP
    assert eps == pytest.approx(best, rel=1e-9)
    assert eps < 0.06
    default = max(RDPAccountant.DEFAULT_ALPHAS)
    at_63 = (
        default / (2 * sigma**2)
        + math.log((default - 1) / default)
        - (math.log(DELTA) + math.log(default)) / (default - 1)
    )
    assert at_63 > 2 * eps


def _warn_each_round(rounds: int) -> None:
    for _ in range(rounds):
        with warnings.catch_warnings():  # as privfl's accounting does: resets Python's memory
            warnings.simplefilter("ignore", RuntimeWarning)
        warnings.warn("Optimal order is the smallest alpha.", UserWarning, stacklevel=1)


def test_a_library_warning_repeated_every_round_is_shown_once_per_run():
    from privfl.driver import warnings_once_per_run

    shown: list[str] = []
    with warnings.catch_warnings():  # restores the filters and showwarning afterwards
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
        _warn_each_round(5)
        assert len(shown) == 5  # without it: every round
        with warnings_once_per_run():
            _warn_each_round(5)
        assert len(shown) == 6
        with warnings_once_per_run():  # the next run shows it again, once
            _warn_each_round(3)
        assert len(shown) == 7
