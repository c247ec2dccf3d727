"""glibc malloc settings that keep a run's round-sized buffers in the process.

A round allocates and frees the same large buffers every time (the cohort's gathered inputs,
its ``(c, dim)`` updates, each client's feature maps). glibc serves blocks past its mmap
threshold (128 KiB, raised to the largest block freed so far) with fresh ``mmap`` calls and
gives freed memory at the top of its heap back to the kernel past the trim threshold, so each
round pays a page fault and a zeroed page for every 4 KiB it touches again: W2's 109 MB of
updates took 50 ms to write fresh against 6 ms reused, and its clients' feature maps paid the
same at every step. Serving all blocks from the heap (``M_MMAP_MAX = 0``) and keeping freed
memory up to 1 GiB keeps them. The cost is a process that holds on to its peak memory.

Called once by every engine on the CPU; ``PRIVFL_MALLOC_TUNING=0`` in the environment leaves
malloc as it is. A no-op off Linux/glibc. Written by hand: ``mallopt`` has no Python binding
(the alternative, preloading jemalloc or tcmalloc as PyTorch's CPU tuning guide suggests,
cannot be done from inside the process).
"""

from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4  # malloc.h
_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Serve every block from glibc's heap (no ``mmap``) and keep up to 1 GiB of freed
    memory there (once per process); True when the settings are in force."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get("PRIVFL_MALLOC_TUNING", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _tuned = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, 32 << 20),
            (_M_MMAP_MAX, 0),
            (_M_TRIM_THRESHOLD, 1 << 30),
            (_M_TOP_PAD, 64 << 20),
        )
    )
    return _tuned


__all__ = ["keep_freed_memory"]
