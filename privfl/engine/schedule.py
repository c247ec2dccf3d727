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

from privfl.client import LocalTraining
from privfl.seeding import derive_seeds


@dataclass(frozen=True)
class CohortSchedule:
    """The mini-batches of a cohort, clients sorted by step count (most steps first).

    Attributes:
        order: int64 ``(c,)``: position in the caller's client list of each sorted row.
        steps: int64 ``(c,)``: local steps of each row, non-increasing.
        index: int64 ``(T, c, B)``: global example indices (into the train tensors) of step
            ``t``'s batch of row ``i``; padding repeats a valid index of the same client.
        positions: int64 ``(T, c, B)``: the same examples as positions in their client's
            own list (``partition_indices[cid][positions] == index``).
        mask: float32 ``(T, c, B)``: 1 for real examples, 0 for padding.
        sizes: float64 ``(T, c)``: real examples per batch (0 after a row's last step).
        active: list of ``T`` ints: rows ``[0, active[t])`` train at step ``t``.
        padded: whether any batch is padded (otherwise ``mask`` is all ones where active).
    """

    order: np.ndarray
    steps: np.ndarray
    index: torch.Tensor
    positions: torch.Tensor
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
    cid)`` by :func:`~privfl.client.batch_schedule` exactly as the sequential engine draws them.

    Args:
        partition_indices: each client's example indices into the train tensors.
        clients: the cohort (client ids), in the caller's order.
        training: batch size, epochs or steps.
    Returns:
        the padded schedule; ``T`` is the largest step count (0 if nobody trains).
    """
    c = len(clients)
    parts = [np.asarray(partition_indices[int(cid)], dtype=np.int64) for cid in clients]
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    layouts = {n: _layout(n, training) for n in set(sizes.tolist())}
    steps = np.array([layouts[n][0].shape[0] for n in sizes.tolist()], dtype=np.int64)
    order = np.argsort(-steps, kind="stable")
    t_max = int(steps.max(initial=0))
    width = max((layouts[n][0].shape[1] for n in layouts if n), default=0)
    # Padding: a batch narrower than the widest (a smaller client's, or an epoch's last).
    padded = any(not v.all() or v.shape[1] < width for _, v, _ in layouts.values() if v.size)
    index = np.zeros((t_max, c, width), dtype=np.int64)
    positions = np.zeros((t_max, c, width), dtype=np.int64)
    mask = np.zeros((t_max, c, width), dtype=np.float32)
    seeds = derive_seeds(seed, "client", round, last=[int(cid) for cid in clients])
    g = torch.Generator()
    for n, (pos, valid, perms) in layouts.items():  # the clients of each size together
        rows = np.flatnonzero(sizes[order] == n)
        if n == 0 or not len(rows):
            continue
        members = order[rows]
        if perms:  # the same permutations privfl.client.batch_schedule draws, in the same order
            drawn = torch.empty((len(members), perms * n), dtype=torch.int64)
            for j, i in enumerate(members.tolist()):
                g.manual_seed(seeds[i])  # torch_generator(seed, "client", round, cid)
                for p in range(perms):
                    torch.randperm(n, generator=g, out=drawn[j, p * n : (p + 1) * n])
            at = drawn.numpy()[:, pos]  # (clients, steps, w)
        else:
            at = np.broadcast_to(pos, (len(members), *pos.shape))
        s, w = pos.shape
        own = np.stack([parts[i] for i in members.tolist()])  # (clients, n)
        picked = np.take_along_axis(own, at.reshape(len(members), -1), axis=1)
        index[:s, rows, :w] = picked.reshape(len(members), s, w).transpose(1, 0, 2)
        index[:s, rows, w:] = index[:s, rows, :1]  # padding past a narrow client's batches
        positions[:s, rows, :w] = at.transpose(1, 0, 2)
        positions[:s, rows, w:] = positions[:s, rows, :1]
        mask[:s, rows, :w] = valid[:, None, :]
    sorted_steps = steps[order]
    active = [int(a) for a in (sorted_steps[None, :] > np.arange(t_max)[:, None]).sum(1)]
    index_t, mask_t = torch.from_numpy(index), torch.from_numpy(mask)
    return CohortSchedule(
        order=order,
        steps=sorted_steps,
        index=index_t,
        positions=torch.from_numpy(positions),
        mask=mask_t,
        sizes=mask_t.sum(dim=2, dtype=torch.float64),
        active=active,
        padded=padded,
    )


def _layout(n: int, training: LocalTraining) -> tuple[np.ndarray, np.ndarray, int]:
    """Where each step's batch slots of a client with ``n`` examples read in the concatenation
    of its epochs' permutations, as :func:`~privfl.client.batch_schedule` cuts them.

    Returns:
        ``(pos, valid, perms)``: ``pos`` int64 ``(steps, B)`` (padding points at the step's
        first example), ``valid`` its float32 mask, ``perms`` the permutations drawn (0 for
        full batches, which are the examples in order and draw none).
    """
    if n == 0:
        return np.zeros((0, 0), dtype=np.int64), np.zeros((0, 0), dtype=np.float32), 0
    bs = n if training.batch_size is None else min(training.batch_size, n)
    per_epoch = -(-n // bs)
    total = training.steps if training.steps is not None else training.epochs * per_epoch
    slot = np.arange(bs)
    if bs == n:  # full batches: every step is all examples, in order
        return np.tile(slot, (total, 1)), np.ones((total, bs), dtype=np.float32), 0
    step = np.arange(total)
    within = (step % per_epoch * bs)[:, None] + slot[None, :]  # position within the epoch
    valid = within < n
    pos = np.where(valid, (step // per_epoch * n)[:, None] + within, 0)
    pos = np.where(valid, pos, pos[:, :1])
    return pos, valid.astype(np.float32), -(-total // per_epoch)


__all__ = ["CohortSchedule", "cohort_schedule"]
