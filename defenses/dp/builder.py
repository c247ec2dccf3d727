"""``[defense.dp]`` -> the stages of a round (called from :func:`privfl.plan.build_stages`).

- ``sample``: the trainer becomes :class:`DPSGDTrainer`; :class:`RecordExampleLevelSpending`
  writes each client's events.
- ``central``: Poisson client sampling at ``q = clients_per_round / clients`` (what the
  accounting of DP-FedAvg assumes; it replaces ``federation.sampling`` and says so in the log
  and the report), :class:`ClipUpdates` on the clients, :class:`GaussianSumNoise` first among
  the server transforms.
- ``local``: :class:`LocalGaussian` on the clients.
- ``ftrl``: DP-FTRL (:mod:`privfl.defenses.dp.ftrl`): the config's cohorts (with
  ``min_separation``), :class:`ClipUpdates` on the clients, tree-aggregation noise at the
  server, accounted on the seeded participation pattern (no amplification by sampling).

``secure_rng``: the noise (all modes), central DP's Poisson cohorts and DP-SGD's lots come from
the OS's secure generator; without it they come from streams seeded by the config's seed, and
a warning says once per run that anyone holding ``config.toml`` can strip the noise. The
cohorts of local DP and DP-SGD stay seeded either way: the server sees who sends, and their
guarantees do not rest on the cohort being secret (central DP's amplification does).

Central DP over a channel that encodes updates (secure aggregation, HE) clips to ``S`` minus
the channel's encoding slack (:mod:`privfl.defenses.dp.encoding`), and a slack as large as
``S`` at the expected cohort is refused; this builder runs after the channel is chosen.

A ``target_epsilon`` is turned into a noise multiplier here, over the most steps a party takes
in this run: every round for the server (central); for a client (local, sample), the most
rounds any client is sampled in (the cohorts are a data-independent, seeded function of the
config, so they are known before the run) times its local steps, at the worst-off client's
(q, steps). So the target holds for every party of the run; the report shows what each party
actually spent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from privfl.accounting import calibrate_noise, epsilon_of
from privfl.client import LocalTraining
from privfl.defenses.dp.central import ClipBound, ClipUpdates, GaussianSumNoise
from privfl.defenses.dp.config import DPConfig, DPMode
from privfl.defenses.dp.dpsgd import (
    DPSGDTrainer,
    ExampleLevelBudget,
    RecordExampleLevelSpending,
    SecureDPSGDTrainer,
    check_model,
    client_schedule,
)
from privfl.defenses.dp.encoding import encoding_slack
from privfl.defenses.dp.local import LOCAL_SENSITIVITY, LocalGaussian
from privfl.defenses.dp.threat import DPThreat
from privfl.errors import ConfigError
from privfl.ledger import SERVER, PrivacyEvent, Unit, client_party
from privfl.pipeline import Contribution, Slot
from privfl.sampling import ClientSampler, PoissonSampler

if TYPE_CHECKING:
    from privfl.config import Config
    from privfl.pipeline import RunSetup
    from privfl.stages import Channel

log = logging.getLogger(__name__)


def differential_privacy_stages(
    config: Config, setup: RunSetup, *, channel: Channel, sampler: ClientSampler
) -> Contribution:
    """The stages of ``config.defense.dp`` (and the ledger configured).

    Args:
        channel: the run's channel (central DP clips to S minus its encoding slack).
        sampler: the config's client sampler (the cohorts a target epsilon is calibrated
            over, for local DP and DP-SGD).
    """
    dp = config.defense.dp
    if dp is None:
        return Contribution()
    setup.ledger.configure(delta=dp.delta, accountant=dp.accountant)
    if not dp.secure_rng:
        log.warning(
            "defense.dp.secure_rng = false: the DP noise%s is drawn from streams seeded by "
            "seed = %d, which config.toml records; anyone holding config.toml can regenerate "
            "the noise and subtract it, so the privacy guarantee holds only against someone "
            "without it. Fine for research (the run is reproducible); set "
            "defense.dp.secure_rng = true for a release",
            _SEEDED_EXTRAS[DPMode(dp.mode)],
            config.seed,
        )
    if dp.max_epsilon is not None and dp.target_epsilon is not None:
        # Allowed: the target calibrates sigma over the configured rounds, max_epsilon guards.
        # A target above the budget means the run will stop before its last round: say so.
        if dp.target_epsilon > dp.max_epsilon:
            log.warning(
                "defense.dp.target_epsilon = %g > max_epsilon = %g: the noise is calibrated to "
                "reach %g after all %d rounds, so the run will stop at the budget, before its "
                "last round",
                dp.target_epsilon,
                dp.max_epsilon,
                dp.target_epsilon,
                config.federation.rounds,
            )
    contribution = _BUILDERS[DPMode(dp.mode)](config, setup, dp, channel, sampler)
    return replace(contribution, threat=DPThreat(dp.mode))


#: What else the seed gives away, by mode.
_SEEDED_EXTRAS: dict[DPMode, str] = {
    DPMode.SAMPLE: " (and DP-SGD's Poisson lots)",
    DPMode.CENTRAL: " (and the Poisson cohorts)",
    DPMode.LOCAL: "",
    DPMode.DISTRIBUTED: "",
    DPMode.FTRL: "",
}


def client_sample_rate(config: Config) -> float:
    """q = clients_per_round / clients: DP-FedAvg's Poisson client sampling rate."""
    return config.federation.clients_per_round / config.data.clients


