"""L-BFGS on independent rows: ``torch.optim.LBFGS``'s step, run on each row of a stack as if
each row were its own optimizer.

One ``torch.optim.LBFGS`` over a stack of independent problems is not those problems solved
side by side: its two-loop recursion, curvature pairs, first-step scale ``1 / ||g||_1`` and its
stopping tests (``max |g|``, ``g . d``, the loss change) take dot products and norms over
*all* its parameters, so every row would steer every other. This module keeps one L-BFGS
state per row (history of up to ``history_size`` pairs, ``H_diag``, previous gradient and loss,
step counter) and applies the same rule as ``torch.optim.LBFGS.step`` without line search
(Nocedal & Wright, *Numerical Optimization*, 2nd ed., Algorithm 7.4; torch's defaults:
``max_iter = 20``, ``max_eval = 25``, ``tolerance_grad = 1e-7``, ``tolerance_change = 1e-9``,
``history_size = 100``), with the dot products taken row by row and each row's inner loop
stopping on its own tests. Written by hand because neither torch nor scipy batches
independent L-BFGS problems; checked against ``torch.optim.LBFGS`` row by row in
tests/attacks/inversion/test_inversion_batched.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

#: ``closure(evaluated)`` -> per-row losses ``(rows,)`` and gradients ``(rows, P)`` at the
#: current point; ``evaluated`` says which rows the per-row optimizer would evaluate now.
RowClosure = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class RowLBFGS:
    """The state of one L-BFGS per row of ``x`` ``(rows, P)`` (updated in place by :meth:`step`).

    Attributes:
        x: the stacked variables ``(rows, P)``, one problem per row, moved in place (outside
            autograd: it may be a leaf that requires grad).
        lr: the step length (DLG: 1).
        max_iter, max_eval, tolerance_grad, tolerance_change, history_size: those of
            ``torch.optim.LBFGS``, with its defaults, per row.
    """

    x: torch.Tensor
    lr: float = 1.0
    max_iter: int = 20
    max_eval: int = 25
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    history_size: int = 100
    _state: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        rows, p = self.x.shape
        kw = {"dtype": self.x.dtype, "device": self.x.device}
        self._state = {
            "n_iter": torch.zeros(rows, dtype=torch.int64, device=self.x.device),
            "count": torch.zeros(rows, dtype=torch.int64, device=self.x.device),
            "start": torch.zeros(rows, dtype=torch.int64, device=self.x.device),
            "dirs": torch.zeros((rows, self.history_size, p), **kw),  # y_i
            "stps": torch.zeros((rows, self.history_size, p), **kw),  # s_i
            "ro": torch.zeros((rows, self.history_size), **kw),  # 1 / (y_i . s_i)
            "h_diag": torch.ones(rows, **kw),
            "d": torch.zeros((rows, p), **kw),
            "t": torch.zeros(rows, **kw),
            "prev_grad": torch.zeros((rows, p), **kw),
            "prev_loss": torch.zeros(rows, dtype=torch.float64, device=self.x.device),
        }

    def step(self, closure: RowClosure, rows: torch.Tensor) -> None:
        """One ``LBFGS.step`` on each row where ``rows`` (bool ``(rows,)``) is True; the other
        rows do not move and their state is kept."""
        st = self._state
        loss, grad = closure(rows)
        loss = loss.double()  # torch compares the losses as Python floats
        evals = torch.ones_like(st["count"])
        active = rows & ~(grad.abs().amax(dim=1) <= self.tolerance_grad)
        n_iter = 0
        while n_iter < self.max_iter and bool(active.any()):
            n_iter += 1
            st["n_iter"] += active.long()
            first = active & (st["n_iter"] == 1)
            later = active & ~first
            d = torch.where(first[:, None], -grad, st["d"])
            if bool(later.any()):
                d = torch.where(later[:, None], self._direction(grad, later), d)
            st["d"] = d
            st["prev_grad"] = torch.where(active[:, None], grad, st["prev_grad"])
            st["prev_loss"] = torch.where(active, loss, st["prev_loss"])
            first_t = (1.0 / grad.abs().sum(dim=1)).clamp(max=1.0) * self.lr
            t = torch.where(first, first_t, torch.full_like(first_t, self.lr))
            st["t"] = torch.where(active, t, st["t"])
            gtd = (grad * d).sum(dim=1)
            active = active & ~(gtd > -self.tolerance_change)
            with torch.no_grad():
                self.x.add_(torch.where(active[:, None], st["t"][:, None] * d, 0.0))
            if n_iter != self.max_iter:
                new_loss, new_grad = closure(active)
                loss = torch.where(active, new_loss.double(), loss)
                grad = torch.where(active[:, None], new_grad, grad)
                evals += active.long()
            if n_iter == self.max_iter:
                break
            opt_cond = grad.abs().amax(dim=1) <= self.tolerance_grad
            small_step = (d * st["t"][:, None]).abs().amax(dim=1) <= self.tolerance_change
            flat = (loss - st["prev_loss"]).abs() < self.tolerance_change
            active = active & ~(evals >= self.max_eval) & ~opt_cond & ~small_step & ~flat

    def _direction(self, grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The new curvature pair of each row in ``rows`` (kept when ``y . s > 1e-10``), then
        the two-loop recursion's direction ``-H g`` for every row (used only for ``rows``)."""
        st = self._state
        y = grad - st["prev_grad"]
        s = st["d"] * st["t"][:, None]
        ys = (y * s).sum(dim=1)
        keep = rows & (ys > 1e-10)
        if bool(keep.any()):
            # A ring of history_size slots per row: the oldest pair at slot `start`; a full
            # row overwrites its oldest pair (torch pops it from the front of its lists).
            idx = torch.nonzero(keep).squeeze(1)
            count, start = st["count"][idx], st["start"][idx]
            slot = (start + count) % self.history_size
            st["dirs"][idx, slot] = y[idx]
            st["stps"][idx, slot] = s[idx]
            st["ro"][idx, slot] = 1.0 / ys[idx]
            full = count == self.history_size
            st["start"][idx] = torch.where(full, (start + 1) % self.history_size, start)
            st["count"][idx] = torch.where(full, count, count + 1)
            st["h_diag"] = torch.where(keep, ys / (y * y).sum(dim=1), st["h_diag"])
        # Rows with fewer pairs read slots never written: zeros (ro = 0), adding exactly 0.
        used = int(st["count"][rows].max())
        stps, dirs, ro = st["stps"], st["dirs"], st["ro"]
        if bool((st["start"] != 0).any()):  # unroll the rings once: oldest pair first
            order = (st["start"][:, None] + torch.arange(used, device=grad.device)) % len(ro[0])
            stps = stps.take_along_dim(order[:, :, None], dim=1)
            dirs = dirs.take_along_dim(order[:, :, None], dim=1)
            ro = ro.take_along_dim(order, dim=1)
        q = -grad
        al = [torch.zeros_like(st["h_diag"])] * used
        for i in range(used - 1, -1, -1):
            al[i] = (stps[:, i] * q).sum(dim=1) * ro[:, i]
            q = q - al[i][:, None] * dirs[:, i]
        r = q * st["h_diag"][:, None]
        for i in range(used):
            be = (dirs[:, i] * r).sum(dim=1) * ro[:, i]
            r = r + (al[i] - be)[:, None] * stps[:, i]
        return r


__all__ = ["RowClosure", "RowLBFGS"]
