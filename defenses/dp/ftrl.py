"""DP-FTRL (Kairouz, McMahan, Song, Thakkar, Thakurta and Xu, "Practical and Private (Deep)
Learning without Sampling or Shuffling", ICML 2021, arXiv 2103.00039): user-level DP without
amplification by sampling, for cohorts that are fixed or arbitrary rather than Poisson.

Per round ``t``:

1. every client of the cohort clips its update to L2 norm ``C`` and weighs 1
   (:class:`~privfl.defenses.dp.central.ClipUpdates`, as in central DP, so it composes with
   secure aggregation);
2. the server adds the sum of the clipped updates as leaf ``t`` of a binary tree
   (:class:`~privfl.defenses.dp.tree.TreeAggregator`): each node is released with noise
   ``N(0, sigma^2 C^2 I)``, and the noisy prefix sum ``S~_t`` of leaves ``1..t`` is the sum of
   the ``popcount(t)`` nodes of its binary decomposition;
3. the model is ``theta_t = theta_0 + eta S~_t / m`` (FTRL with the quadratic regularizer
   centred at ``theta_0``, Algorithm 1 of the paper with ``1/lambda = eta``; ``m`` =
   ``clients_per_round``, a fixed denominator as in DP-FedAvg), which :class:`TreeNoise` hands
   the server optimizer as the round's delta ``(S~_t - S~_{t-1}) / m``: FedAvg's ``x += eta
   Delta`` then gives ``theta_t`` exactly (no other server optimizer is allowed);
4. with ``restart_every = R``, a new tree starts every ``R`` rounds from the current model
   (the paper's tree restarts, Appendix D.1).

Accounting (Appendix D; tensorflow_privacy's ``tree_aggregation_accountant``): releasing every
node is one Gaussian mechanism on the vector of nodes; a user taking part in rounds
``t_1..t_k`` moves it by at most ``sqrt(D) C``, ``D = sum over released nodes of n_node^2``
(:func:`~privfl.defenses.dp.tree.squared_sensitivity_by_round`), so its RDP at order alpha is
``alpha D / (2 sigma^2)``. The cohorts are a seeded, data-independent function of the config,
so the participation pattern is known before the run and ``D`` is computed on it exactly (not
on the worst pattern a ``min_separation`` allows), maximized over users, per round. The ledger
records, each round, a Gaussian event (sample rate 1, no amplification) whose sensitivity is
the square root of the increase of the worst user's ``D``: Gaussian RDPs add, so the composed
RDP after round ``t`` is exactly the tree's for the nodes released so far.

With ``secure_rng`` the node noise comes from the OS's secure generator instead of the streams
``(seed, "dp-ftrl", level, round)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from privfl.accounting import calibrate_noise, epsilon_of
from privfl.defenses.dp.central import ClipBound, ClipUpdates
from privfl.defenses.dp.tree import TreeAggregator, tree_of_round, worst_squared_sensitivity
from privfl.errors import AggregationError, ConfigError, PrivflError
from privfl.ledger import SERVER, PrivacyEvent, Unit
from privfl.pipeline import Contribution, Slot
from privfl.sampling import ClientSampler
from privfl.seeding import numpy_rng, secure_normal
from privfl.stages import AggregationResult, RoundContext, ServerTransform

if TYPE_CHECKING:
    from privfl.config import Config
    from privfl.defenses.dp.config import DPConfig

log = logging.getLogger(__name__)


class MinSeparationSampler(ClientSampler):
    """The config's cohorts with each client at most once every ``min_separation`` rounds:
    a client of ``inner``'s cohort that took part in one of the ``min_separation - 1`` rounds
    before is swapped for an eligible client drawn from the stream ``(seed,
    "ftrl-separation", round)``, so the cohort keeps its size. Deterministic in the seed
    (cohorts are computed from round 1 and cached), hence data-independent and known before
    the run, as DP-FTRL's accounting needs.

    Args:
        inner: the config's sampler.
        min_separation: rounds between two participations of a client (>= 1).
    """

    def __init__(self, inner: ClientSampler, min_separation: int) -> None:
        super().__init__(inner.num_clients, inner.seed)
        self.inner, self.min_separation = inner, min_separation
        self._cohorts: list[np.ndarray] = []
        self._last = np.full(inner.num_clients, -(10**9), dtype=np.int64)

    def sample(self, round: int) -> np.ndarray:
        while len(self._cohorts) < round:
            r = len(self._cohorts) + 1
            base = self.inner.sample(r)
            eligible = self._last <= r - self.min_separation
            keep = base[eligible[base]]
            pool = np.flatnonzero(eligible)
            pool = pool[~np.isin(pool, keep)]
            need = min(len(base) - len(keep), len(pool))
            fill = numpy_rng(self.seed, "ftrl-separation", r).permutation(pool)[:need]
            cohort = np.sort(np.concatenate([keep, fill])).astype(np.int64)
            self._last[cohort] = r
            self._cohorts.append(cohort)
        return self._cohorts[round - 1].copy()


def participation_matrix(sampler: ClientSampler, rounds: int) -> np.ndarray:
    """``(rounds, clients)`` bool: who the sampler puts in each of rounds ``1..rounds``."""
    p = np.zeros((rounds, sampler.num_clients), dtype=bool)
    for r in range(1, rounds + 1):
        p[r - 1, sampler.sample(r)] = True
    return p


def min_gap(participation: np.ndarray) -> int | None:
    """The fewest rounds between two participations of one client (None: nobody twice)."""
    gaps = [np.diff(np.flatnonzero(col)) for col in participation.T]
    gaps = [int(g.min()) for g in gaps if len(g)]
    return min(gaps) if gaps else None


@dataclass(frozen=True)
class FTRLPlan:
    """The privacy cost of a DP-FTRL run, fixed by its participation pattern.

    Attributes:
        worst: ``(rounds,)``: the largest squared sensitivity, in clip norms squared, of the
            nodes released up to each round (non-decreasing).
        noise_multiplier: sigma, node noise std over the clip norm.
        max_participations: the most rounds one client takes part in.
        min_gap: the fewest rounds between two participations of a client (None: none).
    """

    worst: np.ndarray
    noise_multiplier: float
    max_participations: int
    min_gap: int | None

    def increment(self, round: int) -> float:
        """How much the worst user's squared sensitivity grows in ``round``."""
        w = self.worst
        before = float(w[round - 2]) if round >= 2 else 0.0
        return float(w[round - 1]) - before

    def planned_events(self, round: int, clients: np.ndarray) -> list[PrivacyEvent]:
        """The server event that round ``round`` records whoever takes part
        (:class:`~privfl.pipeline.BudgetPlan`): the tree's nodes released in the round, as a
        Gaussian of sensitivity ``sqrt(increment)``; ``[]`` when no user's sensitivity grows."""
        if round > len(self.worst):
            raise PrivflError(
                f"round {round} is past the {len(self.worst)} rounds DP-FTRL was accounted for"
            )
        inc = self.increment(round)
        if inc <= 0:
            return []
        return [
            PrivacyEvent(
                noise_multiplier=self.noise_multiplier,
                sample_rate=1.0,
                steps=1,
                protects=Unit.USER.value,
                party=SERVER,
                round=round,
                sensitivity=math.sqrt(inc),
            )
        ]


