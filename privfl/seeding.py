"""Named, reproducible random streams derived from one root seed, and the secure source.

Every random draw in privfl comes from a generator derived from ``(root_seed, *path)``,
for example ``("sample", round)`` or ``("client", round, client_id)``. A stream depends only
on its path, never on how many draws other streams made before it, so a run is the same
whatever the order clients are trained in, and a resumed run needs no saved RNG state.

Those streams are reproducible by anyone who holds the seed (it is written to the run's
``config.toml``), which is what research wants and what a privacy mechanism must not have:
whoever can regenerate DP noise can subtract it. :func:`secure_uniform` and
:func:`secure_normal` draw from the operating system's cryptographically secure generator
instead (``os.urandom``), fresh bits on every call; ``[defense.dp] secure_rng = true`` takes
the DP noise, the Poisson cohorts of central DP and the lots of DP-SGD from them.
"""

from __future__ import annotations

import hashlib
import math
import os

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

    The same path gives the same seed in every process, on every machine:

    >>> derive_seed(0, "client", 1)
    3909708175860193745
    >>> derive_seed(0, "client", 1) == derive_seed(0, "client", "1")
    False
    >>> derive_seed(0, "client", 1) == derive_seed(1, "client", 1)  # another root seed
    False
    """
    return _seed_of(_path_bytes(root, path))


def _path_bytes(root: int, path: tuple[PathPart, ...]) -> bytes:
    return _encode(root) + b"|" + b"".join(_encode(p) for p in path)


def _seed_of(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def derive_seeds(root: int, *path: PathPart, last: list[int]) -> list[int]:
    """``[derive_seed(root, *path, i) for i in last]``, the common prefix encoded once (a
    cohort's per-client streams, drawn every round).

    >>> derive_seeds(0, "client", last=[1, 2]) == [derive_seed(0, "client", i) for i in (1, 2)]
    True
    """
    prefix = _path_bytes(root, path)
    return [_seed_of(prefix + _encode(i)) for i in last]


def numpy_rng(root: int, *path: PathPart) -> np.random.Generator:
    """A numpy Generator for the stream ``path`` under ``root``.

    A stream depends on its path only, not on the draws other streams made before it:

    >>> first = numpy_rng(0, "client", 1, 7).integers(0, 100, size=3)
    >>> _ = numpy_rng(0, "client", 1, 6).integers(0, 100, size=1000)  # another client's draws
    >>> again = numpy_rng(0, "client", 1, 7).integers(0, 100, size=3)
    >>> bool((first == again).all())
    True
    """
    return np.random.default_rng(derive_seed(root, *path))


def torch_generator(root: int, *path: PathPart) -> torch.Generator:
    """A CPU torch.Generator for the stream ``path`` under ``root``.

    >>> a = torch.randn(4, generator=torch_generator(0, "noise", 3))
    >>> b = torch.randn(4, generator=torch_generator(0, "noise", 3))
    >>> torch.equal(a, b), torch.equal(a, torch.randn(4, generator=torch_generator(0, "noise", 4)))
    (True, False)
    """
    g = torch.Generator()
    g.manual_seed(derive_seed(root, *path))
    return g


def secure_uniform(size: int | tuple[int, ...]) -> np.ndarray:
    """Uniform float64 values in ``[0, 1)`` from the OS's cryptographically secure generator.

    Each value is ``k / 2^53`` for ``k`` the top 53 bits of 8 bytes of ``os.urandom``, so every
    value of the 53-bit grid is equally likely (the resolution of a float64 mantissa). No seed
    exists: nothing about the draws follows from the config, and every call is independent.

    >>> u = secure_uniform((2, 3))
    >>> u.shape, u.dtype, bool(((0 <= u) & (u < 1)).all())
    ((2, 3), dtype('float64'), True)
    >>> bool((secure_uniform(8) == secure_uniform(8)).all())  # no seed: two calls differ
    False
    """
    shape = (size,) if isinstance(size, int) else tuple(size)
    count = math.prod(shape)
    bits = np.frombuffer(os.urandom(8 * count), dtype=np.uint64) >> np.uint64(11)
    return (bits.astype(np.float64) * 2.0**-53).reshape(shape)


def secure_normal(size: int | tuple[int, ...]) -> torch.Tensor:
    """Standard normal float64 values from the OS's cryptographically secure generator.

    Box-Muller (Box and Muller 1958) on :func:`secure_uniform` draws, hardened as Opacus'
    ``secure_mode`` hardens its Gaussian noise: each value is the sum of four independent
    standard normals divided by 2 (still exactly N(0, 1)), which defeats the floating-point
    attacks on a single Gaussian sample (Holohan and Braghin 2021, "Secure random sampling in
    differential privacy", arXiv 2107.10138, Sec. 5.1 with n = 2; Haney et al. 2022, arXiv
    2112.05307, the attack on Opacus). Four normals a value, from 32 bytes of the OS: tens of
    times slower than a seeded ``randn``.

    Args:
        size: the shape of the result.
    Returns:
        float64 tensor of that shape.
    """
    shape = (size,) if isinstance(size, int) else tuple(size)
    count = math.prod(shape)
    pairs = -(-4 * count // 2)  # Box-Muller gives two normals per pair of uniforms
    u = secure_uniform((2, pairs))
    radius = np.sqrt(-2.0 * np.log1p(-u[0]))  # 1 - u in (0, 1]: log is finite
    angle = 2.0 * math.pi * u[1]
    z = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[: 4 * count]
    return torch.from_numpy(z.reshape(4, count).sum(axis=0) / 2.0).reshape(shape)


__all__ = ["derive_seed", "numpy_rng", "secure_normal", "secure_uniform", "torch_generator"]
