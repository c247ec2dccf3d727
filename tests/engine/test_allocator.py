"""glibc malloc settings (privfl.engine.allocator): round-sized buffers come from the heap and
stay there, so a round does not pay page faults for memory the previous round freed."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

glibc = platform.libc_ver()[0] == "glibc"

_PROBE = """
import ctypes, os, sys
import torch
from privfl.engine.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
tuned = keep_freed_memory()
x = torch.empty(64 << 18)  # 64 MiB, past glibc's default mmap thresholds
x.fill_(1.0)
mapped = libc.mallinfo2().hblkhd  # bytes in mmap'ed blocks
del x
kept = libc.mallinfo2().fordblks  # free bytes kept in the heap
print(tuned, mapped, kept)
"""


def _probe(tuning: str) -> tuple[bool, int, int]:
    env = {"PRIVFL_MALLOC_TUNING": tuning, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


@pytest.mark.skipif(not glibc, reason="mallopt is glibc's")
def test_tuned_process_serves_a_large_block_from_the_heap_and_keeps_it_freed():
    tuned, mapped, kept = _probe("1")
    assert tuned
    assert mapped < (64 << 20)  # not an mmap'ed block
    assert kept >= (64 << 20)  # freed, but still in the process for the next round


@pytest.mark.skipif(not glibc, reason="mallopt is glibc's")
def test_opting_out_leaves_glibc_defaults():
    tuned, mapped, kept = _probe("0")
    assert not tuned
    assert mapped >= (64 << 20)  # glibc's default: a fresh mapping, unmapped when freed
