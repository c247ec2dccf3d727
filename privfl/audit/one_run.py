"""The empirical epsilon lower bound of a one-run audit (Steinke, Nasr and Jagielski,
"Privacy Auditing with One (1) Training Run", NeurIPS 2023, arXiv 2305.08846, Section 5).

``m`` canaries are each included in training independently with probability 1/2; an auditor
guesses membership for ``r`` of them (abstaining on the rest) and is right ``v`` times. Under
(eps, delta)-DP the number of correct guesses is dominated by Binomial(r, q) with
q = e^eps / (1 + e^eps), up to a delta term, so the p-value of ``v`` under the hypothesis
"the training was (eps, delta)-DP" is

    P[Binomial(r, q) >= v] + 2 m delta max_{1 <= i <= v} P[v - i <= Binomial(r, q) < v] / i,

and the lower bound at confidence 1 - beta is the largest eps whose p-value is below beta: any
smaller eps is rejected by the observed guesses. Written here because no maintained library
ships this bound (dp-accounting and Opacus compute upper bounds only).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import stats

from privfl.audit.canary import DEFAULT_DELTA
from privfl.data.base import ArrayDataset
from privfl.errors import ConfigError, PrivflError
from privfl.pipeline import Contribution
from privfl.runfolder import RunFile
from privfl.seeding import numpy_rng

if TYPE_CHECKING:
    from privfl.audit.config import AuditConfig
    from privfl.config import Config
    from privfl.data.federated import FederatedData
    from privfl.pipeline import RunEnd, RunSetup

log = logging.getLogger(__name__)


def _check(m: int, r: int, v: int, delta: float) -> None:
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")
    if not 0.0 <= delta <= 1.0:
        raise ValueError(f"delta must lie in [0, 1], got {delta}")


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """The probability of ``v`` or more correct guesses out of ``r`` under (eps, delta)-DP.

    >>> round(p_value(100, 100, 50, 0.0, 0.0), 3)  # fair coin: P[Bin(100, 1/2) >= 50]
    0.54
    """
    _check(m, r, v, delta)
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))  # P[Bin(r, q) >= v]
    if delta == 0.0 or v == 0:
        return min(tail, 1.0)
    # P[v - i <= Bin < v] for i = 1..v: a cumulative sum of pmf(v-1), pmf(v-2), ...
    window = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
    alpha = float(np.max(window / np.arange(1, v + 1)))
    return min(tail + 2.0 * m * delta * alpha, 1.0)


def epsilon_lower_bound(
    m: int, r: int, v: int, *, delta: float, confidence: float = 0.95, eps_max: float = 100.0
) -> float:
    """The largest eps (to 1e-6) that ``v`` correct guesses of ``r`` reject at ``confidence``.

    Returns 0 when even eps = 0 is not rejected (the guesses are no better than chance), and
    ``eps_max`` when every eps up to it is rejected.

    >>> epsilon_lower_bound(1000, 100, 50, delta=1e-5)
    0.0
    >>> 2.0 < epsilon_lower_bound(1000, 100, 100, delta=0.0) < 4.0  # 100 of 100 right
    True
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    beta = 1.0 - confidence
    _check(m, r, v, delta)
    if p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    if p_value(m, r, v, eps_max, delta) < beta:
        return eps_max
    lo, hi = 0.0, eps_max  # p_value(lo) < beta <= p_value(hi); p_value increases with eps
    while hi - lo > 1e-6:
        mid = (lo + hi) / 2
        if p_value(m, r, v, mid, delta) < beta:
            lo = mid
        else:
            hi = mid
    return lo


# ---------------------------------------------------------------- the canaries of a run


@dataclass(frozen=True)
class CanarySet:
    """The one-run audit's canaries: examples ``x``, their (possibly wrong) labels ``y``,
    whether each was inserted into some client's training data, and the kind of canary."""

    x: torch.Tensor
    y: torch.Tensor
    included: np.ndarray
    kind: str

    def __len__(self) -> int:
        return len(self.y)


