"""``[defense.dp] mode = "distributed"``: the distributed discrete Gaussian inside secure
aggregation (Kairouz, Liu and Steinke, ICML 2021, arXiv 2102.06387, Algorithm 1), so that the
server need not be trusted to add the noise.

Per round, with users Poisson-sampled at ``q`` and ``m = q N`` the expected cohort (announced
by the server, as central DP's fixed denominator):

1. each client clips its update to L2 norm ``c`` (central DP's :class:`ClipUpdates`, weights
   1) and, inside the secure channel's encoding (:class:`DistributedDiscreteGaussian`, a
   :class:`~privfl.defenses.secagg.channel.RingCodec`): pads it to ``D = 2^ceil(log2 d)``,
   rotates it (Rademacher signs from the round's shared seed, then the fast Walsh-Hadamard
   transform), scales it by ``1 / gamma``, rounds it with conditional randomized rounding
   (``beta``), adds ``N_Z(0, (sigma c / (gamma sqrt(m)))^2)`` discrete Gaussian noise (its
   share: ``m`` shares sum to the central std ``sigma c``) and reduces modulo ``2^bits``;
2. secure aggregation masks and sums the rows modulo its ring; the server gets only the sum;
3. the server maps the sum modulo ``2^bits`` to centred integers, unscales, un-rotates and
   divides by ``m``, and records the round in the ledger
   (:mod:`privfl.defenses.dp.ddgauss_accounting`: the survivors' shares, so dropouts cost
   epsilon).

``gamma`` is chosen per round from ``bits``, the cohort size, ``c``, the local std and ``k``
standard deviations, ``k`` from the configured modular-clipping probability
(:func:`~privfl.defenses.dp.ddgauss.scale_for_bits`); the share of coordinates whose true sum
wrapped around is measured in the simulation (``ddp_wrap_rate``: the server could not see it).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from privfl.accounting import epsilon_of
from privfl.defenses.dp.central import ClipBound, ClipUpdates
from privfl.defenses.dp.ddgauss import (
    conditional_round,
    padded_dim,
    rotate,
    rotation_signs,
    rounded_l2_bound,
    sample_discrete_gaussian,
    scale_for_bits,
    unrotate,
    wrap_stddevs,
)
from privfl.defenses.dp.ddgauss_accounting import dominating_noise_multiplier
from privfl.defenses.secagg.channel import RingCodec, RingInput
from privfl.errors import ConfigError
from privfl.ledger import SERVER, Mechanism, PrivacyEvent, Unit
from privfl.pipeline import Contribution, Slot
from privfl.sampling import PoissonSampler
from privfl.seeding import secure_uniform
from privfl.stages import AggregationResult, RoundContext
from privfl.update import UpdateBatch

if TYPE_CHECKING:
    from privfl.config import Config
    from privfl.defenses.dp.config import DPConfig
    from privfl.pipeline import RunSetup
    from privfl.stages import Channel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DDGaussSetting:
    """The public parameters of the mechanism (what the server announces with the model).

    Attributes:
        clip: ``c``, the L2 clip norm.
        noise_multiplier: ``sigma``: the sum of ``expected_cohort`` shares has std ``sigma c``.
        sample_rate: ``q``, the users' Poisson sampling rate.
        expected_cohort: ``m = q N``: the shares' count and the fixed denominator.
        dim: ``d``, the update's length (padded to ``D`` inside).
        bits: ``b``: rows are residues modulo ``2^b``.
        beta: conditional rounding's ``beta`` in [0, 1).
        wrap_probability: the per-coordinate modular-clipping probability ``k`` is set for.
    """

    clip: float
    noise_multiplier: float
    sample_rate: float
    expected_cohort: float
    dim: int
    bits: int
    beta: float
    wrap_probability: float

    @property
    def local_stddev(self) -> float:
        """One client's noise std (unscaled): ``sigma c / sqrt(m)``."""
        return self.noise_multiplier * self.clip / math.sqrt(self.expected_cohort)

    @property
    def padded(self) -> int:
        """``D``, the rotated length."""
        return padded_dim(self.dim)

    def scale(self, cohort: int) -> float:
        """``1 / gamma`` for a round of ``cohort`` clients (:func:`scale_for_bits`)."""
        return scale_for_bits(
            bits=self.bits,
            clip=self.clip,
            local_stddev=self.local_stddev,
            clients=max(cohort, 1),
            dim=self.padded,
            k=wrap_stddevs(self.wrap_probability),
        )

    def round_noise_multiplier(self, cohort: int, survivors: int) -> float:
        """The noise multiplier the ledger records for a round of ``cohort`` clients of which
        ``survivors`` were summed: the dominating Gaussian of ``survivors`` shares."""
        if self.noise_multiplier == 0:
            return 0.0
        return dominating_noise_multiplier(
            sample_rate=self.sample_rate,
            clip=self.clip,
            scale=self.scale(cohort),
            beta=self.beta,
            dim=self.padded,
            local_stddev=self.local_stddev,
            shares=survivors,
        )

    def event(self, round: int, noise_multiplier: float) -> PrivacyEvent:
        """The ledger event of one released round."""
        return PrivacyEvent(
            noise_multiplier=noise_multiplier,
            sample_rate=self.sample_rate,
            steps=1,
            protects=Unit.USER.value,
            party=SERVER,
            round=round,
            mechanism=Mechanism.DISTRIBUTED_DISCRETE_GAUSSIAN.value,
        )


