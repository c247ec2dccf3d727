"""The clients' encryption and the server's homomorphic sum, each with a public context only.

Both parties receive the key holder's public context as bytes and load their own copy; neither
holds, nor can reach, the secret key (a test walks every attribute of :class:`HEServer`).
Each client also holds the keys the key holder enrolled it with (:class:`ClientKeys`: its
voucher key and the shared check key), which the server never sees.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from privfl.defenses.he.check import ClientKeys, RoundCheck, encrypt_and_sketch, seal_voucher
from privfl.defenses.he.envelope import (
    SERVER,
    Envelope,
    MessageKind,
    key_id,
    read_envelope,
)
from privfl.defenses.he.errors import CiphertextError
from privfl.defenses.he.keys import load_public_context
from privfl.defenses.he.packing import chunk_count
from privfl.defenses.he.pool import EncryptionPool
from privfl.defenses.he.scheme import ClientRng, Encoding, HEScheme
from privfl.errors import PrivflError
from privfl.update import UpdateBatch

log = logging.getLogger(__name__)


def _no_rng(client: int) -> np.random.Generator:
    raise ValueError("this encoding needs a random stream per client (pass rng=...)")


#: How a client obtains its keys from the key holder (a channel the server cannot read).
Enrol = Callable[[int], ClientKeys]


class ClientEncryptor:
    """What every client runs before its update leaves it: encode, encrypt, sketch, seal the
    voucher, serialize.

    All clients hold the same public context; the simulation loads it once for all of them.

    Args:
        scheme: the HE scheme and its parameters.
        public_context: the key holder's published bytes.
        workers: processes that encrypt chunks in parallel (1: in this process; see
            :mod:`privfl.defenses.he.pool`). The messages are the same either way.
        enrol: a client's keys from the key holder, asked once per client (see
            :meth:`privfl.defenses.he.keys.KeyHolder.enrol`).
    """

    def __init__(
        self,
        scheme: HEScheme,
        public_context: bytes,
        *,
        workers: int = 1,
        enrol: Enrol | None = None,
    ) -> None:
        self._scheme = scheme
        self._context = load_public_context(public_context)
        self.key_id = key_id(public_context)
        self._pool = EncryptionPool(scheme, public_context, workers) if workers > 1 else None
        self._enrol = enrol
        self._keys: dict[int, ClientKeys] = {}
        self._check: RoundCheck | None = None
        self._check_key = b""

    def keys(self, client: int) -> ClientKeys:
        """``client``'s keys, enrolling it with the key holder the first time."""
        if client not in self._keys:
            if self._enrol is None:
                raise PrivflError(
                    f"client {client} has no keys from the key holder: pass "
                    "enrol=KeyHolder.enrol to ClientEncryptor"
                )
            keys = self._enrol(client)
            if keys.client != client:
                raise PrivflError(f"the key holder enrolled client {keys.client}, not {client}")
            self._keys[client] = keys
        return self._keys[client]

    def encrypt(
        self, batch: UpdateBatch, *, round: int, rng: ClientRng = _no_rng
    ) -> tuple[Iterator[bytes], dict[str, Any]]:
        """Each client's message (an envelope of serialized ciphertexts and its voucher), in
        batch order, and the encoding's figures for the metrics.

        Every client first checks that the cohort's sum cannot overflow
        (:class:`~privfl.defenses.he.errors.HeadroomError` is raised here, before anything is
        encrypted); the messages are then made lazily, one client at a time. The loop runs
        per client and per chunk (TenSEAL encrypts one vector per call); the work inside each
        call is C++, spread over the worker processes when there are several.

        Args:
            batch: the cohort's updates and weights.
            round: the current round (bound into each message and voucher).
            rng: a client's random stream (the quantizer's stochastic rounding).
        """
        ids = [int(c) for c in batch.client_ids.tolist()]
        keys = [self.keys(c) for c in ids]
        encoding = self._scheme.encode(batch, rng)
        return self._messages(keys, encoding, round), encoding.info

    def _ciphertexts(
        self, encoding: Encoding, check_key: bytes, round: int
    ) -> Iterator[tuple[tuple[bytes, ...], np.ndarray]]:
        if self._pool is not None:
            return self._pool.encrypt_rows(encoding.rows, check_key=check_key, round=round)
        check = self._round_check(check_key, round)

        def rows() -> Iterator[tuple[tuple[bytes, ...], np.ndarray]]:
            for row in encoding.rows:
                pairs = [encrypt_and_sketch(self._scheme, self._context, c, check) for c in row]
                yield tuple(c for c, _ in pairs), np.stack([s for _, s in pairs])

        return rows()

    def _round_check(self, check_key: bytes, round: int) -> RoundCheck:
        # Every client derives the same check polynomial; the simulation derives it once.
        if self._check is None or self._check.round != round or self._check_key != check_key:
            self._check = RoundCheck(self._scheme, self._context, check_key, round)
            self._check_key = check_key
        return self._check

    def close(self) -> None:
        """Stop the encryption workers, if any."""
        if self._pool is not None:
            self._pool.close()

    def _messages(self, keys: list[ClientKeys], encoding: Encoding, round: int) -> Iterator[bytes]:
        if not keys:
            return
        check_key = keys[0].check_key
        if any(k.check_key != check_key for k in keys):
            raise PrivflError("the clients hold different check keys: enrolled by two key holders")
        rows = self._ciphertexts(encoding, check_key, round)
        for k, (chunks, sketches) in zip(keys, rows, strict=True):
            voucher = seal_voucher(k, key_id=self.key_id, round=round, sketches=sketches)
            yield Envelope(
                kind=MessageKind.UPDATE,
                scheme=self._scheme.code,
                key_id=self.key_id,
                round=round,
                sender=k.client,
                count=1,
                chunks=chunks,
                vouchers=((k.client, voucher),),
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

    def aggregate(
        self,
        messages: Iterable[tuple[int, bytes]],
        *,
        round: int,
        dim: int,
        rejected: dict[int, str] | None = None,
    ) -> bytes:
        """The encrypted sum of the messages, as the message for the key holder: it carries
        the vouchers of the clients summed, which the server cannot read.

        Args:
            messages: ``(client id, message bytes)`` pairs, as received.
            round: the current round.
            dim: values in one update.
            rejected: if given, a message that fails a check drops its sender (recorded here,
                client id -> why) and the sum goes on with the others; if None, the first bad
                message raises.
        Raises:
            CiphertextError: a message is truncated, altered, from another context, round or
                sender, or holds bytes that are not ciphertexts of these parameters (with
                ``rejected``: only when no message is left).
        """
        chunks = chunk_count(dim, self._scheme.slots)
        total: _Sum | None = None
        vouchers: list[tuple[int, bytes]] = []
        seen = 0
        for client, data in messages:
            seen += 1
            if any(c == client for c, _ in vouchers):
                log.warning("round %d: a second message from client %d ignored", round, client)
                continue
            try:
                vectors, voucher = self._check(client, data, round=round, chunks=chunks)
            except CiphertextError as e:
                if rejected is None:
                    raise
                log.warning("round %d: client %d dropped: %s", round, client, e)
                rejected[client] = str(e)
                continue
            vouchers.append(voucher)
            if total is None:
                total = _Sum(vectors, 1)
                continue
            for acc, v in zip(total.vectors, vectors, strict=True):
                acc.add_(v)
            total.count += 1
        if seen == 0:
            raise ValueError("aggregate() needs at least one message")
        if total is None:
            raise CiphertextError(f"round {round}: every message was rejected")
        return Envelope(
            kind=MessageKind.AGGREGATE,
            scheme=self._scheme.code,
            key_id=self.key_id,
            round=round,
            sender=SERVER,
            count=total.count,
            chunks=tuple(v.serialize() for v in total.vectors),
            vouchers=tuple(vouchers),
        ).to_bytes()

    def _check(
        self, client: int, data: bytes, *, round: int, chunks: int
    ) -> tuple[list[Any], tuple[int, bytes]]:
        """One client's loaded ciphertexts and its (sealed) voucher, or CiphertextError."""
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
        return vectors, env.vouchers[0]


__all__ = ["ClientEncryptor", "HEServer"]