def _central(
    config: Config, setup: RunSetup, dp: DPConfig, channel: Channel, sampler: ClientSampler
) -> Contribution:
    f, n = config.federation, config.data.clients
    q = client_sample_rate(config)
    if f.sampling != "poisson":
        log.warning(
            "defense.dp.mode = 'central': clients are Poisson-sampled at q = %d/%d = %.4g "
            "(the sampling DP-FedAvg's accounting assumes), instead of federation.sampling = "
            "'%s'; a round's cohort size varies around %d",
            f.clients_per_round,
            n,
            q,
            f.sampling,
            f.clients_per_round,
        )
    poisson = PoissonSampler(n, q, config.seed, secure=dp.secure_rng)
    sigma = dp.noise_multiplier
    if sigma is None:
        sigma = _calibrate(dp, q, f.rounds, "central DP-FedAvg (the server)")
    count_sigma = dp.count_noise_multiplier or f.clients_per_round / 20
    bound = ClipBound(dp.clip)  # S: the server adapts it, the next round's clients clip to it
    clip = ClipUpdates(bound, _channel_slack(channel, config, setup, dp))
    noise = GaussianSumNoise(
        bound,
        noise_multiplier=sigma,
        sample_rate=q,
        num_clients=n,
        adaptive=dp.adaptive,
        target_quantile=dp.target_quantile,
        clip_lr=dp.clip_lr,
        count_noise_multiplier=count_sigma,
        secure_rng=dp.secure_rng,
    )
    _warn_delta(dp.delta, n, "users (clients)")
    return Contribution(
        sampler=poisson,
        client_transforms=((Slot.DP, clip),),
        server_transforms=(noise,),
        budget=ServerBudget(noise),
    )


@dataclass(frozen=True)
class ServerBudget:
    """What a central DP-FedAvg round would spend (a :class:`~privfl.pipeline.BudgetPlan`):
    the server's one step of the subsampled Gaussian at (sigma, q), whoever is sampled (the
    noise is released even over an empty Poisson cohort), read from the noise stage itself,
    so it is what :class:`GaussianSumNoise` records."""

    noise: GaussianSumNoise

    def planned_events(self, round: int, clients: np.ndarray) -> list[PrivacyEvent]:
        """The server's event of ``round`` (whatever ``clients`` is)."""
        return [
            PrivacyEvent(
                noise_multiplier=self.noise.noise_multiplier,
                sample_rate=self.noise.sample_rate,
                steps=1,
                protects=Unit.USER.value,
                party=SERVER,
                round=round,
            )
        ]


@dataclass(frozen=True)
class LocalBudget:
    """What a local-DP round would spend (a :class:`~privfl.pipeline.BudgetPlan`): one
    Gaussian release (q = 1, sensitivity 2 clip norms) per real client of the cohort, its own
    party, as :class:`LocalGaussian` records."""

    noise: LocalGaussian
    num_clients: int

    def planned_events(self, round: int, clients: np.ndarray) -> list[PrivacyEvent]:
        """One event per client of ``clients`` (canary ids past the real clients: none)."""
        return [
            PrivacyEvent(
                noise_multiplier=self.noise.noise_multiplier,
                sample_rate=1.0,
                steps=1,
                protects=Unit.USER.value,
                party=client_party(c),
                round=round,
                sensitivity=LOCAL_SENSITIVITY,
            )
            for c in map(int, clients)
            if c < self.num_clients
        ]


