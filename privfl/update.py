"""What travels in a round: client updates, their stacked form, and what the server sees.

Updates are flat float32 vectors (the model delta ``local - global``). Stages that can work on
all clients at once get an :class:`UpdateBatch`, a ``clients x params`` matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ParamSpec:
    """The layout of a model's trainable parameters in one flat float32 vector.

    Attributes:
        names: parameter names, in ``model.named_parameters()`` order.
        shapes: each parameter's shape.
        offsets: start of each parameter in the flat vector; ``offsets[-1] + numel[-1] == dim``.

    A linear layer from 3 inputs to 2 outputs is a 2 x 3 weight and 2 biases, 8 values:

    >>> layer = nn.Linear(3, 2)
    >>> spec = ParamSpec.of(layer)
    >>> spec.names, spec.shapes, spec.offsets, spec.dim
    (('weight', 'bias'), ((2, 3), (2,)), (0, 6), 8)
    >>> flat = spec.flatten(layer)
    >>> flat.shape, torch.equal(flat[6:], layer.bias.detach())
    (torch.Size([8]), True)
    >>> {name: tuple(t.shape) for name, t in spec.unflatten(torch.zeros(8)).items()}
    {'weight': (2, 3), 'bias': (2,)}
    >>> spec.load_into(layer, torch.arange(8.0))
    >>> layer.bias.tolist()
    [6.0, 7.0]
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    dim: int

    @classmethod
    def of(cls, model: nn.Module) -> ParamSpec:
        """The spec of ``model``'s parameters that require gradients."""
        names, shapes, offsets, total = [], [], [], 0
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            names.append(name)
            shapes.append(tuple(p.shape))
            offsets.append(total)
            total += p.numel()
        return cls(tuple(names), tuple(shapes), tuple(offsets), total)

    def flatten(self, model: nn.Module) -> torch.Tensor:
        """The model's parameters as one new float32 vector, shape ``(dim,)``."""
        return torch.cat([p.detach().reshape(-1) for p in self._params(model)]).to(torch.float32)

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views into ``vector`` (shape ``(dim,)``) with each parameter's name and shape."""
        self._check(vector)
        return {
            n: vector[o : o + _numel(s)].view(s)
            for n, s, o in zip(self.names, self.shapes, self.offsets, strict=True)
        }

    def load_into(self, model: nn.Module, vector: torch.Tensor) -> None:
        """Copy ``vector`` into the model's parameters in place (no autograd history)."""
        self._check(vector)
        with torch.no_grad():
            for p, o in zip(self._params(model), self.offsets, strict=True):
                p.copy_(vector[o : o + p.numel()].view_as(p))

    def _params(self, model: nn.Module) -> list[nn.Parameter]:
        """The model's trainable parameters in spec order (checked against the spec's count;
        ``model.parameters()`` is much cheaper than ``named_parameters()`` on the hot path)."""
        params = [p for p in model.parameters() if p.requires_grad]
        if len(params) != len(self.names):
            raise ValueError(f"model has {len(params)} trainable tensors, spec {len(self.names)}")
        return params

    def _check(self, vector: torch.Tensor) -> None:
        if vector.ndim != 1 or vector.numel() != self.dim:
            raise ValueError(
                f"expected a flat vector of {self.dim} values, got shape {tuple(vector.shape)}"
            )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@dataclass(frozen=True)
class Update:
    """One client's contribution to a round.

    Attributes:
        client_id: the client's index in the partition.
        delta: float32, shape ``(dim,)``: local parameters minus the global ones.
        num_examples: examples the client trained on (the FedAvg weight).
        metrics: scalars the client reports (e.g. ``loss``, ``steps``).
    """

    client_id: int
    delta: torch.Tensor
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EncodedUpdates:
    """The bytes each client of a batch really sends when a compressor replaces its float32
    delta (indices, values, bit-packed levels, norms), and how the server decodes them.

    Attributes:
        messages: one serialized payload per row of the batch, in row order.
        decoder: the server's decoder, vectorized over clients: ``messages -> (n, dim)``
            float32 deltas.
        support: coordinates shared by every row outside which every row is zero (random-k
            with one shared seed per round), int64 ``(k,)``; None when rows differ. A secure
            channel may then carry only these coordinates.
        support_scale: the decoded values on ``support`` are this multiple of the values
            sent (random-k's unbiased ``d / k``), so a secure channel can sum the raw values.
    """

    messages: tuple[bytes, ...]
    decoder: Callable[[Sequence[bytes]], torch.Tensor]
    support: np.ndarray | None = None
    support_scale: float = 1.0

    @property
    def nbytes(self) -> int:
        """Bytes on the wire, all clients together."""
        return sum(len(m) for m in self.messages)

    def decode(self) -> torch.Tensor:
        """The deltas as the server reads them from the bytes, float32 ``(n, dim)``."""
        return self.decoder(self.messages)

    def select(self, mask: np.ndarray) -> EncodedUpdates:
        """The messages of the rows where the boolean ``mask`` is true."""
        keep = np.flatnonzero(np.asarray(mask, dtype=bool))
        return replace(self, messages=tuple(self.messages[i] for i in keep))


