"""Membership inference against the released (global) model, with shadow federations.

The candidates and the shadow design follow Carlini et al. 2022 (Section IV and the reference
code's ``keep`` matrix): a balanced candidate set, shadow models in complementary pairs so that
each candidate is IN exactly half of them, each shadow trained with the target's own recipe
(here: privfl's federation with the run's config) on a training set as large as the target's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from privfl.attacks.membership import scores as S
from privfl.attacks.membership.config import MembershipConfig
from privfl.attacks.membership.metrics import Roc, roc_of

#: Trains one shadow federation on the population examples ``ids`` with seed ``seed`` and
#: returns a function from inputs to logits of its final model.
ShadowTrainer = Callable[[np.ndarray, int], Callable[[torch.Tensor], torch.Tensor]]


@dataclass(frozen=True)
class MembershipResult:
    """A membership attack's ``attacks.json`` record, its ROC curve (for the plot), the
    candidates and their scores; ``baseline``: the loss attack on the same candidates and
    model (``baseline_loss``), or None."""

    record: dict
    roc: Roc
    candidates: Candidates
    scores: np.ndarray
    baseline: MembershipResult | None = None

    @property
    def records(self) -> list[dict]:
        """The records for ``attacks.json``: this attack's, then its baseline's."""
        return [self.record] + ([] if self.baseline is None else [self.baseline.record])


@dataclass(frozen=True)
class Population:
    """The examples an attacker can draw from: the training split (ids ``0 .. n_train - 1``)
    followed by the test split; ``held`` marks the training examples some client holds."""

    x: torch.Tensor
    y: torch.Tensor
    n_train: int
    held: np.ndarray

    @classmethod
    def of(cls, train_x, train_y, test_x, test_y, held_ids: np.ndarray) -> Population:
        """The population of a run's splits; ``held_ids`` index the training split."""
        held = np.zeros(len(train_y), dtype=bool)
        held[np.asarray(held_ids, dtype=np.int64)] = True
        return cls(torch.cat([train_x, test_x]), torch.cat([train_y, test_y]), len(train_y), held)


@dataclass(frozen=True)
class Candidates:
    """``ids`` into the population, half members (held by a client) and half non-members (test
    split), shuffled; ``is_member`` says which."""

    ids: np.ndarray
    is_member: np.ndarray


def draw_candidates(pop: Population, count: int, rng: np.random.Generator) -> Candidates:
    """``count / 2`` members drawn uniformly from the clients' examples and as many
    non-members drawn uniformly from the test split, in random order.

    Raises:
        ValueError: fewer held training examples or test examples than ``count / 2``.
    """
    half = count // 2
    members = np.flatnonzero(pop.held)
    tests = np.arange(pop.n_train, len(pop.y))
    for what, pool in (("training examples held by clients", members), ("test examples", tests)):
        if len(pool) < half:
            raise ValueError(
                f"attack.membership.candidates = {count} needs {half} {what}; the run has "
                f"{len(pool)}: lower candidates"
            )
    ids = np.concatenate(
        [rng.choice(members, half, replace=False), rng.choice(tests, half, replace=False)]
    )
    is_member = np.repeat([True, False], half)
    order = rng.permutation(count)
    return Candidates(ids[order], is_member[order])


