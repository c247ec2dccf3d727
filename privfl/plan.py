"""From a config to the stages of a round (which defenses and attacks are active).

Declarative: each config section's builder returns what it contributes
(:class:`~privfl.pipeline.Contribution`: client transforms in explicit slots, a channel, an
aggregator, server transforms, observers, finishers) and never sees or changes another's;
:func:`assemble` orders them. :func:`section_stages` lists every section, so the whole
pipeline of a config reads in one place; which sections may combine is decided before, at
config time (:mod:`privfl.combinations`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from privfl.aggregation import WeightedMean
from privfl.attacks.inversion.build import create_inversion_observer
from privfl.audit.canary import canary_audit_stages
from privfl.audit.one_run import CanarySet, insert_canaries, one_run_audit_stages
from privfl.channel import PlainChannel
from privfl.client import LocalTrainer, LocalTraining, SGDTrainer
from privfl.compression.transform import compression_stages
from privfl.config import Config
from privfl.data.federated import FederatedData
from privfl.defenses.dp.builder import differential_privacy_stages
from privfl.defenses.he import HEChannel, create_he_channel
from privfl.defenses.secagg.channel import create_secagg_channel
from privfl.errors import ConfigError
from privfl.heterogeneity.builder import heterogeneity_stages
from privfl.ledger import Ledger
from privfl.pipeline import BudgetPlan, Contribution, EndAttack, Finisher, RunSetup
from privfl.sampling import ClientSampler, PoissonSampler, UniformSampler
from privfl.stages import (
    Aggregator,
    Channel,
    ClientTransform,
    Evaluator,
    Observer,
    Scorer,
    ServerTransform,
)
from privfl.threat import ThreatModel


@dataclass
class Stages:
    """The configured pipeline of a round, in order.

    Attributes:
        trainer: local training on each client (plain SGD; DP-SGD; a malicious client's).
        sampler: who takes part in each round.
        client_transforms .. observers: the stages of the round (docs/design.md), in order.
        evaluators: extra figures on the global model at evaluation rounds.
        scorers: figures on each finished round from knowledge the server lacks (who
            truly attacked), added to its metrics.
        end_attacks: attacks on the finished run; their records join ``attacks.json``.
        finishers: called once at the end of a run (e.g. to write a privacy report).
        threats: ``(section, threat model)`` of every active attack and defense, in section
            order (written into ``threats.json``).
        budget: what a round would spend, asked before it runs (the DP mode's
            :class:`~privfl.pipeline.BudgetPlan`; None without DP).
    """

    trainer: LocalTrainer
    sampler: ClientSampler
    client_transforms: list[ClientTransform] = field(default_factory=list)
    channel: Channel = field(default_factory=PlainChannel)
    aggregator: Aggregator = field(default_factory=WeightedMean)
    server_transforms: list[ServerTransform] = field(default_factory=list)
    observers: list[Observer] = field(default_factory=list)
    evaluators: list[Evaluator] = field(default_factory=list)
    scorers: list[Scorer] = field(default_factory=list)
    end_attacks: list[EndAttack] = field(default_factory=list)
    finishers: list[Finisher] = field(default_factory=list)
    threats: list[tuple[str, ThreatModel]] = field(default_factory=list)
    budget: BudgetPlan | None = None

    def named(self) -> dict[str, object]:
        """Every stateful stage under a stable name (for checkpoints)."""
        out: dict[str, object] = {"channel": self.channel, "aggregator": self.aggregator}
        for kind, items in (
            ("client", self.client_transforms),
            ("server", self.server_transforms),
            ("observer", self.observers),
            ("evaluator", self.evaluators),
            ("scorer", self.scorers),
        ):
            for i, s in enumerate(items):
                out[f"{kind}{i}:{type(s).__name__}"] = s
        return out


def local_training_of(config: Config) -> LocalTraining:
    """The clients' local training settings of a config (:meth:`LocalTraining.from_config`)."""
    return LocalTraining.from_config(config)


def create_sampler(config: Config) -> ClientSampler:
    """Uniform sampling of ``clients_per_round`` or Poisson sampling at ``q = m / N``."""
    f, n = config.federation, config.data.clients
    if f.sampling == "poisson":
        return PoissonSampler(n, f.clients_per_round / n, config.seed)
    return UniformSampler(n, f.clients_per_round, config.seed)


def prepare_data(config: Config, data: FederatedData) -> tuple[FederatedData, CanarySet | None]:
    """The run's data as its sections need it before anything is built: with ``[audit]
    method = "one_run"``, the canaries inserted (:func:`privfl.audit.one_run.insert_canaries`);
    otherwise ``data`` unchanged."""
    audit = config.audit
    if audit is None or audit.method != "one_run":
        return data, None
    return insert_canaries(data, audit, config.seed)


def section_stages(config: Config, setup: RunSetup) -> list[tuple[str, Contribution]]:
    """What each config section contributes, in section order (the order finishers, scorers
    and other appended stages run in). Only two builders take what others chose, and say so
    by argument: DP takes the channel (central DP clips to S minus its encoding slack) and
    the config's sampler; poisoning takes the aggregator (its detection figures)."""
    one_run = config.audit is not None and config.audit.method == "one_run"
    audit = one_run_audit_stages(config, setup) if one_run else canary_audit_stages(config, setup)
    parts: list[tuple[str, Contribution]] = [("audit", audit)]
    if config.federation.server_optimizer == "qffl":  # an aggregation rule (privfl.fairness)
        from privfl.fairness.qffl import qffl_stages

        parts.append(("federation.server_optimizer", qffl_stages(config, setup)))
    d = config.defense
    if d.robust is not None:
        from privfl.defenses.robust import create_robust_aggregator
        from privfl.defenses.robust.threat import RobustThreat

        robust = create_robust_aggregator(d.robust, setup)
        threat = RobustThreat(d.robust.rule, d.robust.f)
        parts.append(("defense.robust", Contribution(aggregator=robust, threat=threat)))
    if d.secagg is not None:
        secagg = create_secagg_channel(d.secagg, setup)
        parts.append(("defense.secagg", Contribution(channel=secagg, threat=secagg.threat_model)))
    if d.he is not None:
        he = create_he_channel(d.he, setup)
        parts.append(("defense.he", Contribution(channel=he, threat=he.threat_model)))
    channel = _one(parts, "channel") or PlainChannel()
    dp = differential_privacy_stages(config, setup, channel=channel, sampler=create_sampler(config))
    parts.append(("defense.dp", dp))
    parts.append(("compression", compression_stages(config, setup)))
    parts.append(("federation.heterogeneity", heterogeneity_stages(config, setup)))
    if config.attack.poisoning is not None:
        from privfl.attacks.poisoning import poisoning_stages

        aggregator = _one(parts, "aggregator") or WeightedMean()
        poisoning = poisoning_stages(config.attack.poisoning, setup, aggregator=aggregator)
        parts.append(("attack.poisoning", poisoning))
    if config.attack.inversion is not None:  # observes the server's view, after every channel
        training = LocalTraining.from_config(config)
        inversion = create_inversion_observer(config.attack.inversion, config, setup, training)
        parts.append(
            (
                "attack.inversion",
                Contribution(
                    observers=(inversion,), finishers=(inversion.finish,), threat=inversion.threat
                ),
            )
        )
    if config.incentives is not None:  # values each round's clients from the server's view
        from privfl.incentives.build import incentives_stages

        threat = dict(parts).get("attack.poisoning", Contribution()).threat
        malicious = frozenset(getattr(threat, "malicious", np.zeros(0, dtype=int)).tolist())
        incentives = incentives_stages(config.incentives, config, setup, malicious=malicious)
        parts.append(("incentives", incentives))
    if config.attack.membership is not None:  # the released model, or one client's update
        from privfl.attacks.membership.build import membership_stages

        membership = membership_stages(
            config.attack.membership,
            config,
            setup,
            honest_trainer=lambda: honest_trainer(config, setup),
        )
        parts.append(("attack.membership", membership))
    return parts


def honest_trainer(config: Config, setup: RunSetup) -> LocalTrainer:
    """The local training an honest client of ``config`` runs (DP-SGD under ``mode =
    "sample"``, heterogeneous steps, plain SGD otherwise), as an attacker who knows the
    recipe replays it: built from the config without its attacks, audit and secure channel,
    on a ledger of its own, so that building it spends nothing and poisons nothing."""
    recipe = config.model_copy(
        update={
            "attack": type(config.attack)(),
            "audit": None,
            "incentives": None,
            "defense": config.defense.without_secure_channels(),
        }
    )
    aside = replace(setup, config=recipe, ledger=Ledger(), spawn=None, canaries=None)
    return assemble(recipe, section_stages(recipe, aside)).trainer


def assemble(config: Config, parts: list[tuple[str, Contribution]]) -> Stages:
    """One :class:`Stages` from the sections' contributions: client transforms ordered by
    :class:`~privfl.pipeline.Slot` (ties in section order), at most one section replacing
    each of the trainer, sampler, channel and aggregator, trainer wrappers applied in section
    order, and the remaining stages appended in section order."""
    trainer = _one(parts, "trainer") or SGDTrainer(LocalTraining.from_config(config))
    for _, part in parts:
        if part.wrap_trainer is not None:
            trainer = part.wrap_trainer(trainer)
    slotted = [t for _, part in parts for t in part.client_transforms]
    aggregator = _one(parts, "aggregator") or WeightedMean()
    channel = _one(parts, "channel") or PlainChannel()
    if isinstance(channel, HEChannel):
        HEChannel.check_aggregator(aggregator)  # a runtime guard; combinations.py refuses it
    return Stages(
        trainer=trainer,
        sampler=_one(parts, "sampler") or create_sampler(config),
        client_transforms=[t for _, t in sorted(slotted, key=lambda st: st[0])],
        channel=channel,
        aggregator=aggregator,
        server_transforms=[t for _, p in parts for t in p.server_transforms],
        observers=[o for _, p in parts for o in p.observers],
        evaluators=[e for _, p in parts for e in p.evaluators],
        scorers=[s for _, p in parts for s in p.scorers],
        end_attacks=[a for _, p in parts for a in p.end_attacks],
        finishers=[f for _, p in parts for f in p.finishers],
        threats=[(name, p.threat) for name, p in parts if p.threat is not None],
        budget=_one(parts, "budget"),
    )


def build_stages(config: Config, setup: RunSetup) -> Stages:
    """The stages ``config`` asks for; with no defense or attack, plain FedAvg."""
    return assemble(config, section_stages(config, setup))


def _one(parts: list[tuple[str, Contribution]], role: str) -> Any:
    """The one section's replacement of ``role`` (None when no section gives one); two
    sections giving one is a config error (``privfl.combinations`` refuses such pairs
    first)."""
    given = [(name, getattr(part, role)) for name, part in parts if getattr(part, role) is not None]
    if len(given) > 1:
        names = " and ".join(name for name, _ in given)
        raise ConfigError(f"{names} each replace the {role}; choose one")
    return given[0][1] if given else None


__all__ = [
    "Finisher",
    "RunSetup",
    "Stages",
    "assemble",
    "build_stages",
    "create_sampler",
    "local_training_of",
    "section_stages",
]