def _rows_of_one_tensor(deltas: list[torch.Tensor], dim: int) -> torch.Tensor:
    """``torch.stack(deltas)``, without the copy when the deltas already are the consecutive
    rows of one tensor (as the vectorized engine returns its cohort's updates, rows perhaps
    padded to an aligned stride): then the ``(n, dim)`` view of those rows. Nothing writes to
    updates or batches in place, so the shared memory is never seen."""
    first = deltas[0]
    start = first.storage_offset()
    ptr = first.untyped_storage().data_ptr()
    stride = deltas[1].storage_offset() - start if len(deltas) > 1 else dim
    if stride >= dim and all(
        d.dim() == 1
        and len(d) == dim
        and d.stride(0) == 1
        and d.dtype == first.dtype
        and d.device == first.device
        and d.untyped_storage().data_ptr() == ptr
        and d.storage_offset() == start + i * stride
        for i, d in enumerate(deltas)
    ):
        return first.as_strided((len(deltas), dim), (stride, 1))
    return torch.stack(deltas)


class RowFactors(Protocol):
    """A cohort's updates not (yet) written out as rows, in a form the server's weighted mean
    can use directly (the batched MLP kernel's low-rank factors,
    :class:`privfl.engine.factored.FactoredDeltas`). Row ``k`` is client ``k`` of the batch."""

    #: The length of each row.
    dim: int

    def __len__(self) -> int: ...

    def rows(self) -> torch.Tensor:
        """The updates written out, float32 ``(n, dim)`` on the CPU."""
        ...

    def weighted_sum(self, coefficients: torch.Tensor) -> torch.Tensor:
        """``sum_k coefficients[k] * row_k``, float32 ``(dim,)`` on the CPU."""
        ...

    def finite(self) -> np.ndarray:
        """Per row, whether it holds neither NaN nor inf (bool ``(n,)``)."""
        ...

    def take(self, index: np.ndarray) -> RowFactors:
        """The rows at ``index``, in that order."""
        ...


#: The attribute on a rows tensor written out from factors that names those factors and the
#: tensor's version counter then: how a batch tells the factors' own rows from rows a stage
#: put in their place or changed in place.
_ROWS_OF = "_privfl_rows_of"


def _version(t: torch.Tensor) -> int | None:
    """``t``'s version counter, which every in-place operation on it or a view of it bumps
    (None for inference-mode tensors, which keep none)."""
    try:
        return t._version
    except RuntimeError:
        return None


def _tag_rows(rows: torch.Tensor, factors: RowFactors) -> torch.Tensor:
    """``rows`` marked as the written-out form of ``factors`` (returned)."""
    setattr(rows, _ROWS_OF, (factors, _version(rows)))
    return rows


def _rows_are_own(rows: torch.Tensor, factors: RowFactors) -> bool:
    """Whether ``rows`` are ``factors`` written out and unchanged since (no in-place edit)."""
    tag = getattr(rows, _ROWS_OF, None)
    return tag is not None and tag[0] is factors and tag[1] == _version(rows)


