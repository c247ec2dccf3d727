"""What an inversion attack works on, and what it returns.

An :class:`InversionTarget` holds only what the attacker has: the global model, one observed
update turned into its gradient equivalent, the example count it may know, and the threat
model. Nothing in it comes from the client's data (breaching's separation of attack and case).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from privfl.attacks.inversion.simulate import (
    examples_used,
    gradient_equivalent,
    num_local_steps,
)
from privfl.attacks.inversion.threat import InversionThreat
from privfl.errors import PrivflError
from privfl.update import ParamSpec

#: called after each optimizer iteration with the number of iterations done so far.
Callback = Callable[[int], None]


@dataclass(frozen=True)
class InversionTarget:
    """One observed update to invert.

    Attributes:
        model: the architecture (its own weights are not used).
        params: the global weights the client started from, by parameter name (detached).
        update: the gradient equivalent ``G = -Delta / lr`` per parameter, model order.
        num_examples: the client's example count ``n`` (reported with FedAvg updates, or
            assumed for an aggregate).
        threat: what else the attacker knows.
    """

    model: nn.Module
    params: dict[str, torch.Tensor]
    update: list[torch.Tensor]
    num_examples: int
    threat: InversionThreat

    @classmethod
    def from_delta(
        cls,
        model: nn.Module,
        spec: ParamSpec,
        global_params: torch.Tensor,
        delta: torch.Tensor,
        num_examples: int,
        threat: InversionThreat,
    ) -> InversionTarget:
        """A target from a flat observed delta ``(dim,)`` (local minus global weights).

        Raises:
            PrivflError: the delta does not fit the model, or holds NaN/Inf.
        """
        if delta.shape != (spec.dim,) or global_params.shape != (spec.dim,):
            raise PrivflError(
                f"an update of shape {tuple(delta.shape)} does not fit a model of {spec.dim} "
                "parameters"
            )
        if not torch.isfinite(delta).all():
            raise PrivflError("the observed update holds NaN or Inf; nothing to invert")
        if num_examples < 1:
            raise PrivflError(f"num_examples must be >= 1, got {num_examples}")
        g = gradient_equivalent(delta.detach().to(torch.float32), threat.training.lr)
        params = {k: v.detach().clone() for k, v in spec.unflatten(global_params).items()}
        return cls(model, params, list(spec.unflatten(g).values()), num_examples, threat)

    @property
    def num_reconstructed(self) -> int:
        """How many images the attack reconstructs: the examples the local training touched."""
        return examples_used(self.threat.training, self.num_examples)


@dataclass(frozen=True)
class Reconstruction:
    """An attack's output.

    Attributes:
        x: float32 ``(D, *input_shape)``, the reconstructed inputs (not yet clipped).
        labels: int64 ``(D,)``, the recovered or optimized labels.
        loss: the matching objective of the kept restart at its best point.
        iterations: optimizer iterations run in the kept restart.
    """

    x: torch.Tensor
    labels: torch.Tensor
    loss: float
    iterations: int


def batch_key(target: InversionTarget) -> tuple[object, ...]:
    """What targets attacked in one batch must share besides the model and the global
    weights: the local training, the input shape, the number of reconstructed examples and
    of local steps (see docs/design.md, "Batched inversion targets")."""
    training = target.threat.training
    return (
        training,
        target.threat.input_shape,
        target.num_reconstructed,
        num_local_steps(training, target.num_examples),
    )


def check_batch(targets: Sequence[InversionTarget]) -> None:
    """Raise unless ``targets`` can share one batched replay: the same model object, equal
    global weights and the same :func:`batch_key`.

    Raises:
        PrivflError: they cannot.
    """
    first = targets[0]
    key = batch_key(first)
    for t in targets[1:]:
        same_params = t.params.keys() == first.params.keys() and all(
            a is b or torch.equal(a, b)
            for a, b in zip(t.params.values(), first.params.values(), strict=True)
        )
        if t.model is not first.model or not same_params or batch_key(t) != key:
            raise PrivflError(
                "a batched attack needs targets of one model, from the same global weights, "
                "with the same local training and number of reconstructed examples"
            )


__all__ = ["Callback", "InversionTarget", "Reconstruction", "batch_key", "check_batch"]