def insert_canaries(
    data: FederatedData, cfg: AuditConfig, seed: int
) -> tuple[FederatedData, CanarySet]:
    """Draw ``cfg.canaries`` canaries from the test split (which loses them), include each with
    probability 1/2 in a uniformly random client's training data, and return the new data.

    ``mislabelled`` canaries carry a label drawn uniformly from the other classes (they can
    only be predicted by memorising them); ``held_out`` canaries keep their true label.
    Randomness: the stream ``(seed, "one-run-canaries")``.

    Raises:
        ConfigError: the test split has fewer examples than canaries.
    """
    bundle = data.bundle
    m = cfg.canaries
    n_test = len(bundle.test.y)
    if m >= n_test:
        raise ConfigError(
            f"audit.canaries = {m} needs more test examples than that to draw from; the test "
            f"split has {n_test}: lower audit.canaries (or raise data.test_fraction)"
        )
    rng = numpy_rng(seed, "one-run-canaries")
    picked = rng.choice(n_test, m, replace=False)
    keep = np.ones(n_test, dtype=bool)
    keep[picked] = False
    x = bundle.test.x[picked]
    y = bundle.test.y[picked].clone()
    if cfg.canary_kind == "mislabelled":
        shift = torch.from_numpy(rng.integers(1, bundle.num_classes, m))
        y = (y + shift) % bundle.num_classes
    included = rng.random(m) < 0.5
    holders = rng.integers(0, data.num_clients, m)
    n_train = len(bundle.train.y)
    train = ArrayDataset(
        torch.cat([bundle.train.x, x[included]]), torch.cat([bundle.train.y, y[included]])
    )
    test = ArrayDataset(bundle.test.x[keep], bundle.test.y[keep])
    indices = [list(map(int, ix)) for ix in data.partition.indices]
    for offset, client in enumerate(holders[included]):
        indices[int(client)].append(n_train + offset)
    partition = replace(data.partition, indices=[np.asarray(ix, dtype=np.int64) for ix in indices])
    new = replace(data, bundle=replace(bundle, train=train, test=test), partition=partition)
    return new, CanarySet(x, y, included, cfg.canary_kind)


def guess_and_bound(
    scores: np.ndarray, included: np.ndarray, *, guesses: int, delta: float, confidence: float
) -> dict[str, float | int]:
    """Guess the ``guesses / 2`` highest-scored canaries IN and the ``guesses / 2`` lowest OUT,
    count the correct guesses and bound epsilon (:func:`epsilon_lower_bound`)."""
    m = len(scores)
    if guesses > m or guesses < 2:
        raise ValueError(f"guesses ({guesses}) must lie in [2, canaries = {m}]")
    order = np.argsort(scores, kind="stable")
    half = guesses // 2
    guessed_in, guessed_out = order[m - half :], order[:half]
    correct = int(included[guessed_in].sum() + (~included[guessed_out]).sum())
    r = 2 * half
    return {
        "canaries": m,
        "inserted": int(included.sum()),
        "guesses": r,
        "correct": correct,
        "epsilon_lower_bound": epsilon_lower_bound(
            m, r, correct, delta=delta, confidence=confidence
        ),
    }


class OneRunAudit:
    """The end of a one-run audit: the final model's loss on every canary, the guesses, the
    lower bound beside the accountant's epsilon, written to ``audit.json``.

    Args:
        canaries: the run's canary set.
        guesses: guesses made (half IN, half OUT).
        confidence: of the lower bound.
        delta: the delta both epsilons are at (the DP delta, or 1e-5 without DP).
        logits: a function from the final parameters and inputs to logits.
    """

    def __init__(self, canaries: CanarySet, *, guesses: int, confidence: float, delta: float,
                 logits) -> None:  # fmt: skip
        self.canaries, self.guesses, self.confidence = canaries, guesses, confidence
        self.delta, self.logits = delta, logits
        self.result: dict[str, Any] | None = None

    def __call__(self, end: RunEnd) -> None:
        """Finisher: guess, bound, compare with the ledger, write ``audit.json``."""
        c = self.canaries
        with torch.no_grad():
            z = self.logits(end.params, c.x).double()
        scores = -torch.nn.functional.cross_entropy(z, c.y, reduction="none").numpy()
        out = guess_and_bound(
            scores, c.included, guesses=self.guesses, delta=self.delta,
            confidence=self.confidence,
        )  # fmt: skip
        upper = None
        if end.ledger.events and end.ledger.delta is not None:
            try:
                upper = float(max(end.ledger.epsilons().values()))  # ledger.json's headline
            except PrivflError:  # e.g. GDP's root search failing: ledger.json says so too
                upper = None
        self.result = {
            "method": "one-run audit (Steinke, Nasr and Jagielski 2023)",
            "canary_kind": c.kind,
            "score": "minus the final model's cross-entropy on the canary's label",
            "confidence": self.confidence,
            "delta": self.delta,
            **out,
            "epsilon_bound": upper,
        }
        log.info(
            "one-run audit: %d of %d guesses right, epsilon >= %.3f at %.0f%% confidence "
            "(accountant: %s)", out["correct"], out["guesses"], out["epsilon_lower_bound"],
            100 * self.confidence, "none" if upper is None else f"{upper:.3f}",
        )  # fmt: skip
        if end.folder is not None:
            end.folder.write_json(RunFile.AUDIT, self.result)


def one_run_audit_stages(config: Config, setup: RunSetup) -> Contribution:
    """``[audit] method = "one_run"`` -> a :class:`OneRunAudit` finisher on the canaries the
    run's data holds (none in a twin run that shares another run's data: nothing to add)."""
    audit = config.audit
    if audit is None or setup.canaries is None:
        return Contribution()
    dp = config.defense.dp

    def logits(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return setup.model_with(params)(x)

    finisher = OneRunAudit(
        setup.canaries,
        guesses=min(audit.resolved_guesses, audit.canaries - audit.canaries % 2),
        confidence=audit.confidence,
        delta=dp.delta if dp is not None else DEFAULT_DELTA,
        logits=logits,
    )
    return Contribution(finishers=(finisher,))