class _Rows:
    """:attr:`UpdateBatch.deltas`: the rows given, or written out from the batch's
    ``factors`` the first time a stage reads them (then kept)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = "_" + name

    def __get__(self, batch: UpdateBatch | None, owner: type | None = None) -> torch.Tensor:
        if batch is None:
            raise AttributeError("deltas has no default")  # a required dataclass field
        rows = batch.__dict__.get(self._slot)
        if rows is None:
            rows = _tag_rows(batch.factors.rows(), batch.factors)  # type: ignore[union-attr,arg-type]
            batch.__dict__[self._slot] = rows
        return rows

    def __set__(self, batch: UpdateBatch, rows: torch.Tensor | None) -> None:
        batch.__dict__[self._slot] = rows


class _Factors:
    """:attr:`UpdateBatch.factors`: the factors while the rows are not written or are still
    their unchanged written-out form; None (for good) once the rows are anything else, so no
    stage can change the updates, by a new tensor or in place, while FedAvg's mean still reads
    the old ones."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = "_" + name

    def __get__(self, batch: UpdateBatch | None, owner: type | None = None) -> RowFactors | None:
        if batch is None:
            return None  # the dataclass field's default
        factors = batch.__dict__.get(self._slot)
        if factors is not None:
            rows = batch._written_rows()
            if rows is not None and not _rows_are_own(rows, factors):
                # The rows are the updates now: given beside the factors (a stage clipped or
                # noised the deltas with dataclasses.replace) or edited in place. Keeping the
                # factors let FedAvg's mean average the unclipped updates under DP-FedAvg.
                batch.__dict__[self._slot] = factors = None
        return factors

    def __set__(self, batch: UpdateBatch, factors: RowFactors | None) -> None:
        batch.__dict__[self._slot] = factors


@dataclass(frozen=True)
class UpdateBatch:
    """The updates of a round stacked for vectorized stages.

    Attributes:
        client_ids: int64, shape ``(n,)``.
        deltas: float32, shape ``(n, dim)``; row ``i`` belongs to ``client_ids[i]``. Built
            with ``deltas=None`` and ``factors``, the rows are written out from the factors
            the first time a stage reads them.
        weights: float64, shape ``(n,)``: aggregation weights (example counts by default).
        metrics: per-client scalar arrays, each shape ``(n,)``.
        info: round-level figures that client transforms attach for the round's metrics
            (e.g. the share of updates clipped).
        factors: the same updates in factored form (:class:`RowFactors`), or None. FedAvg's
            weighted mean and the finiteness check use them without writing the rows. They
            always describe ``deltas``: a batch built with rows that are not the factors' own
            (``dataclasses.replace(batch, deltas=clipped)``, :meth:`with_deltas`), or whose
            written-out rows a stage changed in place (``batch.deltas.mul_(c)``), drops them,
            so no stage can change the updates while the mean still reads the old ones.
    """

    client_ids: np.ndarray
    # A descriptor, not a default (it has none: reading it on the class is an AttributeError).
    deltas: torch.Tensor = _Rows()  # type: ignore[assignment]
    weights: np.ndarray  # type: ignore[misc]
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    encoded: EncodedUpdates | None = None
    dropped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    factors: RowFactors | None = _Factors()  # type: ignore[assignment]

    def __post_init__(self) -> None:
        # Reading ``factors`` drops them when the rows given are not their own (_Factors).
        if self._written_rows() is None and self.factors is None:
            raise ValueError("an UpdateBatch needs its deltas or their factors")
        if self.factors is not None and len(self.factors) != len(self.client_ids):
            raise ValueError(
                f"{len(self.factors)} factored rows for {len(self.client_ids)} clients"
            )

    @classmethod
    def stack(cls, updates: Sequence[Update], dim: int) -> UpdateBatch:
        """Stack ``updates`` (all of length ``dim``) into one batch; an empty list gives n=0."""
        keys = sorted({k for u in updates for k in u.metrics})
        deltas = (
            _rows_of_one_tensor([u.delta for u in updates], dim)
            if updates
            else torch.zeros((0, dim), dtype=torch.float32)
        )
        return cls(
            client_ids=np.array([u.client_id for u in updates], dtype=np.int64),
            deltas=deltas,
            weights=np.array([u.num_examples for u in updates], dtype=np.float64),
            metrics={k: np.array([u.metrics.get(k, np.nan) for u in updates]) for k in keys},
        )

    def _written_rows(self) -> torch.Tensor | None:
        """The rows if they exist, without writing them out (:class:`_Rows`' slot)."""
        return self.__dict__.get("_deltas")

    @property
    def rows_written(self) -> bool:
        """Whether the rows exist (given, or written out from the factors already)."""
        return self._written_rows() is not None

    def finite_rows(self) -> np.ndarray:
        """Per row, whether it holds neither NaN nor inf (bool ``(n,)``), from the factors
        while the rows are not written."""
        if len(self) == 0:
            return np.zeros(0, dtype=bool)
        if self.factors is not None and not self.rows_written:
            return self.factors.finite()
        # NaN and Inf propagate through a row sum (one cheap pass); only rows whose sum is
        # not finite (which includes finite rows that overflow) are checked element by element.
        finite = torch.isfinite(self.deltas.sum(dim=1)).numpy()
        if not finite.all():
            suspect = np.flatnonzero(~finite)
            finite[suspect] = torch.isfinite(self.deltas[suspect]).all(dim=1).numpy()
        return finite

    def __len__(self) -> int:
        return len(self.client_ids)

    def select(self, mask: np.ndarray) -> UpdateBatch:
        """The rows where the boolean ``mask`` (shape ``(n,)``) is true."""
        keep = np.asarray(mask, dtype=bool)
        m = torch.from_numpy(keep)
        rows = self._written_rows()
        factors = None if self.factors is None else self.factors.take(np.flatnonzero(keep))
        kept = None if rows is None else rows[m]
        if kept is not None and factors is not None:
            _tag_rows(kept, factors)  # the factors' rows still
        return UpdateBatch(
            client_ids=self.client_ids[mask],
            deltas=kept,  # type: ignore[arg-type]
            weights=self.weights[mask],
            metrics={k: v[mask] for k, v in self.metrics.items()},
            info=dict(self.info),
            encoded=None if self.encoded is None else self.encoded.select(mask),
            dropped=self.dropped,
            factors=factors,
        )

    def with_deltas(self, deltas: torch.Tensor) -> UpdateBatch:
        """A copy with the deltas replaced (same clients, weights and metrics; any
        ``encoded`` payload and ``factors`` are dropped, as they describe the old deltas)."""
        shape: tuple[int, ...]
        if self.factors is not None and not self.rows_written:
            shape = (len(self), self.factors.dim)
        else:
            shape = tuple(self.deltas.shape)
        if tuple(deltas.shape) != shape:
            raise ValueError(f"deltas shape {tuple(deltas.shape)} != {shape}")
        return replace(self, deltas=deltas, encoded=None, factors=None)

    def __iter__(self) -> Iterator[Update]:
        for i, cid in enumerate(self.client_ids):
            yield Update(
                int(cid),
                self.deltas[i],
                int(self.weights[i]),
                {k: float(v[i]) for k, v in self.metrics.items()},
            )