def tree_epsilon(sigma: float, squared_sensitivity: float, delta: float, accountant: str) -> float:
    """Epsilon at ``delta`` of the tree's Gaussian mechanism: noise ``sigma`` clip norms on
    nodes whose vector moves by ``sqrt(squared_sensitivity)`` clip norms (one Gaussian of
    effective noise multiplier ``sigma / sqrt(D)``, sample rate 1; Opacus' accountants)."""
    if squared_sensitivity <= 0:
        return 0.0
    return epsilon_of(
        ((sigma / math.sqrt(squared_sensitivity), 1.0, 1),), delta=delta, accountant=accountant
    )


def calibrate_ftrl(
    target_epsilon: float, delta: float, worst: np.ndarray, accountant: str
) -> float:
    """The smallest sigma (to the search tolerance) whose tree epsilon over the whole run,
    as the ledger composes it (one Gaussian event per round of increment sensitivity), is at
    most ``target_epsilon``: Opacus' bisection on the equivalent single Gaussian of effective
    sigma ``sigma / sqrt(D)``, then checked on the per-round history (PRV discretizes each
    event) and raised by 1% steps while that exceeds the target."""
    total = float(worst[-1]) if len(worst) else 0.0
    if total <= 0:
        raise ConfigError("defense.dp.mode = 'ftrl': no client takes part in any round")
    sigma = math.sqrt(total) * calibrate_noise(
        target_epsilon=target_epsilon,
        delta=delta,
        sample_rate=1.0,
        steps=1,
        accountant=accountant,
    )
    incs = np.diff(np.concatenate([[0.0], worst]))
    for _ in range(50):
        history = _history(sigma, incs)
        if epsilon_of(history, delta=delta, accountant=accountant) <= target_epsilon:
            return sigma
        sigma *= 1.01
    return sigma