def _channel_slack(
    channel: Channel, config: Config, setup: RunSetup, dp: DPConfig
) -> Callable[[int], float] | None:
    """The channel's encoding slack as a function of the cohort size, or None when the
    channel sums the clipped updates as they are. Refuses a slack of S or more at the
    expected cohort, and warns when it takes more than a tenth of S."""
    coords, scale = _encoded_shape(config, setup.spec.dim)
    slack = partial(encoding_slack, channel, dim=coords, scale=scale)
    expected = config.federation.clients_per_round
    at = slack(expected)
    if at == 0:
        return None
    name = channel.name
    if at >= dp.clip:
        raise ConfigError(
            f"defense.dp.mode = {dp.mode!r} over defense.{name}: the channel's encoding "
            f"(fixed-point rounding, CKKS noise) can move a decoded update by up to {at:.4g} "
            f"in L2 norm at the expected cohort of {expected} ({coords} values), at least "
            f"defense.dp.clip = {dp.clip:g}, the bound the noise is calibrated to; "
            f"{_FINER[name]}, set defense.{name}.max_weight = 1 (every weight is 1 under "
            "central DP), or raise defense.dp.clip"
        )
    log.log(
        logging.WARNING if at > 0.1 * dp.clip else logging.INFO,
        "defense.dp.mode = %r over defense.%s: updates are clipped to %.4g = clip - "
        "%.4g, the most the channel's encoding can add to a decoded update's norm at the "
        "expected cohort of %d, so that it stays within clip = %g",
        dp.mode,
        name,
        dp.clip - at,
        at,
        expected,
        dp.clip,
    )
    return slack


def _encoded_shape(config: Config, dim: int) -> tuple[int, float]:
    """``(values, scale)``: how many values of an update the channel encodes, and the factor
    the server multiplies them by after decoding. Shared-seed random-k without error feedback
    sends its ``k`` shared coordinates unscaled and the server restores the ``d / k`` scaling
    (privfl.compression.transform), which scales the rounding error too; otherwise ``(d, 1)``.
    """
    from privfl.compression.config import CompressionMethod
    from privfl.compression.sparse import keep_count

    c = config.compression
    if c is None or CompressionMethod(c.method) is not CompressionMethod.RANDK or not c.shared_seed:
        return dim, 1.0
    k = keep_count(dim, c.ratio)
    return k, (1.0 if c.uses_error_feedback else dim / k)


#: How to make each channel's encoding finer.
_FINER = {
    "secagg": "raise defense.secagg.bits",
    "he": "raise defense.he.scale_bits (CKKS) or plain_modulus_bits (BFV, then also)",
}


def participations(sampler: ClientSampler, rounds: int) -> dict[int, int]:
    """How many of rounds 1..rounds each client is sampled in (the seeded cohorts; clients
    never sampled are absent)."""
    counts: dict[int, int] = {}
    for r in range(1, rounds + 1):
        for c in sampler.sample(r).tolist():
            counts[c] = counts.get(c, 0) + 1
    return counts


def _local(
    config: Config, setup: RunSetup, dp: DPConfig, channel: Channel, sampler: ClientSampler
) -> Contribution:
    sigma = dp.noise_multiplier
    if sigma is None:
        # The accountant sees sigma / 2 (sensitivity 2S): calibrate that, then scale back.
        counts = participations(sampler, config.federation.rounds)
        rounds = max(counts.values(), default=1)
        sigma = LOCAL_SENSITIVITY * _calibrate(dp, 1.0, rounds, "local DP (each client)")
    noise = LocalGaussian(clip=dp.clip, noise_multiplier=sigma, secure_rng=dp.secure_rng)
    _warn_delta(dp.delta, config.data.clients, "users (clients)")
    return Contribution(
        client_transforms=((Slot.DP, noise),), budget=LocalBudget(noise, config.data.clients)
    )


def _sample(
    config: Config, setup: RunSetup, dp: DPConfig, channel: Channel, sampler: ClientSampler
) -> Contribution:
    check_model(setup.make_model())
    training = LocalTraining.from_config(config)
    sizes = setup.data.partition.sizes()
    sigma = dp.noise_multiplier
    if sigma is None:
        counts = participations(sampler, config.federation.rounds)
        pairs = set()
        for c, k in counts.items():
            plan = client_schedule(int(sizes[c]), training)
            pairs.add((plan.sample_rate, plan.steps * k))
        sigma = _calibrate_clients(dp, pairs)
    trainer = SecureDPSGDTrainer if dp.secure_rng else DPSGDTrainer
    dpsgd = trainer(
        training, clip=dp.clip, noise_multiplier=sigma, grad_sample_mode=dp.grad_sample_mode
    )
    _warn_delta(dp.delta, int(np.min(sizes)), "examples on the smallest client")
    return Contribution(
        trainer=dpsgd,
        client_transforms=((Slot.ACCOUNTING, RecordExampleLevelSpending()),),
        budget=ExampleLevelBudget(sizes, training, sigma),
    )


