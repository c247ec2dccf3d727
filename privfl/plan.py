"""From a config to the stages of a round (which defenses and attacks are active).

Each defense or attack issue adds its builder here, so the whole pipeline of a config can be
read in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from privfl.aggregation import WeightedMean
from privfl.attacks.inversion.build import create_inversion_observer
from privfl.audit.canary import add_canary_audit
from privfl.channel import PlainChannel
from privfl.client import LocalTrainer, LocalTraining, SGDTrainer
from privfl.compression.transform import add_compression
from privfl.config import Config
from privfl.defenses.dp.builder import add_differential_privacy
from privfl.defenses.he import HEChannel, create_he_channel
from privfl.defenses.secagg.channel import create_secagg_channel
from privfl.heterogeneity.builder import add_heterogeneity
from privfl.pipeline import Finisher, RunSetup
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


@dataclass
class Stages:
    """The configured pipeline of a round, in order.

    Attributes:
        trainer: local training on each client (plain SGD; DP-SGD; a malicious client's).
        sampler: who takes part in each round.
        client_transforms .. observers: the stages of DESIGN.md's round, in order.
        evaluators: extra figures on the global model at evaluation rounds.
        scorers: figures on each finished round from knowledge the server lacks (who
            truly attacked), added to its metrics.
        finishers: called once at the end of a run (e.g. to write a privacy report).
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
    finishers: list[Finisher] = field(default_factory=list)

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


def build_stages(config: Config, setup: RunSetup) -> Stages:
    """The stages ``config`` asks for; with no defense or attack, plain FedAvg."""
    training = local_training_of(config)
    stages = Stages(trainer=SGDTrainer(training), sampler=create_sampler(config))
    add_canary_audit(stages, config, setup)  # [audit]: canaries first, through DP like anyone
    if config.defense.robust is not None:
        from privfl.defenses.robust import create_robust_aggregator

        stages.aggregator = create_robust_aggregator(config.defense.robust, setup)
    if config.defense.secagg is not None:
        stages.channel = create_secagg_channel(config.defense.secagg, setup)
    if config.defense.he is not None:
        stages.channel = create_he_channel(config.defense.he, setup)
    # [defense.dp]: the last *honest* client stage (clipping and noise run in the clients'
    # own software; malicious clients, added below, skip it: they send what they like).
    # After the channel: central DP clips to S minus the channel's encoding slack.
    add_differential_privacy(stages, config, setup)
    # [compression] after the honest client stages (DP included: compression post-processes
    # what DP released); [federation.heterogeneity] wraps the trainer, drops stragglers first.
    add_compression(stages, config, setup)
    add_heterogeneity(stages, config, setup)
    if config.defense.he is not None:
        HEChannel.check_aggregator(stages.aggregator)  # after the aggregator is chosen
    # Poisoning last: the malicious clients' transform must run after every client-side
    # transform (attackers send what they like) and it scores the final aggregator.
    if config.attack.poisoning is not None:
        from privfl.attacks.poisoning import add_poisoning

        stages = add_poisoning(stages, config.attack.poisoning, setup)
    if config.attack.inversion is not None:  # the server's view, after every channel
        inversion = create_inversion_observer(config.attack.inversion, config, setup, training)
        stages.observers.append(inversion)
        stages.finishers.append(inversion.finish)
    return stages


__all__ = ["Finisher", "RunSetup", "Stages", "build_stages", "create_sampler", "local_training_of"]
