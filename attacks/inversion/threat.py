"""The attacker's threat model as data (breaching's ``provide_*`` flags, STYLE.md §2).

The attacker is an honest-but-curious server. Besides what the channel shows it (the
:class:`privfl.update.ServerView`), it knows only what a FedAvg server knows because it runs
the protocol:

- the global model: architecture and the weights it sent this round;
- the local training it prescribes: learning rate, local steps or epochs, batch size,
  momentum, weight decay, FedProx's mu;
- each client's example count when the channel shows it (FedAvg weights the mean by it);
- the input shape, the number of classes and the pixel range ``[0, 1]``.

It is never given the clients' labels (they are recovered from the update or optimized) nor
their data: ``ObserverContext.ground_truth`` is used only to score a result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from privfl.client import LocalTraining


@dataclass(frozen=True)
class InversionThreat:
    """What the attacking server knows besides the ServerView (a
    :class:`privfl.threat.ThreatModel`).

    Attributes:
        training: the local training the server prescribes to every client.
        input_shape: shape of one example, e.g. ``(1, 8, 8)``.
        num_classes: number of labels (the width of the model's last layer).
        input_range: the pixel range reconstructions are clipped to.
        labels_known: whether true labels are handed to the attacker (never, in privfl's
            runs; kept explicit so a report says so).
    """

    training: LocalTraining
    input_shape: tuple[int, ...]
    num_classes: int
    input_range: tuple[float, float] = (0.0, 1.0)
    labels_known: bool = False

    @property
    def adversary(self) -> str:
        return "honest-but-curious server"

    def summary(self) -> str:
        labels = "given" if self.labels_known else "not given (recovered or optimized)"
        return (
            "An honest-but-curious server reconstructs clients' training examples from what "
            "the channel shows it. Besides that view it knows the global model (architecture "
            "and weights), the local training it prescribes, each client's example count when "
            f"the channel shows it, and the input shape {self.input_shape} and range "
            f"{self.input_range}; the clients' labels are {labels}."
        )

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready summary for ``attacks.json`` and ``threats.json``."""
        t = self.training
        return {
            "attacker": "honest-but-curious server",
            "knows": [
                "global model (architecture and weights)",
                "local training protocol",
                "example counts when the channel shows them",
                "input shape and range",
            ],
            "labels": "given" if self.labels_known else "not given (recovered or optimized)",
            "local_training": {
                "lr": t.lr,
                "steps": t.steps,
                "epochs": None if t.steps is not None else t.epochs,
                "batch_size": "full" if t.batch_size is None else t.batch_size,
                "momentum": t.momentum,
                "weight_decay": t.weight_decay,
                "prox_mu": t.prox_mu,
            },
        }


__all__ = ["InversionThreat"]
