"""Client encryption spread over worker processes.

TenSEAL keeps the GIL while it encodes and encrypts (measured: two threads encrypting
chunks took as long as one), so parallel encryption needs processes. Each worker loads the
key holder's *public* context once (it never sees a secret key, like the clients it stands
for) and encrypts one chunk per task, with the chunk's sketch (:mod:`~.check`: the workers
get the clients' check key, never a voucher key); chunks of one client go to several
workers, so a client's whole update is encrypted in about ``1 / workers`` of the time on a
machine with that many free cores. A task is up to four chunks of one client, and at most
``8 * workers`` tasks are in flight (enough queued work to keep the workers busy while this
process builds a client's message), so memory stays bounded however large the cohort.

Written by hand on :mod:`concurrent.futures` because TenSEAL has no batch encryption of
independent vectors (its context's ``n_threads`` parallelizes operations *inside* one
CKKSTensor, not the encryption of many vectors).
"""

from __future__ import annotations

import multiprocessing
import os
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np

from privfl.defenses.he.check import RoundCheck, encrypt_and_sketch
from privfl.defenses.he.keys import load_public_context
from privfl.defenses.he.scheme import HEScheme
from privfl.errors import ConfigError

#: Chunks encrypted by one task: fewer round trips through the pool's queues.
CHUNKS_PER_TASK = 4

_worker: tuple[HEScheme, Any] | None = None  # (scheme, public context) in a worker process
_check: RoundCheck | None = None  # the latest round's check in a worker process
_check_key: bytes = b""


def _start(scheme: HEScheme, public_context: bytes) -> None:
    global _worker
    _worker = (scheme, load_public_context(public_context))


def _encrypt(chunks: np.ndarray, check_key: bytes, round: int) -> list[tuple[bytes, np.ndarray]]:
    global _check, _check_key
    assert _worker is not None, "worker not initialized"
    scheme, context = _worker
    if _check is None or _check.round != round or _check_key != check_key:
        _check, _check_key = RoundCheck(scheme, context, check_key, round), check_key
    return [encrypt_and_sketch(scheme, context, values, _check) for values in chunks]


def resolve_workers(workers: int) -> int:
    """``workers``, with 0 meaning one per CPU core this process may use."""
    if workers < 0:
        raise ConfigError(f"workers must be >= 0 (0: one per CPU core), got {workers}")
    return workers or len(os.sched_getaffinity(0))


class EncryptionPool:
    """Worker processes that encrypt chunks under one public context.

    Args:
        scheme: the HE scheme (its :meth:`~HEScheme.encrypt` runs in the workers).
        public_context: the key holder's published bytes.
        workers: processes (>= 2; one is better served by encrypting in-process).
    """

    def __init__(self, scheme: HEScheme, public_context: bytes, workers: int) -> None:
        if workers < 2:
            raise ValueError(f"an encryption pool needs >= 2 workers, got {workers}")
        self.workers = workers
        self._window = 8 * workers
        # fork: the workers inherit the imported modules (no second torch import); they run
        # only TenSEAL and numpy, never torch's thread pools.
        self._executor = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_start,
            initargs=(scheme, public_context),
        )
        self._finalizer = weakref.finalize(self, self._executor.shutdown, cancel_futures=True)

    def encrypt_rows(
        self, rows: Iterable[np.ndarray], *, check_key: bytes, round: int
    ) -> Iterator[tuple[tuple[bytes, ...], np.ndarray]]:
        """Each row's (client's) ciphertexts and their sketches ``(chunks, 2, primes)``, in
        order, as soon as the row is complete.

        Args:
            rows: each client's chunks, ``(chunks, slots)``.
            check_key, round: the round's check (:class:`~privfl.defenses.he.check.RoundCheck`).
        """
        pending: deque[Future[list[tuple[bytes, np.ndarray]]]] = deque()
        tasks: deque[int] = deque()  # tasks of each row not yet yielded
        current: list[tuple[bytes, np.ndarray]] = []
        done = 0

        def collect() -> Iterator[tuple[tuple[bytes, ...], np.ndarray]]:
            nonlocal current, done
            current += pending.popleft().result()
            done += 1
            if done == tasks[0]:
                tasks.popleft()
                row, current, done = current, [], 0
                yield tuple(c for c, _ in row), np.stack([s for _, s in row])

        for row in rows:
            if not len(row):
                raise ValueError("a row without chunks")
            parts = range(0, len(row), CHUNKS_PER_TASK)
            tasks.append(len(parts))
            for i in parts:
                task = row[i : i + CHUNKS_PER_TASK]
                pending.append(self._executor.submit(_encrypt, task, check_key, round))
                while len(pending) > self._window:
                    yield from collect()
        while pending:
            yield from collect()

    def close(self) -> None:
        """Stop the workers (also done when the pool is garbage-collected)."""
        self._finalizer()


__all__ = ["EncryptionPool", "resolve_workers"]
