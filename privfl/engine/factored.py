"""A cohort's updates in the factored form the batched MLP kernel trains them in.

Under plain SGD a Linear layer's change over a round is ``alpha G^T A`` per client (its
examples' inputs ``A`` and output gradients ``G``, ``alpha`` minus the step size; see
:mod:`privfl.engine.batched_mlp`), plus, once its steps were folded, a dense per-client
part. Writing every client's ``(out, in)`` block costs a batched product with an inner size
of one client's examples (W1: 60), and FedAvg then reads all those rows again to weight them.
The server's weighted mean needs none of them: ``sum_k s_k alpha G_k^T A_k`` is one product
of the whole cohort's factors, ``(s G)^T A``, with an inner size of every example of the round
(W1: 1,200), which runs near the GEMM rate. :class:`FactoredDeltas` keeps the factors and
writes the rows only when a stage reads them (an attack, a defense, a robust rule: see
:class:`privfl.update.UpdateBatch`).

Hand-written: no library keeps a batch of low-rank sums; each piece is one torch product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from privfl.engine.gemm import addmm, bmm_into

#: A row whose terms' bounds (the most any entry of a term can be) add up to no more than this
#: cannot overflow float32: the products' partial sums stay under float32's largest value.
_SAFE = float(torch.finfo(torch.float32).max) / 8


@dataclass(frozen=True)
class LowRank:
    """The block at ``offset`` (``shape = (out, in)``) of client ``k``'s update gains
    ``alpha G_k^T A_k``; the block at ``bias`` (``(out,)``), when not None, gains
    ``alpha 1^T G_k`` (a constant input 1)."""

    offset: int
    shape: tuple[int, int]
    g: torch.Tensor  # (c, R, out)
    a: torch.Tensor  # (c, R, in)
    alpha: float
    bias: int | None = None

    def take(self, index: torch.Tensor) -> LowRank:
        return LowRank(self.offset, self.shape, self.g[index], self.a[index], self.alpha, self.bias)

    def bound(self) -> torch.Tensor:
        """Per client, the most any entry of this term can be in absolute value (NaN when a
        factor holds NaN, inf when one holds inf)."""
        r = self.g.shape[1]
        if r == 0:
            return self.g.new_zeros(len(self.g))
        g, a = _abs_max(self.g), _abs_max(self.a)
        return abs(self.alpha) * r * g * torch.clamp_min(a, 1.0 if self.bias is not None else 0)


@dataclass(frozen=True)
class Dense:
    """The block at ``offset`` of client ``k``'s update gains ``current[k] - start`` (a
    per-client tensor ``(c, *shape)``; ``start`` the round's start, ``shape``, or None)."""

    offset: int
    current: torch.Tensor
    start: torch.Tensor | None = None

    def take(self, index: torch.Tensor) -> Dense:
        return Dense(self.offset, self.current[index], self.start)

    def bound(self) -> torch.Tensor:
        b = _abs_max(self.current)
        if self.start is not None:
            b = b + self.start.abs().max()
        return b


