"""The key holder: the one party with the secret key. It creates the context, publishes a
public copy as bytes, enrols clients, and decrypts only a checked aggregate, once a round.

Trust: TenSEAL has no threshold (multi-party) decryption, so this is a single party. It can
decrypt any ciphertext it is given: if it colluded with the server, which holds every
client's ciphertext, the pair would read every individual update. The protection therefore
rests on the key holder being independent of the server and decrypting nothing but a true
sum. What it checks, without ever receiving an individual ciphertext
(:mod:`privfl.defenses.he.check`): the message is this round's aggregate under this key; it
carries the vouchers of at least ``min_clients`` distinct clients, each sealed for this round
with a key only that client and the key holder hold; and the aggregate's secret sketch is the
sum of theirs, so it is the sum of exactly those clients' ciphertexts. It decrypts at most one
aggregate a round (two would give the server a difference), and rounds every decrypted value
to a grid above the CKKS noise before it leaves (the noise is a function of the secret key;
Li and Micciancio, Eurocrypt 2021). Multi-key or threshold CKKS (e.g. Mouchet et al., PETS
2021, as in Lattigo) would remove the single point of trust; TenSEAL does not implement it.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import tenseal as ts

from privfl.defenses.he.check import (
    KEY_BYTES,
    POLYS,
    ClientKeys,
    RoundCheck,
    derive_voucher_key,
    open_voucher,
)
from privfl.defenses.he.config import DEFAULT_MIN_CLIENTS
from privfl.defenses.he.envelope import MessageKind, key_id, read_envelope
from privfl.defenses.he.errors import CiphertextError, TooFewClientsError, VoucherError
from privfl.defenses.he.packing import chunk_count
from privfl.defenses.he.scheme import Decoded, HEScheme
from privfl.errors import PrivflError

log = logging.getLogger(__name__)


def load_public_context(data: bytes) -> ts.Context:
    """A context from the key holder's published bytes, refused if it holds a secret key."""
    try:
        context = ts.context_from(data)
    except (ValueError, RuntimeError) as e:
        raise PrivflError(f"not a serialized TenSEAL context: {e}") from None
    if context.is_private() or context.has_secret_key():
        raise PrivflError("the published context holds a secret key; only public ones may leave")
    return context


class KeyHolder:
    """The designated decryptor (a party separate from the server).

    Args:
        scheme: the HE scheme and its parameters.
        min_clients: the fewest distinct authenticated clients an aggregate must sum for the
            key holder to decrypt it (an "aggregate" of one client is that client's update).

    Attributes:
        public_context: the serialized public context (public key, parameters, no secret
            key, no relinearization or Galois keys: aggregation needs neither).
        key_id: the identifier messages under this key carry.
    """

    def __init__(self, scheme: HEScheme, *, min_clients: int = DEFAULT_MIN_CLIENTS) -> None:
        if min_clients < 1:
            raise PrivflError(f"min_clients must be >= 1, got {min_clients}")
        self._scheme = scheme
        self.min_clients = min_clients
        self._context = scheme.create_context()
        public = self._context.copy()
        public.make_context_public(generate_galois_keys=False, generate_relin_keys=False)
        self.public_context: bytes = public.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        self.key_id = key_id(self.public_context)
        # Fresh secrets from the OS, like the HE key (never from the run's seed).
        self._voucher_master = os.urandom(KEY_BYTES)
        self._check_key = os.urandom(KEY_BYTES)
        self._closed: set[int] = set()  # rounds decrypted, or refused for a forged sum
        log.debug(
            "key holder: %s; public context %d bytes", scheme.describe(), len(self.public_context)
        )

    def enrol(self, client: int) -> ClientKeys:
        """``client``'s keys: its voucher key and the clients' check key. Sent to that client
        only, over a channel the server cannot read (the simulation hands them over)."""
        return ClientKeys(
            int(client), derive_voucher_key(self._voucher_master, int(client)), self._check_key
        )

    def decrypt(self, message: bytes, *, round: int, dim: int, count: int | None = None) -> Decoded:
        """Check the server's aggregate, decrypt it and return the weighted mean.

        Args:
            message: the server's aggregate message (an envelope with the clients' vouchers).
            round: the current round; a message of another round is refused, and so is any
                aggregate after one of this round was decrypted.
            dim: values in one update.
            count: if given, the number of clients the caller expects the aggregate to sum
                (a consistency check only: the vouchers are what the key holder trusts).
        Raises:
            VoucherError: vouchers that do not open (nothing decrypted, the round stays open:
                the server may send the sum without those clients).
            TooFewClientsError: fewer than ``min_clients`` clients.
            CiphertextError: the message is not this round's aggregate under this key, it is
                not the sum of the clients it names (the round is then closed), a round
                already decrypted, or it decrypts to something no honest sum can be.
        """
        if round in self._closed:
            raise CiphertextError(
                f"round {round} was already decrypted (or its aggregate refused as forged): the "
                "key holder decrypts one aggregate a round"
            )
        chunks = chunk_count(dim, self._scheme.slots)
        env = read_envelope(
            message,
            kind=MessageKind.AGGREGATE,
            scheme=self._scheme.code,
            key=self.key_id,
            round=round,
            chunks=chunks,
        )
        if count is not None and env.count != count:
            raise CiphertextError(
                f"aggregate sums {env.count} updates, {count} were sent: the key holder decrypts "
                "only the sum of the whole cohort"
            )
        if env.count < self.min_clients:
            raise TooFewClientsError(
                f"aggregate of {env.count} update(s): the key holder decrypts only sums of at "
                f"least defense.he.min_clients = {self.min_clients}"
            )
        check = RoundCheck(self._scheme, self._context, self._check_key, round)
        sketches, bad = [], {}
        for client, voucher in env.vouchers:
            try:
                sketches.append(
                    open_voucher(
                        derive_voucher_key(self._voucher_master, client),
                        voucher,
                        key_id=self.key_id,
                        round=round,
                        client=client,
                        shape=(chunks, POLYS, check.primes),
                    )
                )
            except CiphertextError as e:
                bad[client] = str(e)
        if bad:
            raise VoucherError(bad)
        clients = np.array(sorted(c for c, _ in env.vouchers), dtype=np.int64)
        vectors = [
            self._scheme.load(self._context, data, f"aggregate {j}")
            for j, data in enumerate(env.chunks)
        ]
        try:
            got = np.stack([check.sketch(v, f"aggregate {j}") for j, v in enumerate(vectors)])
        except CiphertextError:
            self._closed.add(round)
            raise
        if not np.array_equal(got, check.total(sketches)):
            self._closed.add(round)
            raise CiphertextError(
                f"round {round}: the aggregate is not the sum of the ciphertexts of the "
                f"{env.count} clients it names ({clients.tolist()}); nothing of this round will "
                "be decrypted"
            )
        self._closed.add(round)
        flat = np.concatenate([self._scheme.decrypt(v) for v in vectors])
        decoded = self._scheme.decode(flat, dim, env.count)
        return dataclasses.replace(decoded, contributors=clients)


__all__ = ["KeyHolder", "load_public_context"]
