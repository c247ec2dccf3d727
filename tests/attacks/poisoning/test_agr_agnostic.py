"""Min-max and min-sum: the closed-form gamma against the paper's bisection (Shejwalkar and
Houmansadr 2021, Algorithm 1) and against the conditions themselves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from privfl.attacks.poisoning import min_max, min_sum
from privfl.attacks.poisoning.agr_agnostic import (
    min_max_gamma,
    min_sum_gamma,
    perturbation_direction,
)


def _max_cond(r, p, gamma):
    mu = r.mean(axis=0)
    mal = mu + gamma * p
    lhs = max(np.sum((mal - ri) ** 2) for ri in r)
    rhs = max(np.sum((ri - rj) ** 2) for ri in r for rj in r)
    return lhs <= rhs


def _sum_cond(r, p, gamma):
    mu = r.mean(axis=0)
    mal = mu + gamma * p
    lhs = sum(np.sum((mal - ri) ** 2) for ri in r)
    rhs = max(sum(np.sum((ri - rj) ** 2) for rj in r) for ri in r)
    return lhs <= rhs


def _bisection(r, p, cond, gamma_init=1000.0, tol=1e-7):
    """The paper's Algorithm 1 (as in its code: step halves from gamma_init, so gamma can
    reach anywhere in (0, 2 gamma_init)), with a wide start so it covers the answer."""
    gamma, step, succ = gamma_init, gamma_init, 0.0
    while abs(succ - gamma) > tol:
        if cond(r, p, gamma):
            succ = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return succ


@settings(max_examples=40, deadline=None)
@given(
    r=st.integers(2, 8),
    d=st.integers(1, 10),
    kind=st.sampled_from(["std", "unit", "sign"]),
    seed=st.integers(0, 2**32 - 1),
)
@pytest.mark.parametrize(
    ("gamma_of", "cond"), [(min_max_gamma, _max_cond), (min_sum_gamma, _sum_cond)]
)
def test_closed_form_matches_bisection(gamma_of, cond, r, d, kind, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((r, d)) + rng.standard_normal(d)).astype(np.float32)
    p = perturbation_direction(torch.from_numpy(x), kind)
    x64, p64 = x.astype(np.float64), p.double().numpy()
    gamma = gamma_of(torch.from_numpy(x), p)
    assert gamma == pytest.approx(_bisection(x64, p64, cond), rel=1e-4, abs=1e-5)
    assert cond(x64, p64, gamma * (1 - 1e-4))
    if gamma > 1e-3:
        assert not cond(x64, p64, gamma * (1 + 1e-3))


def test_directions():
    x = torch.tensor([[1.0, -2.0], [3.0, -4.0]])
    torch.testing.assert_close(perturbation_direction(x, "std"), torch.tensor([-1.0, -1.0]))
    torch.testing.assert_close(perturbation_direction(x, "sign"), torch.tensor([-1.0, 1.0]))
    mu = torch.tensor([2.0, -3.0])
    torch.testing.assert_close(perturbation_direction(x, "unit"), -mu / mu.norm())


def test_single_known_update_gives_no_room():
    # Partial knowledge with one attacker: no spread to hide in, so it sends its own update.
    x = torch.tensor([[1.0, 2.0, 3.0]])
    torch.testing.assert_close(min_max(x, "unit"), x[0])
    torch.testing.assert_close(min_sum(x, "std"), x[0])


def test_min_max_sits_on_the_boundary():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((9, 50)).astype(np.float32))
    mal = min_max(x, "std").double()
    far = float(((x.double() - mal) ** 2).sum(dim=1).max())
    spread = float(max(((a - b) ** 2).sum() for a in x.double() for b in x.double()))
    assert far == pytest.approx(spread, rel=1e-4)