def cohort_rows(clients: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """An uninitialized ``(clients, dim)`` tensor (``like``'s dtype and device) whose rows
    start on 64-byte boundaries (each padded to a multiple of 64 bytes): a batched product
    writing into a row's blocks ran 10-20% slower on rows starting off a cache line (W1's
    first-layer deltas, 2.9 against 3.3 ms). Each row is contiguous, the rows a strided
    view."""
    align = max(1, 64 // like.element_size())
    return like.new_empty((clients, -(-dim // align) * align))[:, :dim]


def _put(
    view: torch.Tensor, value: torch.Tensor, alpha: float, block: int, written: set[int]
) -> None:
    """``view = alpha * value``, or ``view += alpha * value`` when a term wrote the block
    starting at ``block`` already; records it as written."""
    if block in written:
        view.add_(value, alpha=alpha)
    else:
        torch.mul(value, alpha, out=view)
        written.add(block)


def _abs_max(t: torch.Tensor) -> torch.Tensor:
    """Per client (leading axis), the largest absolute value of ``t``; NaN propagates."""
    flat = t.reshape(len(t), -1)
    # Two reductions: torch.aminmax over a dim ran 20x slower than amax and amin here.
    return torch.maximum(flat.amax(1), flat.amin(1).neg())


class FactoredDeltas:
    """The ``(c, dim)`` float32 updates of a cohort, held as per-block terms (each block of
    the flat layout is written by its first term and added to by the rest; a block no term
    touches is zero). Client ``k`` is row ``k``; the results come back on the CPU.

    Args:
        clients: ``c``.
        dim: the flat update's length.
        terms: :class:`LowRank` and :class:`Dense` terms, in the order their blocks are
            written.
        blocks: ``(offset, size)`` of every block of the layout (to zero the untouched ones).
    """

    def __init__(
        self,
        clients: int,
        dim: int,
        terms: list[LowRank | Dense],
        blocks: list[tuple[int, int]],
    ) -> None:
        self._c, self.dim, self.terms, self.blocks = clients, dim, terms, blocks

    def __len__(self) -> int:
        return self._c

    def take(self, index: np.ndarray) -> FactoredDeltas:
        """The clients at ``index`` (int, in that order)."""
        index = np.asarray(index, dtype=np.int64)
        if len(index) == self._c and np.array_equal(index, np.arange(self._c)):
            return self
        device = self._device()
        idx = torch.as_tensor(index, device=device)
        return FactoredDeltas(len(index), self.dim, [t.take(idx) for t in self.terms], self.blocks)

    def rows(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """Every client's update, ``(c, dim)``: written into ``out`` when given (and
        returned), else into new :func:`cohort_rows` (rows aligned, strided) on the CPU."""
        c = self._c
        given = out is not None
        if out is None:
            out = cohort_rows(c, self.dim, torch.empty(0, device=self._device()))
        written: set[int] = set()
        for term in self.terms:
            if isinstance(term, LowRank):
                o, (p, q) = term.offset, term.shape
                view = out[:, o : o + p * q].view(c, p, q)
                bmm_into(
                    view, term.g.transpose(1, 2), term.a, alpha=term.alpha, accumulate=o in written
                )
                written.add(o)
                if term.bias is not None:
                    b = out[:, term.bias : term.bias + p]
                    _put(b, term.g.sum(1), term.alpha, term.bias, written)
            else:
                n = term.current[0].numel()
                view = out[:, term.offset : term.offset + n].view_as(term.current)
                if term.offset in written:
                    view.add_(term.current)
                    if term.start is not None:
                        view.sub_(term.start)
                elif term.start is not None:
                    torch.sub(term.current, term.start, out=view)
                else:
                    view.copy_(term.current)
                written.add(term.offset)
        for o, size in self.blocks:
            if o not in written:
                out[:, o : o + size].zero_()
        return out if given else out.cpu()

    def weighted_sum(self, coefficients: torch.Tensor) -> torch.Tensor:
        """``sum_k coefficients[k] * row_k``, float32 ``(dim,)``, without writing the rows:
        a low-rank term is one product of the whole cohort's factors ``(s G)^T A``."""
        device = self._device()
        s = coefficients.to(device=device, dtype=torch.float32)
        out = torch.empty(self.dim, device=device)
        written: set[int] = set()
        for term in self.terms:
            if isinstance(term, LowRank):
                o, (p, q) = term.offset, term.shape
                view = out[o : o + p * q].view(p, q)
                sg = (term.g * s.view(-1, 1, 1)).reshape(-1, p)
                a = term.a.reshape(-1, q)
                addmm(view, sg.t(), a, alpha=term.alpha, accumulate=o in written)
                written.add(o)
                if term.bias is not None:
                    b = out[term.bias : term.bias + p]
                    _put(b, sg.sum(0), term.alpha, term.bias, written)
            else:
                flat = term.current.reshape(len(term.current), -1)
                view = out[term.offset : term.offset + flat.shape[1]]
                part = s @ flat
                if term.start is not None:
                    part.sub_(term.start.reshape(-1), alpha=float(s.sum()))
                if term.offset in written:
                    view.add_(part)
                else:
                    view.copy_(part)
                written.add(term.offset)
        for o, size in self.blocks:
            if o not in written:
                out[o : o + size].zero_()
        return out.cpu()

    def finite(self) -> np.ndarray:
        """Per client, whether its row holds neither NaN nor inf, exactly as checking the
        written row would say: a client whose terms are all finite and small enough that no
        sum can overflow is finite; the rest (rare) have their rows written and checked."""
        if self._c == 0:
            return np.zeros(0, dtype=bool)
        total = torch.zeros(self._c, device=self._device())
        for term in self.terms:
            total += term.bound()
        ok = (total <= _SAFE).cpu().numpy()  # False for NaN too
        if not ok.all():
            suspect = np.flatnonzero(~ok)
            ok[suspect] = torch.isfinite(self.take(suspect).rows()).all(dim=1).numpy()
        return ok

    def _device(self) -> torch.device:
        t = self.terms[0]
        return (t.g if isinstance(t, LowRank) else t.current).device


__all__ = ["Dense", "FactoredDeltas", "LowRank", "cohort_rows"]
