"""A round's mini-batch schedules for a whole cohort, as padded index tensors.

The vectorized engine trains a cohort in lock-step: at step ``t`` every client still training
takes its own ``t``-th mini-batch. The batches are exactly those of the sequential engine
(:func:`privfl.client.batch_schedule` on the client's own stream), so both engines draw the
same examples in the same order; batches of unequal size are padded and masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from privfl.client import LocalTraining, batch_schedule
from privfl.seeding import torch_generator


@dataclass(frozen=True)
class CohortSchedule:
    """The mini-batches of a cohort, clients sorted by step count (most steps first).

    Attributes:
        order: int64 ``(c,)``: position in the caller's client list of each sorted row.
        steps: int64 ``(c,)``: local steps of each row, non-increasing.
        index: int64 ``(T, c, B)``: global example indices (into the train tensors) of step
            ``t``'s batch of row ``i``; padding repeats a valid index of the same client.
        mask: float32 ``(T, c, B)``: 1 for real examples, 0 for padding.
        sizes: float64 ``(T, c)``: real examples per batch (0 after a row's last step).
        active: list of ``T`` ints: rows ``[0, active[t])`` train at step ``t``.
        padded: whether any batch is padded (otherwise ``mask`` is all ones where active).
    """

    order: np.ndarray
    steps: np.ndarray
    index: torch.Tensor
    mask: torch.Tensor
    sizes: torch.Tensor
    active: list[int]
    padded: bool


def cohort_schedule(
    partition_indices: Sequence[np.ndarray],
    clients: Sequence[int],
    training: LocalTraining,
    seed: int,
    round: int,
) -> CohortSchedule:
    """Every client's batches of ``round``, drawn from its stream ``(seed, "client", round,
    cid)`` by :func:`batch_schedule` exactly as the sequential engine draws them.

    Args:
        partition_indices: each client's example indices into the train tensors.
        clients: the cohort (client ids), in the caller's order.
        training: batch size, epochs or steps.
    Returns:
        the padded schedule; ``T`` is the largest step count (0 if nobody trains).
    """
    per_client: list[list[torch.Tensor]] = []
    for cid in clients:
        part = torch.from_numpy(np.asarray(partition_indices[int(cid)], dtype=np.int64))
        g = torch_generator(seed, "client", round, int(cid))
        batches = [
            part if idx is None else part[idx]
            for idx in batch_schedule(
                len(part), training.batch_size, training.epochs, training.steps, g
            )
        ]
        per_client.append(batches)
    steps = np.array([len(b) for b in per_client], dtype=np.int64)
    order = np.argsort(-steps, kind="stable")
    c, t_max = len(per_client), int(steps.max(initial=0))
    width = max((len(b) for bs in per_client for b in bs), default=0)
    index = torch.zeros((t_max, c, width), dtype=torch.int64)
    mask = torch.zeros((t_max, c, width), dtype=torch.float32)
    padded = False
    for row, i in enumerate(order.tolist()):
        batches = per_client[i]
        for t, b in enumerate(batches):
            k = len(b)
            index[t, row, :k] = b
            mask[t, row, :k] = 1.0
            if k < width:
                index[t, row, k:] = b[0]  # any valid example: it is masked out
                padded = True
    sorted_steps = steps[order]
    active = [int((sorted_steps > t).sum()) for t in range(t_max)]
    return CohortSchedule(
        order=order,
        steps=sorted_steps,
        index=index,
        mask=mask,
        sizes=mask.sum(dim=2, dtype=torch.float64),
        active=active,
        padded=padded,
    )


__all__ = ["CohortSchedule", "cohort_schedule"]