def shadow_inclusions(shadows: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``(shadows, count)`` booleans: shadow ``2p`` keeps a random half of the candidates and
    shadow ``2p + 1`` the other half, so every candidate is IN exactly ``shadows / 2`` times."""
    if shadows % 2:
        raise ValueError(f"shadows must be even, got {shadows}")
    rows = []
    for _ in range(shadows // 2):
        row = np.zeros(count, dtype=bool)
        row[rng.choice(count, count // 2, replace=False)] = True
        rows += [row, ~row]
    return np.array(rows).reshape(shadows, count)


def shadow_training_ids(
    include: np.ndarray,
    candidates: Candidates,
    others: np.ndarray,
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """A shadow's training set: the candidates ``include`` marks, filled up to ``size`` with
    examples drawn uniformly from ``others`` (population ids that are not candidates)."""
    chosen = candidates.ids[include]
    fill = size - len(chosen)
    if fill < 0 or fill > len(others):
        raise ValueError(
            f"a shadow training set of {size} examples cannot hold {len(chosen)} candidates "
            f"and draw {fill} of {len(others)} other population examples"
        )
    return np.concatenate([chosen, rng.choice(others, fill, replace=False)])


@torch.no_grad()
def logits_of(model_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int = 1024):
    """``model_fn`` applied to ``x`` in batches, as a float64 numpy array."""
    return torch.cat([model_fn(x[i : i + batch]) for i in range(0, len(x), batch)]).double().numpy()


def run_membership(
    cfg: MembershipConfig,
    target: Callable[[torch.Tensor], torch.Tensor],
    pop: Population,
    train_shadow: ShadowTrainer | None,
    seed: int,
    *,
    count: int | None = None,
    about: dict | None = None,
) -> MembershipResult:
    """Score the candidates against ``target`` (a logits function of the attacked model) with
    ``cfg.method``; return the ``attacks.json`` record (metrics, candidate design, seconds)
    and the ROC curve.

    Args:
        cfg: the ``[attack.membership]`` section.
        target: inputs -> logits of the attacked model.
        pop: the population the candidates and the shadows' data are drawn from; its
            ``held`` examples are the members (the clients', or one client's).
        train_shadow: trains a shadow model (lira, rmia); None for loss.
        seed: the seed of the candidate and shadow draws.
        count: candidates (even; default ``cfg.candidates``).
        about: fields added to the record (the round and client of a client target).
    """
    start = time.perf_counter()
    count = cfg.candidates if count is None else count
    rng = np.random.default_rng(seed)
    cand = draw_candidates(pop, count, rng)
    x, y = pop.x[cand.ids], pop.y[cand.ids].numpy()
    record: dict = {
        "attack": f"membership-{cfg.method}",
        "target": cfg.target,
        **(about or {}),
        "candidates": count,
        "members": int(cand.is_member.sum()),
        "non_members": int((~cand.is_member).sum()),
        "candidate_design": "members uniform from "
        + ("the client's" if cfg.target == "client" else "clients'")
        + " training data, non-members uniform from the test split",
    }
    baseline = None
    if cfg.method == "loss":
        score = S.loss_score(logits_of(target, x), y)
    else:
        assert train_shadow is not None
        score = _shadow_attack(cfg, target, pop, cand, train_shadow, rng, record)
        if cfg.baseline_loss:
            t0 = time.perf_counter()
            base = {**record, "attack": "membership-loss", "baseline_of": record["attack"]}
            for key in ("shadow_models", "variant", "population"):
                base.pop(key, None)
            baseline = _finish(base, S.loss_score(logits_of(target, x), y), cand, t0)
    return replace(_finish(record, score, cand, start), baseline=baseline)


def _finish(record: dict, score: np.ndarray, cand: Candidates, start: float) -> MembershipResult:
    roc = roc_of(score, cand.is_member)
    record.update(roc.metrics())
    # the curve itself, for plots of several runs (at most 2 x candidates + 1 points)
    record["roc"] = {"fpr": roc.fpr.round(6).tolist(), "tpr": roc.tpr.round(6).tolist()}
    record["seconds"] = round(time.perf_counter() - start, 3)
    return MembershipResult(record, roc, cand, score)


def _shadow_attack(cfg, target, pop, cand, train_shadow, rng, record) -> np.ndarray:
    x, y = pop.x[cand.ids], pop.y[cand.ids].numpy()
    population_z = np.array([], dtype=np.int64)
    reserved = set(cand.ids.tolist())
    if cfg.method == "rmia":
        free_tests = np.setdiff1d(np.arange(pop.n_train, len(pop.y)), cand.ids)
        if len(free_tests) == 0:
            raise ValueError("rmia needs test examples beyond the candidates for its population")
        population_z = rng.choice(free_tests, min(cfg.population, len(free_tests)), replace=False)
        reserved |= set(population_z.tolist())
    others = np.setdiff1d(np.arange(len(pop.y)), np.fromiter(reserved, dtype=np.int64))
    size = int(pop.held.sum())
    include = shadow_inclusions(cfg.shadow_models, len(cand.ids), rng)
    shadow_x, shadow_z = [], []
    for k in range(cfg.shadow_models):
        ids = shadow_training_ids(include[k], cand, others, size, rng)
        model = train_shadow(ids, int(rng.integers(2**31)))
        shadow_x.append(logits_of(model, x))
        if len(population_z):
            shadow_z.append(logits_of(model, pop.x[population_z]))
    record["shadow_models"] = cfg.shadow_models
    if cfg.method == "lira":
        phi_t = S.logit_confidence(logits_of(target, x), y)
        phi_s = np.stack([S.logit_confidence(lg, y) for lg in shadow_x])
        fn = S.lira_online if cfg.online else S.lira_offline
        record["variant"] = ("online" if cfg.online else "offline") + (
            ", fixed variance" if cfg.fixed_variance else ", per-example variance"
        )
        return fn(phi_t, phi_s, include, fixed_variance=cfg.fixed_variance)
    yz = pop.y[population_z].numpy()
    record["population"] = len(population_z)
    return S.rmia_offline(
        S.true_class_probability(logits_of(target, x), y),
        np.stack([S.true_class_probability(lg, y) for lg in shadow_x]),
        include,
        S.true_class_probability(logits_of(target, pop.x[population_z]), yz),
        np.stack([S.true_class_probability(lg, yz) for lg in shadow_z]),
        a=cfg.rmia_a,
    )
