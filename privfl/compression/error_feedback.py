"""Error feedback (Karimireddy et al., ICML 2019, "Error feedback fixes SignSGD and other
gradient compression schemes", Algorithm 2; Stich et al. 2018's "memory"): a client adds the
residual of its last compression to its next update before compressing,

    v_t = x_t + e_{t-1},   sent_t = C(v_t),   e_t = v_t - sent_t,

so ``e_t + sent_t = x_t + e_{t-1}`` (in float32: exactly for the sparsifiers, whose kept
values are copied; to float32 rounding of one subtraction for QSGD and sign). Each client
keeps its own residual across the rounds it is sampled in; the residuals are checkpointed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from privfl.stages import Stateful


class ErrorFeedback(Stateful):
    """The residuals ``e`` of every client that has sent at least once (float32 ``(d,)``
    each; a client never sampled has ``e = 0``)."""

    def __init__(self) -> None:
        self.residuals: dict[int, torch.Tensor] = {}

    def add_residuals(self, client_ids: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        """``v = x + e`` row by row (float32 ``(n, d)``; one lookup per client)."""
        v = x.clone()
        for i, cid in enumerate(client_ids.tolist()):
            e = self.residuals.get(int(cid))
            if e is not None:
                v[i] += e
        return v

    def update(self, client_ids: np.ndarray, v: torch.Tensor, sent: torch.Tensor) -> None:
        """Store ``e = v - sent`` for each row's client."""
        e = v - sent
        for i, cid in enumerate(client_ids.tolist()):
            self.residuals[int(cid)] = e[i].clone()

    def state_dict(self) -> dict[str, Any]:
        return {"residuals": {c: e.clone() for c, e in self.residuals.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.residuals = {int(c): e.clone() for c, e in state.get("residuals", {}).items()}


__all__ = ["ErrorFeedback"]
