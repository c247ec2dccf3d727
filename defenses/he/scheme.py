"""What an HE scheme must provide to aggregate updates: contexts, encoding with a headroom
check, one ciphertext's encryption, loading and decryption, and decoding of the decrypted sum.

The parties (:mod:`privfl.defenses.he.parties`, :mod:`privfl.defenses.he.keys`) are written
once against this interface; :class:`privfl.defenses.he.ckks.CKKSScheme` implements it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal as ts

from privfl.defenses.he.envelope import SchemeCode
from privfl.update import UpdateBatch


@dataclass(frozen=True)
class Decoded:
    """The key holder's result.

    Attributes:
        delta: float32 ``(dim,)``, the weighted mean of the cohort's updates.
        total_weight: the sum of the cohort's weights.
    """

    delta: np.ndarray
    total_weight: float


class HEScheme(ABC):
    """One HE scheme with fixed parameters. Holds no key: contexts are passed in."""

    code: SchemeCode
    #: values per ciphertext
    slots: int

    @abstractmethod
    def create_context(self) -> ts.Context:
        """A new private context (secret key, public key); only the key holder calls this."""

    @abstractmethod
    def check_headroom(self, batch: UpdateBatch) -> None:
        """Raise :class:`~privfl.defenses.he.errors.HeadroomError` when the sum of the
        cohort's encoded updates could overflow. Each client checks its own row, knowing only
        the cohort size ``len(batch)``."""

    @abstractmethod
    def encode(self, delta: np.ndarray, weight: float) -> np.ndarray:
        """One client's chunks to encrypt, shape ``(chunks, slots)``."""

    @abstractmethod
    def encrypt(self, context: ts.Context, values: np.ndarray) -> bytes:
        """Encrypt one chunk (shape ``(slots,)``) under ``context``'s public key; serialized."""

    @abstractmethod
    def load(self, context: ts.Context, data: bytes, where: str) -> Any:
        """Deserialize one ciphertext; raise
        :class:`~privfl.defenses.he.errors.CiphertextError` naming ``where`` when it is not a
        valid ciphertext of these parameters."""

    @abstractmethod
    def decrypt(self, vector: Any) -> np.ndarray:
        """Decrypt one loaded ciphertext with its (private) context, shape ``(slots,)``."""

    @abstractmethod
    def decode(self, flat: np.ndarray, dim: int, count: int) -> Decoded:
        """The weighted mean from the decrypted sum of ``count`` clients' chunks, concatenated
        to shape ``(chunks * slots,)``; raises
        :class:`~privfl.defenses.he.errors.CiphertextError` when the sum cannot be one."""

    @abstractmethod
    def describe(self) -> str:
        """The parameters in one line."""


__all__ = ["Decoded", "HEScheme"]