@dataclass(frozen=True)
class ServerView:
    """Exactly what an honest-but-curious server sees in one round, and nothing more.

    Observers (inversion attacks, audits) receive only this. Channels fill the fields they
    reveal: a plain channel every client's ``updates``; secure aggregation only ``masked``
    vectors and the ``aggregate``; HE only ciphertext bytes.

    Attributes:
        round: the round number (1-based).
        global_params: float32, shape ``(dim,)``: the model the clients started from.
        client_ids: the clients that took part.
        updates: plaintext per-client updates, or None when the channel hides them.
        aggregate: the aggregated delta the server learns, or None when it learns none.
        masked: per-client vectors as received (masked or encrypted), or None.
        channel: the name of the channel that produced this view.
    """

    round: int
    global_params: torch.Tensor
    client_ids: np.ndarray
    updates: UpdateBatch | None = None
    aggregate: torch.Tensor | None = None
    masked: object | None = None
    channel: str = "plain"

    @property
    def has_plaintext_updates(self) -> bool:
        return self.updates is not None


@dataclass(frozen=True)
class GroundTruth:
    """A client's true local data in a round: only for scoring an attack, never for running it.

    Attributes:
        client_id: the client.
        x: the examples it trained on, float32 ``(n, *input_shape)``.
        y: their labels, int64 ``(n,)``.
    """

    client_id: int
    x: torch.Tensor
    y: torch.Tensor


__all__ = [
    "EncodedUpdates",
    "GroundTruth",
    "ParamSpec",
    "RowFactors",
    "ServerView",
    "Update",
    "UpdateBatch",
]
