"""What an HE scheme must provide to aggregate updates: contexts, encoding with a headroom
check, one ciphertext's encryption, loading and decryption, and decoding of the decrypted sum.

The parties (:mod:`privfl.defenses.he.parties`, :mod:`privfl.defenses.he.keys`) are written
once against this interface; :class:`privfl.defenses.he.ckks.CKKSScheme` implements it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi

from privfl.defenses.he.envelope import SchemeCode
from privfl.update import UpdateBatch


@dataclass(frozen=True)
class Decoded:
    """The key holder's result: all that leaves it.

    Attributes:
        delta: float32 ``(dim,)``, the weighted mean of the cohort's updates.
        total_weight: the sum of the cohort's weights.
        grid: the step the decrypted sums were rounded to before anything left the key holder
            (CKKS: a power of two at least twice their noise bound), or None where decryption
            is exact (BFV).
        contributors: the clients whose authenticated updates the sum holds, int64, sorted.
    """

    delta: np.ndarray
    total_weight: float
    grid: float | None = None
    contributors: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


#: A client's random stream (stochastic rounding), from its client id.
ClientRng = Callable[[int], np.random.Generator]


@dataclass
class Encoding:
    """A cohort's encoded updates, ready to encrypt.

    Attributes:
        rows: each client's chunks, shape ``(chunks, slots)``, in batch order (lazy: one
            client's chunks in memory at a time).
        info: figures for the round's metrics (e.g. how many values were clipped).
    """

    rows: Iterator[np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


class HEScheme(ABC):
    """One HE scheme with fixed parameters. Holds no key: contexts are passed in."""

    code: SchemeCode
    #: values per ciphertext
    slots: int

    @abstractmethod
    def create_context(self) -> ts.Context:
        """A new private context (secret key, public key); only the key holder calls this."""

    @abstractmethod
    def encode(self, batch: UpdateBatch, rng: ClientRng) -> Encoding:
        """The cohort's chunks to encrypt. First raises
        :class:`~privfl.defenses.he.errors.HeadroomError` when the sum of the cohort's
        encodings could overflow or exhaust the noise budget: each client checks its own
        row, knowing only the cohort size ``len(batch)``."""

    @abstractmethod
    def vector(self, context: ts.Context, values: np.ndarray) -> Any:
        """Encrypt one chunk (shape ``(slots,)``) under ``context``'s public key: a TenSEAL
        vector of one ciphertext."""

    def encrypt(self, context: ts.Context, values: np.ndarray) -> bytes:
        """Encrypt one chunk (shape ``(slots,)``) under ``context``'s public key; serialized."""
        return self.vector(context, values).serialize()

    @abstractmethod
    def check_plaintext(
        self, seal: sealapi.SEALContext, parms_id: list[int], rng: np.random.Generator
    ) -> sealapi.Plaintext:
        """A secret random plaintext polynomial ``s_r`` drawn from ``rng``, ready for SEAL's
        ``multiply_plain`` with a fresh ciphertext at ``parms_id`` (see
        :mod:`privfl.defenses.he.check`)."""

    @abstractmethod
    def load(self, context: ts.Context, data: bytes, where: str) -> Any:
        """Deserialize one ciphertext; raise
        :class:`~privfl.defenses.he.errors.CiphertextError` naming ``where`` when it is not a
        valid ciphertext of these parameters."""

    @abstractmethod
    def decrypt(self, vector: Any) -> np.ndarray:
        """Decrypt one loaded ciphertext with its (private) context, shape ``(slots,)``
        (float64 for CKKS, int64 for BFV)."""

    @abstractmethod
    def decode(self, flat: np.ndarray, dim: int, count: int) -> Decoded:
        """The weighted mean from the decrypted sum of ``count`` clients' chunks, concatenated
        to shape ``(chunks * slots,)``; raises
        :class:`~privfl.defenses.he.errors.CiphertextError` when the sum cannot be one."""

    @abstractmethod
    def describe(self) -> str:
        """The parameters in one line."""


__all__ = ["ClientRng", "Decoded", "Encoding", "HEScheme"]
