"""Where a run computes: ``[federation] device``.

Local training (both in-process engines, their kernels, DP-SGD's clipping and noise), the
evaluation of the global model and the attacks' optimisations run on the run's device. What
travels between clients and server stays on the CPU as flat float32 vectors: the engines hand
the cohort's updates back as one ``(clients, dim)`` host tensor per round, so aggregation,
central DP, secure aggregation (integer masks, ``cryptography``), HE (TenSEAL) and the ledger
are the CPU code they always were, and a round moves ``clients x dim`` floats off the device
once. See docs/design.md, "Devices".
"""

from __future__ import annotations

import re

import torch

from privfl.errors import ConfigError
from privfl.seeding import derive_seed

#: The values ``[federation] device`` accepts.
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def resolve_device(name: str) -> torch.device:
    """The torch device ``[federation] device = name`` means on this machine.

    ``auto``: the first CUDA device when ``torch.cuda.is_available()``, else the CPU.
    ``cuda`` / ``cuda:N`` on a machine without that device is a :class:`ConfigError` (the CLI
    exits 2 with its one line), never a silent run on the CPU.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if not DEVICE_PATTERN.match(name):
        raise ConfigError(
            f"federation.device = {name!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"federation.device = {name!r}: this machine has no CUDA device "
            f"(torch {torch.__version__}, torch.cuda.is_available() is False); "
            "use 'cpu' or 'auto'"
        )
    device = torch.device(name)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"federation.device = {name!r}: this machine has {count} CUDA device(s), "
            f"cuda:0 to cuda:{count - 1}"
        )
    return device


def generator_on(device: torch.device, generator: torch.Generator) -> torch.Generator:
    """A generator for sampling on ``device`` that follows from ``generator``'s stream.

    On the CPU it is ``generator`` itself. On a GPU (whose kernels take only a generator of
    their own device) it is a device generator seeded from ``generator``'s seed
    (``initial_seed``, the stream's own, e.g. ``(seed, "client", round, client)``) without
    drawing from it, so a run's device-side noise is as reproducible from its seed as the
    CPU's, though not the same numbers, and the CPU stream's own draws (DP-SGD's Poisson lots)
    are the CPU run's. (A first draw off the stream shifted every lot: a GPU run then trained
    other examples than the CPU run.)
    """
    if device.type == "cpu":
        return generator
    seed = derive_seed(generator.initial_seed(), "device", device.type)
    return torch.Generator(device=device).manual_seed(seed)


__all__ = ["DEVICE_PATTERN", "generator_on", "resolve_device"]
