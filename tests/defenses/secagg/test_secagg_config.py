"""``check_secagg_degree``: an explicit SecAgg+ degree below the smallest safe one is refused
at config time (one line naming it), unless the research switch ``allow_insecure`` is set."""

from __future__ import annotations

import math

import pytest

from privfl.defenses.secagg.config import SecAggConfig, check_secagg_degree


def _safe_k(n: int, dropout: float, corruption: float) -> int:
    """Reference, by exact binomial sums in Python: the smallest even k < n - 1 with some
    t in (m/2, m], m = k + 1, such that n P[Bin(m, corruption) >= t] <= 2^-40 and
    n P[Bin(m, 1 - dropout) < t] <= 2^-20; else n - 1 (the complete graph)."""

    def tail(m: int, p: float, t: int) -> float:  # P[Bin(m, p) >= t]
        return sum(math.comb(m, j) * p**j * (1 - p) ** (m - j) for j in range(t, m + 1))

    for k in range(2, n - 1, 2):
        m = k + 1
        for t in range(m // 2 + 1, m + 1):
            if n * tail(m, corruption, t) <= 2**-40 and n * (1 - tail(m, 1 - dropout, t)) <= 2**-20:
                return k
    return n - 1


@pytest.mark.parametrize(
    ("n", "dropout", "corruption"),
    [(20, 0.3, 0.1), (20, 0.0, 0.1), (100, 0.1, 0.1), (60, 0.05, 0.2)],
)
def test_an_explicit_k_below_the_safe_degree_is_refused(n, dropout, corruption):
    safe = _safe_k(n, dropout, corruption)
    for k in range(2, n - 1, 2):
        cfg = SecAggConfig(neighbours=k, dropout=dropout, corruption=corruption)
        if k >= safe:
            check_secagg_degree(cfg, n)
            continue
        with pytest.raises(ValueError) as err:
            check_secagg_degree(cfg, n)
        message = str(err.value)
        assert "\n" not in message
        assert f"neighbours = {k} is below the smallest safe degree k = {safe}" in message
        assert f"cohort of {n} at dropout {dropout:g} and corruption {corruption:g}" in message
        assert "allow_insecure = true" in message
        if safe == n - 1:
            assert "(the complete graph)" in message and "use neighbours = 'all'" in message
        else:
            assert f"an even k >= {safe}" in message
        # the research switch lets it through
        check_secagg_degree(cfg.model_copy(update={"allow_insecure": True}), n)


def test_the_issues_example_and_what_is_never_checked():
    with pytest.raises(ValueError, match="k = 19 \\(the complete graph\\) for a cohort of 20"):
        check_secagg_degree(SecAggConfig(neighbours=2, dropout=0.3), 20)
    check_secagg_degree(SecAggConfig(neighbours="auto", dropout=0.3), 20)
    check_secagg_degree(SecAggConfig(neighbours="all", dropout=0.3), 20)
    check_secagg_degree(SecAggConfig(neighbours=20, dropout=0.3), 20)  # the complete graph
    check_secagg_degree(SecAggConfig(neighbours=2, dropout=0.3), 3)  # k >= n - 1
    check_secagg_degree(SecAggConfig(neighbours=2, dropout=0.3), 1)  # no protocol to check


def test_allow_insecure_needs_an_explicit_k_and_corruption_goes_with_one():
    SecAggConfig(neighbours=2, allow_insecure=True)
    SecAggConfig(neighbours=4, corruption=0.2)
    with pytest.raises(ValueError, match="allow_insecure applies only when neighbours is an"):
        SecAggConfig(neighbours="all", allow_insecure=True)
    with pytest.raises(ValueError, match="corruption applies only when neighbours is 'auto'"):
        SecAggConfig(corruption=0.2)
