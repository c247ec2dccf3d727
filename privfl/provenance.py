"""What a run ran on: the record ``environment.json`` keeps in the run folder.

Float results depend on more than the seed: the library versions, and which kernels summed
the numbers (on the CPU, MKL or oneDNN for the vectorized kernels' products:
:mod:`privfl.engine.gemm`; the CPU's instruction set; the device). A run folder records them
so that a researcher who gets other digits on another machine can see why. A resumed run
adds a record for the rounds it runs.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privfl.engine import gemm


def environment(device: torch.device | str, from_round: int) -> dict[str, Any]:
    """This process's versions, CPU, GEMM library and device, for the rounds from
    ``from_round`` on."""
    return {
        "from_round": int(from_round),
        "privfl": package_version("privfl"),
        "source": source_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": {
            "vendor": gemm.cpu_vendor(),
            "family": gemm.cpu_family(),
            "capability": torch.backends.cpu.get_cpu_capability(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "gemm": "onednn" if gemm.onednn_matmul() else "mkl",
        "conv_weights": "onednn" if gemm.fused_conv_weights() else "patches",
        "device": str(device),
    }


@functools.cache
def source_commit() -> str | None:
    """The git commit privfl's code was loaded from (``+dirty`` appended when its tracked
    files differ from it), or None where privfl does not sit at the top of a git checkout (an
    installed copy, even inside another project's tree) or there is no git: the package
    version alone does not tell a run made before a fix from one made after it."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return None
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head or None


def package_version(package: str, missing: str = "unknown") -> str:
    """The installed version of ``package`` (``missing`` when it is not installed, as when
    run from a source tree without ``pip install``)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return missing


__all__ = ["environment", "package_version", "source_commit"]
