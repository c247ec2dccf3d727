"""Matrix products on the CPU library that runs them fastest on this machine.

PyTorch sends a float32 ``a @ b`` on the CPU to MKL. MKL picks its AVX-512 kernels on Intel
CPUs only: on AMD CPUs with AVX-512 (Zen 4 and later) it runs its AVX2 code, at half the
rate the cores can reach. oneDNN (which PyTorch's CPU convolutions already use) runs AVX-512
on any vendor's CPU. Measured on a two-core AMD EPYC with AVX-512 (2026-12-07), one thread:
MKL 94-111 GFLOP/s, oneDNN 189-248 GFLOP/s, on every shape the engines use (``(250, 4096) x
(4096, 128)``, ``200^3``, ``(1200, 784) x (784, 200)``, ``1024^3``). On a two-core EPYC
measured earlier (docs/design.md, issue 22) MKL was the faster (W1's window product 2.2
against 2.6 ms on oneDNN); both libraries' rates there, ~95 GFLOP/s a core at best, fit a CPU
without AVX-512, where both run AVX2. So the choice is made per CPU, once per process, from
the CPU's vendor and instruction set: a fixed rule rather than a timing, so that a run's
numbers do not depend on a measurement (the two libraries round differently). The rule was
measured on Zen 5 only: Zen 4 runs AVX-512 on 256-bit units, where oneDNN's margin over MKL's
AVX2 may be small or none; ``PRIVFL_GEMM`` overrides it.

:func:`onednn_matmul` decides; :func:`linear` and :func:`matmul` are the 2-d products the
vectorized kernels route through here, :func:`addmm` and :func:`bmm_into` write into given
(strided) blocks. oneDNN's matmul is reached through PyTorch only with one shared 2-d weight
(``torch.ops.mkldnn._linear_pointwise``, the op PyTorch's own compiler emits for linear
layers), so batched products with per-client matrices stay on ``torch.bmm``, except where
each matrix is large enough to pay a call of its own (:func:`bmm_into`: a client's whole
round of a dense layer's update).
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

#: ``PRIVFL_GEMM=mkl|onednn`` overrides the rule (benchmarks and tests of both paths).
ENV = "PRIVFL_GEMM"


def cpu_info(field: str) -> str:
    """The first ``field`` of Linux's ``/proc/cpuinfo`` (``vendor_id``, ``model name``, ...);
    ``""`` where there is no such file or field."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_vendor() -> str:
    """The CPU's vendor string (``GenuineIntel``, ``AuthenticAMD``, ...; ``""`` if unknown)."""
    vendor = cpu_info("vendor_id")
    if not vendor and platform.system() == "Windows":
        return platform.processor()
    return vendor


def prefers_onednn(vendor: str, capability: str) -> bool:
    """The rule: oneDNN for a non-Intel x86 CPU with AVX-512 (where MKL runs AVX2), MKL
    otherwise (Intel CPUs, where MKL runs AVX-512 and was faster; CPUs without AVX-512, where
    both run AVX2; other architectures)."""
    return capability.startswith("AVX512") and vendor not in ("GenuineIntel", "")


@functools.cache
def onednn_matmul() -> bool:
    """Whether this process sends the kernels' shared-weight products to oneDNN (see the
    module docstring); ``PRIVFL_GEMM`` overrides."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced not in ("", "mkl", "onednn"):
        raise ValueError(f"{ENV} must be 'mkl' or 'onednn', got {forced!r}")
    available = torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_linear_pointwise"
    )
    if forced:
        return forced == "onednn" and available
    return available and prefers_onednn(cpu_vendor(), torch.backends.cpu.get_cpu_capability())


def _on_onednn(a: torch.Tensor, w: torch.Tensor, onednn: bool | None) -> bool:
    """Whether ``a @ w.T`` goes to oneDNN: asked for (or the rule's choice), float32 on the
    CPU, and no empty axis (oneDNN refuses an inner size of 0, where torch returns zeros)."""
    use = onednn_matmul() if onednn is None else onednn
    return (
        use
        and a.device.type == "cpu"
        and a.dtype == w.dtype == torch.float32
        and a.numel() > 0
        and w.numel() > 0
    )


def linear(
    a: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    onednn: bool | None = None,
) -> torch.Tensor:
    """``a @ w.T (+ bias)`` for a 2-d ``a`` ``(m, k)`` and ``w`` ``(n, k)`` (any strides),
    on oneDNN where :func:`onednn_matmul` says so (``onednn`` overrides), else on
    ``torch.mm``/``torch.addmm``."""
    if _on_onednn(a, w, onednn):
        return torch.ops.mkldnn._linear_pointwise(a, w, bias, "none", [], "")
    return a @ w.t() if bias is None else torch.addmm(bias, a, w.t())


def matmul(a: torch.Tensor, b: torch.Tensor, *, onednn: bool | None = None) -> torch.Tensor:
    """``a @ b`` for 2-d ``a`` ``(m, k)`` and ``b`` ``(k, n)``, as :func:`linear`."""
    return linear(a, b.t(), onednn=onednn)


def addmm(
    out: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    alpha: float = 1.0,
    accumulate: bool = False,
    onednn: bool | None = None,
) -> torch.Tensor:
    """``out = alpha * a @ b`` (``out += alpha * a @ b`` with ``accumulate``) for 2-d
    tensors, ``out`` any strides; the product as :func:`matmul`. Returns ``out``."""
    if not _on_onednn(a, b, onednn):
        return torch.addmm(out, a, b, beta=1.0 if accumulate else 0.0, alpha=alpha, out=out)
    product = matmul(a, b, onednn=True)
    if accumulate:
        return out.add_(product, alpha=alpha)
    return torch.mul(product, alpha, out=out)


def bmm_into(
    out: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    alpha: float = 1.0,
    accumulate: bool = False,
    onednn: bool | None = None,
) -> torch.Tensor:
    """``out[i] = alpha * a[i] @ b[i]`` (``+=`` with ``accumulate``) for 3-d tensors, ``out``
    any strides: one ``torch.baddbmm`` on MKL, or one :func:`addmm` per matrix on oneDNN
    (worth its per-call cost where each product is large, as a client's whole-round update
    of a dense layer: W2's ``(128 x 50) @ (50 x 4096)`` took 0.26 against 0.66 ms a client).
    Returns ``out``."""
    if not _on_onednn(a, b, onednn):
        beta = 1.0 if accumulate else 0.0
        return torch.baddbmm(out, a, b, beta=beta, alpha=alpha, out=out)
    for i in range(len(out)):
        addmm(out[i], a[i], b[i], alpha=alpha, accumulate=accumulate, onednn=True)
    return out


__all__ = [
    "addmm",
    "bmm_into",
    "cpu_info",
    "cpu_vendor",
    "linear",
    "matmul",
    "onednn_matmul",
    "prefers_onednn",
]
