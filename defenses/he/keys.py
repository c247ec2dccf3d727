"""The key holder: the one party with the secret key. It creates the context, publishes a
public copy as bytes, and decrypts only the aggregate the server sends it.

Trust: TenSEAL has no threshold (multi-party) decryption, so this is a single party. It can
decrypt any ciphertext it is given: if it colluded with the server, which holds every
client's ciphertext, the pair would read every individual update. The protection therefore
rests on the key holder being independent of the server and decrypting nothing but the
aggregate of the current round (checked here: kind, round, key and contributor count of the
message). Multi-key or threshold CKKS (e.g. Mouchet et al., PETS 2021, as in Lattigo) would
remove this single point of trust; TenSEAL does not implement it.
"""

from __future__ import annotations

import logging

import numpy as np
import tenseal as ts

from privfl.defenses.he.envelope import MessageKind, key_id, read_envelope
from privfl.defenses.he.errors import CiphertextError, TooFewClientsError
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
        min_clients: the fewest updates an aggregate must sum for the key holder to decrypt
            it (an "aggregate" of one client is that client's update).

    Attributes:
        public_context: the serialized public context (public key, parameters, no secret
            key, no relinearization or Galois keys: aggregation needs neither).
        key_id: the identifier messages under this key carry.
    """

    def __init__(self, scheme: HEScheme, *, min_clients: int = 2) -> None:
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
        log.debug(
            "key holder: %s; public context %d bytes", scheme.describe(), len(self.public_context)
        )

    def decrypt(self, message: bytes, *, round: int, dim: int, count: int) -> Decoded:
        """Decrypt the server's aggregate and return the weighted mean.

        Args:
            message: the server's aggregate message (an envelope).
            round: the current round; a message of another round is refused.
            dim: values in one update.
            count: clients whose updates the aggregate must sum (the cohort that sent).
        Raises:
            CiphertextError: the message is not this round's aggregate of ``count`` updates
                under this key, or it decrypts to something no honest sum can be.
        """
        chunks = chunk_count(dim, self._scheme.slots)
        env = read_envelope(
            message,
            kind=MessageKind.AGGREGATE,
            scheme=self._scheme.code,
            key=self.key_id,
            round=round,
            chunks=chunks,
        )
        if env.count != count:
            raise CiphertextError(
                f"aggregate sums {env.count} updates, {count} were sent: the key holder decrypts "
                "only the sum of the whole cohort"
            )
        if count < self.min_clients:
            raise TooFewClientsError(
                f"aggregate of {count} update(s): the key holder decrypts only sums of at least "
                f"defense.he.min_clients = {self.min_clients}"
            )
        flat = np.concatenate(
            [
                self._scheme.decrypt(self._scheme.load(self._context, data, f"aggregate {j}"))
                for j, data in enumerate(env.chunks)
            ]
        )
        return self._scheme.decode(flat, dim, count)


__all__ = ["KeyHolder", "load_public_context"]