def _history(sigma: float, increments: np.ndarray) -> tuple[tuple[float, float, int], ...]:
    """The ledger's merged history of the per-round events (identical sensitivities merged)."""
    steps: dict[float, int] = {}
    for inc in increments[increments > 0]:
        key = sigma / math.sqrt(float(inc))
        steps[key] = steps.get(key, 0) + 1
    return tuple((s, 1.0, t) for s, t in steps.items())


class TreeNoise(ServerTransform):
    """DP-FTRL, server side: the round's sum of clipped updates becomes the next leaf of the
    tree, and the round's delta is the change of the noisy prefix sum over the fixed
    denominator, so that FedAvg's step gives ``theta_t = theta_start + eta S~_t / m``.

    Args:
        bound: the clip bound shared with :class:`ClipUpdates` (fixed: no adaptive clip).
        plan: the run's accounting (:class:`FTRLPlan`); each round records its event.
        denominator: ``m``, the fixed denominator (``clients_per_round``).
        restart_every: rounds per tree (None: one tree).
        rounds: the run's rounds (the size of a tree without restarts).
        secure_rng: draw the node noise from the OS's secure generator.
    """

    releases_without_updates = True

    def __init__(
        self,
        bound: ClipBound,
        *,
        plan: FTRLPlan,
        denominator: float,
        restart_every: int | None,
        rounds: int,
        dim: int,
        secure_rng: bool = False,
    ) -> None:
        self.bound, self.plan, self.denominator = bound, plan, denominator
        self.restart_every, self.secure_rng = restart_every, secure_rng
        self.tree_index = 0
        self.tree = TreeAggregator(dim, restart_every or rounds)

    def apply(self, result: AggregationResult, ctx: RoundContext) -> AggregationResult:
        if result.weight_sum is None:
            raise AggregationError(
                "DP-FTRL needs the weighted mean's weight sum to rebuild the sum of clipped "
                "updates; this channel/aggregator does not report it (AggregationResult."
                "weight_sum)"
            )
        tree, leaf = tree_of_round(ctx.round, self.restart_every)
        if tree != self.tree_index:
            self.tree.reset()
            self.tree_index = tree
        if self.tree.leaves != leaf - 1:
            raise PrivflError(
                f"DP-FTRL: round {ctx.round} is leaf {leaf} of tree {tree}, but the tree holds "
                f"{self.tree.leaves} leaves (a round skipped the tree)"
            )
        total = result.delta.to(torch.float64) * result.weight_sum
        std = self.plan.noise_multiplier * self.bound.clip
        before = self.tree.prefix()
        after = self.tree.add(total, self._noise(ctx, std))
        delta = ((after - before) / self.denominator).to(torch.float32)
        for event in self.plan.planned_events(ctx.round, ctx.sampled):
            ctx.ledger.record(event)
        info: dict[str, Any] = {
            "dp_ftrl_tree": tree,
            "dp_ftrl_leaf": leaf,
            "dp_ftrl_prefix_noise_std": std * math.sqrt(bin(leaf).count("1")) / self.denominator,
            "dp_ftrl_worst_sensitivity_sq": float(self.plan.worst[ctx.round - 1]),
        }
        if ctx.ledger.events:
            eps = ctx.ledger.epsilon(party=SERVER, accountant="rdp")
            info["dp_epsilon_rdp"] = None if math.isinf(eps) else float(eps)
        return replace(result, delta=delta, info={**result.info, **info})

    def _noise(self, ctx: RoundContext, std: float) -> Callable[[int], torch.Tensor]:
        dim = ctx.spec.dim

        def draw(level: int) -> torch.Tensor:
            if std == 0:
                return torch.zeros(dim, dtype=torch.float64)
            if self.secure_rng:
                return std * secure_normal(dim)
            gen = ctx.torch_rng("dp-ftrl", level)
            return std * torch.randn(dim, generator=gen, dtype=torch.float64)

        return draw

    def state_dict(self) -> dict[str, Any]:
        return {"tree_index": self.tree_index, "tree": self.tree.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tree_index = int(state["tree_index"])
        self.tree.load_state_dict(state["tree"])


def ftrl_stages(
    config: Config,
    dp: DPConfig,
    sampler: ClientSampler,
    *,
    dim: int,
    slack: Callable[[int], float] | None,
) -> Contribution:
    """The stages of ``mode = "ftrl"``: the sampler accounted on (the config's, or with
    ``min_separation > 1`` :class:`MinSeparationSampler` around it), client clipping, the
    tree noise, and the budget plan.

    Args:
        dim: the model's parameter count.
        slack: the channel's encoding slack (central DP's), or None on the plain channel.
    """
    f = config.federation
    rounds = f.rounds
    if dp.accountant == "gdp":
        raise ConfigError(
            "defense.dp.mode = 'ftrl' cannot use accountant = 'gdp': Opacus' GDP accountant "
            "composes identical steps only, and the tree's rounds release nodes of different "
            "sensitivities (and GDP is an approximation, not a bound); use 'rdp' or 'prv'"
        )
    if dp.min_separation > 1:
        if config.data.clients < dp.min_separation * f.clients_per_round:
            raise ConfigError(
                f"defense.dp.min_separation = {dp.min_separation} needs at least "
                f"min_separation x clients_per_round = {dp.min_separation * f.clients_per_round} "
                f"clients (data.clients = {config.data.clients}) to keep the cohort size; "
                "lower min_separation or clients_per_round"
            )
        sampler = MinSeparationSampler(sampler, dp.min_separation)
    p = participation_matrix(sampler, rounds)
    worst = worst_squared_sensitivity(p, dp.restart_every)
    sigma = dp.noise_multiplier
    if sigma is None:
        if dp.target_epsilon is None:
            raise ConfigError("defense.dp: give noise_multiplier or target_epsilon")
        sigma = calibrate_ftrl(dp.target_epsilon, dp.delta, worst, dp.accountant)
        log.info(
            "DP-FTRL: noise multiplier %.4f for epsilon %.3g at delta %.3g (tree squared "
            "sensitivity %g over %d rounds, %s)",
            sigma,
            dp.target_epsilon,
            dp.delta,
            worst[-1],
            rounds,
            dp.accountant,
        )
    plan = FTRLPlan(
        worst=worst,
        noise_multiplier=float(sigma),
        max_participations=int(p.sum(axis=0).max(initial=0)),
        min_gap=min_gap(p),
    )
    log.info(
        "DP-FTRL: no amplification by sampling; the epsilon assumes this run's seeded cohorts "
        "(a client takes part in at most %d of %d rounds, at least %s rounds apart; worst "
        "squared sensitivity %g clip^2)",
        plan.max_participations,
        rounds,
        plan.min_gap,
        worst[-1] if len(worst) else 0.0,
    )
    bound = ClipBound(dp.clip)
    noise = TreeNoise(
        bound,
        plan=plan,
        denominator=float(f.clients_per_round),
        restart_every=dp.restart_every,
        rounds=rounds,
        dim=dim,
        secure_rng=dp.secure_rng,
    )
    return Contribution(
        sampler=sampler,
        client_transforms=((Slot.DP, ClipUpdates(bound, slack)),),
        server_transforms=(noise,),
        budget=plan,
    )


__all__ = [
    "FTRLPlan",
    "MinSeparationSampler",
    "TreeNoise",
    "calibrate_ftrl",
    "ftrl_stages",
    "min_gap",
    "participation_matrix",
    "tree_epsilon",
]