@dataclass(frozen=True)
class _Private:
    signs: np.ndarray
    scale: float
    integers: np.ndarray  # pre-reduction rows: the simulation's truth, for the wrap rate


class DistributedDiscreteGaussian(RingCodec):
    """The clients' encoding and the server's decoding of the distributed discrete Gaussian
    (module docstring), as the secure-aggregation channel's :class:`RingCodec`.

    Args:
        setting: the mechanism's public parameters.
        secure_rng: the rounding and noise draws from the OS's secure generator (else from
            the seeded streams ``("ddp-client", client, round)``); the rotation's signs are
            public and always seeded (``("ddp-rotation", round)``).
    """

    def __init__(self, setting: DDGaussSetting, *, secure_rng: bool = False) -> None:
        self.setting, self.secure_rng = setting, secure_rng
        self.bits = setting.bits

    def encode(self, batch: UpdateBatch, ctx: RoundContext) -> RingInput:
        s = self.setting
        n = len(batch)
        x = batch.deltas.detach().cpu().numpy().astype(np.float64)
        norms = np.linalg.norm(x, axis=1)
        x *= np.minimum(1.0, s.clip / np.maximum(norms, 1e-300))[:, None]  # the client's clip
        signs = rotation_signs(s.dim, ctx.rng("ddp-rotation").random)
        scale = s.scale(n)
        y = rotate(x, signs) * scale
        bound = rounded_l2_bound(s.clip * scale, s.beta, s.padded)
        uniforms = [self._uniform(ctx, int(c)) for c in batch.client_ids]
        rounded, retries = conditional_round(y, bound, uniforms)
        local = s.local_stddev * scale
        noise = np.stack([sample_discrete_gaussian(local, (s.padded,), u) for u in uniforms])
        integers = rounded + noise
        rows = np.mod(integers, np.int64(1) << s.bits)
        info = {
            "ddp_bits": s.bits,
            "ddp_padded_dim": s.padded,
            "ddp_scale": scale,
            "ddp_local_std": s.local_stddev,
            "ddp_rounding_retries": retries,
        }
        return RingInput(rows=rows, private=_Private(signs, scale, integers), info=info)

    def _uniform(self, ctx: RoundContext, client: int):  # noqa: ANN202 - a Uniform
        if self.secure_rng:
            return secure_uniform
        return ctx.rng("ddp-client", client).random

    def decode(
        self, total: np.ndarray, survivors: np.ndarray, encoded: RingInput, ctx: RoundContext
    ) -> AggregationResult:
        s = self.setting
        private: _Private = encoded.private
        modulus = 1 << s.bits
        t = np.asarray(total).astype(np.uint64) & np.uint64(modulus - 1)
        centred = t.astype(np.int64)
        centred = np.where(centred >= modulus // 2, centred - modulus, centred)
        # Simulation only: the true integer sum, to measure modular wrap-around.
        truth = private.integers[survivors].sum(axis=0)
        wrap_rate = float(np.mean(centred != truth))
        summed = unrotate(centred.astype(np.float64) / private.scale, private.signs, s.dim)
        delta = torch.from_numpy((summed / s.expected_cohort).astype(np.float32))
        cohort, alive = len(survivors), int(survivors.sum())
        z = s.round_noise_multiplier(cohort, alive)
        ctx.ledger.record(s.event(ctx.round, z))
        info: dict[str, Any] = {
            "ddp_shares": alive,
            "ddp_noise_multiplier": z,
            "ddp_noise_multiplier_no_dropout": s.round_noise_multiplier(cohort, cohort),
            "ddp_wrap_rate": wrap_rate,
            "dp_noise_std": math.sqrt(alive) * s.local_stddev / s.expected_cohort,
            "dp_epsilon_rdp": _finite(ctx.ledger.epsilon(party=SERVER, accountant="rdp")),
        }
        return AggregationResult(delta, weight_sum=float(alive), info=info)


@dataclass(frozen=True)
class DistributedPlan:
    """The budget plan of distributed mode: a round of ``k`` sampled clients spends at most
    its event with the fewest survivors secure aggregation releases (``min_survivors(k)``);
    nothing when fewer than 2 are sampled (the round aborts)."""

    setting: DDGaussSetting
    min_survivors: Any  # Callable[[int], int]

    def planned_events(self, round: int, clients: np.ndarray) -> list[PrivacyEvent]:
        """The most this round can record (see the budget interface)."""
        k = len(clients)
        if k < 2:
            return []
        z = self.setting.round_noise_multiplier(k, max(int(self.min_survivors(k)), 2))
        return [self.setting.event(round, z)]


@functools.lru_cache(maxsize=64)
def calibrate_distributed(
    setting: DDGaussSetting,
    *,
    target_epsilon: float,
    delta: float,
    rounds: int,
    cohort: int | None = None,
) -> float:
    """The smallest noise multiplier (to 0.5%) whose ledger epsilon after ``rounds`` rounds of
    ``cohort`` clients without dropouts (default: the expected cohort) is at most
    ``target_epsilon``. Fewer shares mean less noise and more epsilon, so calibrating at the
    smallest cohort a run will draw keeps every round within the target. Cached: a minute or
    more here, and an attacker's shadow runs of the same recipe ask for the same one."""
    cohort = max(int(round(setting.expected_cohort)) if cohort is None else cohort, 2)

    def eps(sigma: float) -> float:
        trial = DDGaussSetting(**{**setting.__dict__, "noise_multiplier": sigma})
        z = trial.round_noise_multiplier(cohort, cohort)
        return epsilon_of(((z, setting.sample_rate, rounds),), delta=delta) if z else math.inf

    lo, hi = 0.05, 0.1
    while eps(hi) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise ConfigError(
                f"defense.dp.target_epsilon = {target_epsilon}: no noise multiplier up to 1e4 "
                "reaches it in distributed mode; raise the target or delta"
            )
    if eps(lo) <= target_epsilon:
        return lo
    while hi / lo > 1.005:
        mid = math.sqrt(lo * hi)
        if eps(mid) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi


def distributed_contribution(
    config: Config, setup: RunSetup, dp: DPConfig, channel: Channel
) -> Contribution:
    """The stages of ``mode = "distributed"``: Poisson cohorts at ``q = clients_per_round /
    clients``, :class:`ClipUpdates` on the clients, the :class:`DistributedDiscreteGaussian`
    codec installed in the secure-aggregation channel, and the budget plan.

    Raises:
        ConfigError: no secure-aggregation channel (the combination rules refuse it first), a
            ring too small for the cohort at the modular-clipping probability, or a target
            epsilon no noise multiplier reaches.
    """
    from privfl.defenses.secagg.channel import SecAggChannel
    from privfl.defenses.secagg.graph import secaggplus_parameters, threshold_for

    if not isinstance(channel, SecAggChannel):
        raise ConfigError("defense.dp.mode = 'distributed' needs [defense.secagg]")
    f, n = config.federation, config.data.clients
    q = f.clients_per_round / n
    if f.sampling != "poisson":
        log.warning(
            "defense.dp.mode = 'distributed': clients are Poisson-sampled at q = %d/%d = %.4g "
            "(what the accounting's amplification assumes) instead of federation.sampling = "
            "'%s'",
            f.clients_per_round,
            n,
            q,
            f.sampling,
        )
    secagg = channel.config
    setting = DDGaussSetting(
        clip=dp.clip,
        noise_multiplier=dp.noise_multiplier if dp.noise_multiplier is not None else 1.0,
        sample_rate=q,
        expected_cohort=q * n,
        dim=setup.spec.dim,
        bits=dp.bits if dp.bits is not None else secagg.bits,
        beta=dp.beta,
        wrap_probability=dp.modular_clip_probability,
    )
    try:
        setting.scale(f.clients_per_round)
    except ValueError as e:
        raise ConfigError(f"defense.dp.bits: {e}; raise defense.dp.bits") from None
    if dp.noise_multiplier is None:
        if dp.target_epsilon is None:
            raise ConfigError("defense.dp: give noise_multiplier or target_epsilon")
        # Poisson cohorts vary and a smaller one adds fewer shares (more epsilon): with seeded
        # cohorts (known before the run) calibrate at the smallest one drawn; with the OS's
        # generator they are unknown, and the expected cohort can overshoot the target by a
        # few percent (max_epsilon is the guard).
        smallest = None
        if not dp.secure_rng:
            planned = PoissonSampler(n, q, config.seed)
            smallest = min(len(planned.sample(r)) for r in range(1, f.rounds + 1))
        sigma = calibrate_distributed(
            setting,
            target_epsilon=dp.target_epsilon,
            delta=dp.delta,
            rounds=f.rounds,
            cohort=smallest,
        )
        log.info(
            "distributed DP: noise multiplier %.4f for epsilon %.3g at delta %.3g over %d rounds "
            "(calibrated at a cohort of %s)",
            sigma,
            dp.target_epsilon,
            dp.delta,
            f.rounds,
            "the expected size" if smallest is None else f"{smallest}, the smallest drawn",
        )
        setting = DDGaussSetting(**{**setting.__dict__, "noise_multiplier": sigma})

    def min_survivors(k: int) -> int:
        """The fewest survivors secure aggregation releases a sum of (its threshold)."""
        if secagg.dropout == 0:
            return k
        if secagg.neighbours == "auto":
            return secaggplus_parameters(k, dropout=secagg.dropout, corruption=secagg.corruption).t
        degree = k - 1 if secagg.neighbours == "all" else min(int(secagg.neighbours), k - 1)
        return threshold_for(degree + 1, secagg.threshold)

    channel.use_codec(DistributedDiscreteGaussian(setting, secure_rng=dp.secure_rng))
    log.info(
        "distributed DP: %d-bit integers, %d rotated coordinates, local noise std %.4g (%g "
        "shares of the central std %.4g), scale %.4g at the expected cohort",
        setting.bits,
        setting.padded,
        setting.local_stddev,
        setting.expected_cohort,
        setting.noise_multiplier * setting.clip,
        setting.scale(f.clients_per_round),
    )
    return Contribution(
        sampler=PoissonSampler(n, q, config.seed, secure=dp.secure_rng),
        client_transforms=((Slot.DP, ClipUpdates(ClipBound(dp.clip))),),
        budget=DistributedPlan(setting, min_survivors),
    )


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else float(x)


__all__ = [
    "DDGaussSetting",
    "DistributedDiscreteGaussian",
    "DistributedPlan",
    "calibrate_distributed",
    "distributed_contribution",
]