def _target(dp: DPConfig) -> float:
    if dp.target_epsilon is None:
        raise ConfigError("defense.dp: give noise_multiplier or target_epsilon")
    return dp.target_epsilon


def _calibrate(dp: DPConfig, q: float, steps: int, who: str) -> float:
    sigma = calibrate_noise(
        target_epsilon=_target(dp),
        delta=dp.delta,
        sample_rate=q,
        steps=steps,
        accountant=dp.accountant,
    )
    log.info(
        "%s: noise multiplier %.4f for epsilon %.3g at delta %.3g (q = %.4g, %d steps, %s)",
        who,
        sigma,
        dp.target_epsilon,
        dp.delta,
        q,
        steps,
        dp.accountant,
    )
    return sigma


def _calibrate_clients(dp: DPConfig, schedule: set[tuple[float, int]]) -> float:
    """One sigma for every DP-SGD client, calibrated on the client whose (q, total steps)
    spends the most; re-checked on all distinct pairs (RDP is cached per (sigma, q))."""
    target = _target(dp)
    pairs = sorted(schedule) or [(1.0, 1)]

    def worst(sigma: float) -> tuple[float, tuple[float, int]]:
        eps = {p: epsilon_of(((sigma, p[0], p[1]),), delta=dp.delta) for p in pairs}
        pair = max(eps, key=lambda p: eps[p])
        return eps[pair], pair

    _, pair = worst(1.0)
    for _ in range(len(pairs)):
        sigma = _calibrate(dp, pair[0], pair[1], f"DP-SGD clients (q = {pair[0]:.4g})")
        if dp.accountant != "rdp":
            return sigma  # PRV/GDP per pair is too slow to re-check; RDP orders the clients
        eps, new = worst(sigma)
        if eps <= target or new == pair:
            return sigma
        pair = new
    return sigma


def _ftrl(
    config: Config, setup: RunSetup, dp: DPConfig, channel: Channel, sampler: ClientSampler
) -> Contribution:
    """DP-FTRL (Kairouz et al. 2021; :mod:`privfl.defenses.dp.ftrl`): the config's cohorts
    (no Poisson sampling), clipping as in central DP (to S minus the channel's encoding
    slack), tree-aggregation noise at the server, accounted on the participation pattern."""
    from privfl.defenses.dp.ftrl import ftrl_stages

    slack = _channel_slack(channel, config, setup, dp)
    _warn_delta(dp.delta, config.data.clients, "users (clients)")
    return ftrl_stages(config, dp, sampler, dim=setup.spec.dim, slack=slack)


def _distributed(
    config: Config, setup: RunSetup, dp: DPConfig, channel: Channel, sampler: ClientSampler
) -> Contribution:
    # The distributed discrete Gaussian over secure aggregation (defenses/dp/distributed.py).
    from privfl.defenses.dp.distributed import distributed_contribution

    _warn_delta(dp.delta, config.data.clients, "users (clients)")
    return distributed_contribution(config, setup, dp, channel)


def _not_built(
    config: Config, setup: RunSetup, dp: DPConfig, channel: Channel, sampler: ClientSampler
) -> Contribution:
    raise ConfigError(f"defense.dp.mode = {dp.mode!r} is not built yet")


def _warn_delta(delta: float, units: int, what: str) -> None:
    if delta >= 1 / units:
        log.warning(
            "defense.dp.delta = %g is >= 1/N = 1/%d (%s): a mechanism that publishes one unit's "
            "data outright would satisfy it; choose delta well below 1/N",
            delta,
            units,
            what,
        )


_BUILDERS: dict[
    DPMode, Callable[[Config, RunSetup, DPConfig, Channel, ClientSampler], Contribution]
] = {
    DPMode.SAMPLE: _sample,
    DPMode.CENTRAL: _central,
    DPMode.LOCAL: _local,
    DPMode.DISTRIBUTED: _distributed,
    DPMode.FTRL: _ftrl,
}


__all__ = ["client_sample_rate", "differential_privacy_stages", "participations"]
