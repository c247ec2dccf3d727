"""The mask generator: AES-256-CTR keyed with the full 256-bit seed.

``PRG(seed)`` is the AES-256-CTR keystream under key ``seed`` with the 128-bit counter block
starting at zero, read as little-endian unsigned integers (uint32 for rings up to 2^32, uint64
above). Every seed is used for one stream only (each is freshly derived per round and pair,
or drawn fresh per round), so the fixed counter start never repeats a keystream. Uniform
32/64-bit words reduced modulo ``2^k`` are uniform in ``Z_{2^k}``.

Notes:
    Flower's SecAgg+ (``secaggplus_utils.py::pseudo_rand_gen``) XOR-folds the agreed key to a
    32-bit seed of ``np.random.RandomState``: a server can brute-force 2^32 seeds against a
    masked vector. Here the whole 32-byte seed is the AES key, and the output is AES's (a PRP
    in counter mode), so recovering a mask means breaking AES-256.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from privfl.defenses.secagg.constants import SEED_BYTES

_BLOCK = 16
_ZERO_COUNTER = bytes(_BLOCK)


def _check_seed(seed: bytes) -> None:
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed is {SEED_BYTES} bytes (256 bits), got {len(seed)}")


def prg(seed: bytes, length: int, dtype: np.dtype | type = np.uint32) -> np.ndarray:
    """``length`` pseudorandom unsigned integers of ``dtype`` (uint32 or uint64) from the
    32-byte ``seed``: the AES-256-CTR keystream, counter from 0, little-endian words."""
    _check_seed(seed)
    dt = np.dtype(dtype).newbyteorder("<")
    enc = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_COUNTER)).encryptor()
    stream = enc.update(bytes(length * dt.itemsize)) + enc.finalize()
    return np.frombuffer(stream, dtype=dt).astype(np.dtype(dtype), copy=False)


class MaskExpander:
    """Adds or subtracts ``PRG(seed)`` into accumulators of one length without allocating:
    the keystream is written into a reusable buffer (``update_into``) and added in place with
    wrap-around (arithmetic modulo 2^32 or 2^64, which is exact modulo any ``2^k`` below).

    Args:
        length: words per mask.
        dtype: uint32 or uint64.
    """

    def __init__(self, length: int, dtype: np.dtype | type = np.uint32) -> None:
        self.length = length
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.uint32), np.dtype(np.uint64)):
            raise ValueError(f"masks are uint32 or uint64, got {self.dtype}")
        nbytes = length * self.dtype.itemsize
        self._zeros = bytes(nbytes)
        self._buf = np.empty(nbytes + _BLOCK - 1, dtype=np.uint8)
        self._words = self._buf[:nbytes].view(self.dtype.newbyteorder("<"))

    def expand(self, seed: bytes) -> np.ndarray:
        """``PRG(seed)`` in the internal buffer (valid until the next call)."""
        _check_seed(seed)
        enc = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_COUNTER)).encryptor()
        enc.update_into(self._zeros, self._buf)
        return self._words

    def add(self, acc: np.ndarray, seed: bytes) -> None:
        """``acc += PRG(seed)`` (mod 2^32 or 2^64), in place."""
        np.add(acc, self.expand(seed), out=acc, casting="unsafe")

    def subtract(self, acc: np.ndarray, seed: bytes) -> None:
        """``acc -= PRG(seed)`` (mod 2^32 or 2^64), in place."""
        np.subtract(acc, self.expand(seed), out=acc, casting="unsafe")

    def apply(self, acc: np.ndarray, seed: bytes, sign: int) -> None:
        """``acc += sign * PRG(seed)`` for ``sign`` in ``{+1, -1}``."""
        if sign == 1:
            self.add(acc, seed)
        elif sign == -1:
            self.subtract(acc, seed)
        else:
            raise ValueError(f"sign must be +1 or -1, got {sign}")


def pairwise_sign(owner: int, peer: int) -> int:
    """The sign of the pair mask ``PRG(s_{owner,peer})`` in ``owner``'s masked input: +1 when
    ``owner < peer``, -1 when ``owner > peer``, so the pair's two masks cancel in the sum
    (Bonawitz et al. 2017, Sec. 3: ``p_{u,v} = Delta_{u,v} PRG(s_{u,v})``)."""
    if owner == peer:
        raise ValueError("a client has no pairwise mask with itself")
    return 1 if owner < peer else -1


__all__ = ["MaskExpander", "pairwise_sign", "prg"]
