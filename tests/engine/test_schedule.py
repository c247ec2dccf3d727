"""The cohort schedule (one index tensor for the whole cohort) against
:func:`privfl.client.batch_schedule` run client by client on each client's own stream: every
batch the same examples in the same order, for epochs, step counts that end inside or past an
epoch, full batches, uneven last batches and empty clients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privfl.client import LocalTraining, batch_schedule
from privfl.engine.schedule import cohort_schedule
from privfl.seeding import torch_generator


@pytest.mark.parametrize(
    ("batch_size", "epochs", "steps"),
    [
        (8, 2, None),  # uneven last batch in each epoch
        (5, 1, 7),  # steps that run past the first epoch of the small clients
        (4, 1, 2),  # steps that end inside an epoch
        (None, 1, 3),  # full batches: the examples in order, no draw
        (100, 3, None),  # a batch wider than every client: full batches by size
    ],
)
def test_cohort_schedule_is_each_clients_batch_schedule(batch_size, epochs, steps):
    rng = np.random.default_rng(3)
    sizes = [13, 0, 7, 25, 1, 16]
    parts = [rng.choice(1000, size=n, replace=False) for n in sizes]
    clients = [5, 0, 3, 1, 2, 4]
    training = LocalTraining(batch_size=batch_size, epochs=epochs, steps=steps, lr=0.1)
    sched = cohort_schedule(parts, clients, training, seed=11, round=4)
    widths = set()
    for row, i in enumerate(sched.order.tolist()):
        cid = clients[i]
        g = torch_generator(11, "client", 4, cid)
        part = torch.from_numpy(parts[cid])
        expected = [
            part if idx is None else part[idx]
            for idx in batch_schedule(len(part), batch_size, epochs, steps, g)
        ]
        assert sched.steps[row] == len(expected)
        s = len(expected)  # positions name the same examples in the client's own list
        assert torch.equal(part[sched.positions[:s, row]], sched.index[:s, row])
        for t, b in enumerate(expected):
            real = sched.mask[t, row] > 0
            assert torch.equal(sched.index[t, row][real], b)
            # padding repeats one of the batch's own examples (masked out)
            assert set(sched.index[t, row][~real].tolist()) <= set(b.tolist())
            widths.add(len(b))
        assert (sched.mask[len(expected) :, row] == 0).all()
        assert [sched.active[t] > row for t in range(len(sched.active))] == [
            t < len(expected) for t in range(len(sched.active))
        ]
    assert sched.padded == (len(widths) > 1)
    assert torch.equal(sched.sizes, sched.mask.sum(2, dtype=torch.float64))
    assert list(np.diff(sched.steps) <= 0) == [True] * (len(clients) - 1)
