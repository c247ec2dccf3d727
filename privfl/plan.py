"""From a config to the stages of a round (which defenses and attacks are active).

Each defense or attack issue adds its builder here, so the whole pipeline of a config can be
read in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from privfl.aggregation import WeightedMean
from privfl.channel import PlainChannel
from privfl.config import Config
from privfl.stages import Aggregator, Channel, ClientTransform, Observer, ServerTransform


@dataclass
class Stages:
    """The configured pipeline of a round, in order."""

    client_transforms: list[ClientTransform] = field(default_factory=list)
    channel: Channel = field(default_factory=PlainChannel)
    aggregator: Aggregator = field(default_factory=WeightedMean)
    server_transforms: list[ServerTransform] = field(default_factory=list)
    observers: list[Observer] = field(default_factory=list)

    def named(self) -> dict[str, object]:
        """Every stage under a stable name (for checkpoints)."""
        out: dict[str, object] = {"channel": self.channel, "aggregator": self.aggregator}
        for kind, items in (
            ("client", self.client_transforms),
            ("server", self.server_transforms),
            ("observer", self.observers),
        ):
            for i, s in enumerate(items):
                out[f"{kind}{i}:{type(s).__name__}"] = s
        return out


def build_stages(config: Config) -> Stages:
    """The stages ``config`` asks for; with no defense or attack, plain FedAvg."""
    return Stages()


__all__ = ["Stages", "build_stages"]
