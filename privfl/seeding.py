"""Named, reproducible random streams derived from one root seed.

Every random draw in privfl comes from a generator derived from ``(root_seed, *path)``,
for example ``("sample", round)`` or ``("client", round, client_id)``. A stream depends only
on its path, never on how many draws other streams made before it, so a run is the same
whatever the order clients are trained in, and a resumed run needs no saved RNG state.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

PathPart = int | str


def _encode(part: PathPart) -> bytes:
    if isinstance(part, bool) or not isinstance(part, int | str):
        raise TypeError(f"seed path parts must be int or str, got {part!r}")
    if isinstance(part, int):
        if part < 0:
            raise ValueError(f"seed path ints must be >= 0, got {part}")
        return b"i" + str(part).encode() + b";"
    return b"s" + str(len(part.encode())).encode() + b":" + part.encode() + b";"


def derive_seed(root: int, *path: PathPart) -> int:
    """A 63-bit seed for the stream named ``path`` under ``root``.

    The seed is BLAKE2b of an unambiguous encoding of ``(root, *path)`` (type-tagged,
    length-prefixed), so distinct paths never share an encoding and ``1`` differs from
    ``"1"``. Python's ``hash()`` is not used: it is salted per process.
    """
    data = _encode(root) + b"|" + b"".join(_encode(p) for p in path)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def numpy_rng(root: int, *path: PathPart) -> np.random.Generator:
    """A numpy Generator for the stream ``path`` under ``root``."""
    return np.random.default_rng(derive_seed(root, *path))


def torch_generator(root: int, *path: PathPart) -> torch.Generator:
    """A CPU torch.Generator for the stream ``path`` under ``root``."""
    g = torch.Generator()
    g.manual_seed(derive_seed(root, *path))
    return g


__all__ = ["derive_seed", "numpy_rng", "torch_generator"]
