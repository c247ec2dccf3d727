"""The utility of a subset of a round's clients: validation accuracy of the model the server
would have built from their updates alone (the FedAvg reconstruction of Song et al. 2019 and
Liu et al. 2022: no retraining, only the updates the server already has)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from privfl.update import ParamSpec


class ReconstructionUtility:
    """``masks (k, n) -> (k,)`` validation accuracies of the models reconstructed from each
    subset S's updates, evaluated as one batch of models through ``torch.func.vmap`` (chunks
    of ``chunk`` models):

    - ``share``: ``w + sum_S p_i Delta_i / sum_N p_i``, S's part of the round's actual FedAvg
      step (each update keeps its coefficient in the real aggregate), so ``v(N)`` is the new
      global model and a client that sent a zero update is a null player;
    - ``subset_mean``: ``w + sum_S p_i Delta_i / sum_S p_i``, the model FedAvg would have
      built from S alone (the reconstruction of Song et al. 2019 and Liu et al. 2022).

    The empty set is ``w`` either way.

    Args:
        model: a module of the run's architecture (its weights are not used).
        spec: the flat parameter layout.
        global_params: ``w``, float32 ``(dim,)``.
        deltas: the round's updates, float32 ``(n, dim)``.
        weights: the aggregation weights ``p_i`` (example counts), ``(n,)``.
        x, y: the server's validation examples.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ParamSpec,
        global_params: torch.Tensor,
        deltas: torch.Tensor,
        weights: np.ndarray,
        x: torch.Tensor,
        y: torch.Tensor,
        reconstruction: str = "share",
        chunk: int = 256,
    ) -> None:
        if reconstruction not in ("share", "subset_mean"):
            raise ValueError(f"reconstruction must be share or subset_mean, not {reconstruction!r}")
        self.reconstruction = reconstruction
        self.model, self.spec = model.eval(), spec
        self.w, self.deltas = global_params, deltas
        self.p = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if (self.p <= 0).any():
            raise ValueError("aggregation weights must be positive")
        self.x, self.y, self.chunk = x, y, chunk
        self._forward = vmap(
            lambda params, xb: functional_call(self.model, params, (xb,)), in_dims=(0, None)
        )

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        m = torch.as_tensor(np.asarray(masks, dtype=bool))
        coef = m.double() * self.p
        if self.reconstruction == "share":
            coef = (coef / self.p.sum()).float()
        else:
            total = coef.sum(1, keepdim=True)
            coef = torch.where(total > 0, coef / total.clamp_min(1e-300), coef).float()
        out = []
        with torch.no_grad():
            for lo in range(0, len(coef), self.chunk):
                params = self.w + coef[lo : lo + self.chunk] @ self.deltas  # (c, dim)
                named = {
                    name: params[:, o : o + int(np.prod(s))].reshape(len(params), *s)
                    for name, s, o in zip(
                        self.spec.names, self.spec.shapes, self.spec.offsets, strict=True
                    )
                }
                logits = self._forward(named, self.x)  # (c, v, classes)
                out.append((logits.argmax(-1) == self.y).double().mean(1))
        return torch.cat(out).numpy()


__all__ = ["ReconstructionUtility"]
