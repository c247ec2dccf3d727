"""The clients' encryption and the server's homomorphic sum, each with a public context only.

Both parties receive the key holder's public context as bytes and load their own copy; neither
holds, nor can reach, the secret key (a test walks every attribute of :class:`HEServer`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from privfl.defenses.he.envelope import (
    SERVER,
    Envelope,
    MessageKind,
    key_id,
    read_envelope,
)
from privfl.defenses.he.keys import load_public_context
from privfl.defenses.he.packing import chunk_count
from privfl.defenses.he.pool import EncryptionPool
from privfl.defenses.he.scheme import ClientRng, Encoding, HEScheme
from privfl.update import UpdateBatch

log = logging.getLogger(__name__)


def _no_rng(client: int) -> np.random.Generator:
    raise ValueError("this encoding needs a random stream per client (pass rng=...)")


class ClientEncryptor:
    """What every client runs before its update leaves it: encode, encrypt, serialize.

    All clients hold the same public context; the simulation loads it once for all of them.

    Args:
        scheme: the HE scheme and its parameters.
        public_context: the key holder's published bytes.
        workers: processes that encrypt chunks in parallel (1: in this process; see
            :mod:`privfl.defenses.he.pool`). The messages are the same either way.
    """

    def __init__(self, scheme: HEScheme, public_context: bytes, *, workers: int = 1) -> None:
        self._scheme = scheme
        self._context = load_public_context(public_context)
        self.key_id = key_id(public_context)
        self._pool = EncryptionPool(scheme, public_context, workers) if workers > 1 else None

    def encrypt(
        self, batch: UpdateBatch, *, round: int, rng: ClientRng = _no_rng
    ) -> tuple[Iterator[bytes], dict[str, Any]]:
        """Each client's message (an envelope of serialized ciphertexts), in batch order, and
        the encoding's figures for the metrics.

        Every client first checks that the cohort's sum cannot overflow
        (:class:`~privfl.defenses.he.errors.HeadroomError` is raised here, before anything is
        encrypted); the messages are then made lazily, one client at a time. The loop runs
        per client and per chunk (TenSEAL encrypts one vector per call); the work inside each
        call is C++, spread over the worker processes when there are several.

        Args:
            batch: the cohort's updates and weights.
            round: the current round (bound into each message).
            rng: a client's random stream (the quantizer's stochastic rounding).
        """
        encoding = self._scheme.encode(batch, rng)
        return self._messages(batch.client_ids.tolist(), encoding, round), encoding.info

    def _ciphertexts(self, encoding: Encoding) -> Iterator[tuple[bytes, ...]]:
        if self._pool is not None:
            return self._pool.encrypt_rows(encoding.rows)
        return (tuple(self._scheme.encrypt(self._context, c) for c in row) for row in encoding.rows)

    def close(self) -> None:
        """Stop the encryption workers, if any."""
        if self._pool is not None:
            self._pool.close()

    def _messages(self, ids: list[int], encoding: Encoding, round: int) -> Iterator[bytes]:
        for client, chunks in zip(ids, self._ciphertexts(encoding), strict=True):
            yield Envelope(
                kind=MessageKind.UPDATE,
                scheme=self._scheme.code,
                key_id=self.key_id,
                round=round,
                sender=int(client),
                count=1,
                chunks=chunks,
            ).to_bytes()


@dataclass
class _Sum:
    """The server's running sum of a round (TenSEAL vectors, one per chunk)."""

    vectors: list[Any]
    count: int


class HEServer:
    """The aggregation server: checks each client's message and adds the ciphertexts.

    Args:
        scheme: the HE scheme and its parameters (no key).
        public_context: the key holder's published bytes.
    """

    def __init__(self, scheme: HEScheme, public_context: bytes) -> None:
        self._scheme = scheme
        self._context = load_public_context(public_context)
        self.public_context = public_context
        self.key_id = key_id(public_context)

    def aggregate(self, messages: Iterable[tuple[int, bytes]], *, round: int, dim: int) -> bytes:
        """The encrypted sum of the messages, as the message for the key holder.

        Args:
            messages: ``(client id, message bytes)`` pairs, as received.
            round: the current round.
            dim: values in one update.
        Raises:
            CiphertextError: a message is truncated, altered, from another context, round or
                sender, or holds bytes that are not ciphertexts of these parameters.
        """
        chunks = chunk_count(dim, self._scheme.slots)
        total: _Sum | None = None
        for client, data in messages:
            env = read_envelope(
                data,
                kind=MessageKind.UPDATE,
                scheme=self._scheme.code,
                key=self.key_id,
                round=round,
                chunks=chunks,
                sender=client,
            )
            vectors = [
                self._scheme.load(self._context, c, f"client {client}, ciphertext {j}")
                for j, c in enumerate(env.chunks)
            ]
            if total is None:
                total = _Sum(vectors, 1)
                continue
            for acc, v in zip(total.vectors, vectors, strict=True):
                acc.add_(v)
            total.count += 1
        if total is None:
            raise ValueError("aggregate() needs at least one message")
        return Envelope(
            kind=MessageKind.AGGREGATE,
            scheme=self._scheme.code,
            key_id=self.key_id,
            round=round,
            sender=SERVER,
            count=total.count,
            chunks=tuple(v.serialize() for v in total.vectors),
        ).to_bytes()


__all__ = ["ClientEncryptor", "HEServer"]
