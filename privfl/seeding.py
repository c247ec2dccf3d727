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


def _key(part: PathPart) -> int:
    if isinstance(part, bool) or not isinstance(part, int | str):
        raise TypeError(f"seed path parts must be int or str, got {part!r}")
    if isinstance(part, int):
        if part < 0:
            raise ValueError(f"seed path ints must be >= 0, got {part}")
        return part
    # Strings map to a stable 64-bit integer (Python's hash() is salted per process).
    return int.from_bytes(hashlib.blake2b(part.encode(), digest_size=8).digest(), "little")


def derive_seed(root: int, *path: PathPart) -> int:
    """A 63-bit seed for the stream named ``path`` under ``root`` (numpy SeedSequence)."""
    ss = np.random.SeedSequence(entropy=root, spawn_key=tuple(_key(p) for p in path))
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def numpy_rng(root: int, *path: PathPart) -> np.random.Generator:
    """A numpy Generator for the stream ``path`` under ``root``."""
    return np.random.default_rng(derive_seed(root, *path))


def torch_generator(root: int, *path: PathPart) -> torch.Generator:
    """A CPU torch.Generator for the stream ``path`` under ``root``."""
    g = torch.Generator()
    g.manual_seed(derive_seed(root, *path))
    return g


__all__ = ["derive_seed", "numpy_rng", "torch_generator"]
