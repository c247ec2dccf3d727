"""What a run ran on: the record ``environment.json`` keeps in the run folder.

Float results depend on more than the seed: the library versions, and which kernels summed
the numbers (on the CPU, MKL or oneDNN for the vectorized kernels' products:
:mod:`privfl.engine.gemm`; the CPU's instruction set; the device). A run folder records them
so that a researcher who gets other digits on another machine can see why. A resumed run
adds a record for the rounds it runs.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
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


def package_version(package: str, missing: str = "unknown") -> str:
    """The installed version of ``package`` (``missing`` when it is not installed, as when
    run from a source tree without ``pip install``)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return missing


__all__ = ["environment", "package_version"]
