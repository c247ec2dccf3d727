"""Matrix products and convolution weight gradients on the CPU library that runs them
fastest on this machine.

PyTorch sends a float32 ``a @ b`` on the CPU to MKL. MKL picks its AVX-512 kernels on Intel
CPUs only: on AMD CPUs with AVX-512 it runs its AVX2 code. oneDNN (which PyTorch's CPU
convolutions already use) runs AVX-512 on any vendor's CPU. How much that is worth depends on
the core:

- **Zen 5** (AMD family 0x1A; full-width 512-bit units), two-core EPYC, one thread
  (2026-12-07): MKL 94-111 GFLOP/s, oneDNN 189-248 GFLOP/s on every shape the engines use
  (``(250, 4096) x (4096, 128)``, ``200^3``, ``(1200, 784) x (784, 200)``, ``1024^3``); W2's
  conv2 weight gradient 0.88 ms a client step from oneDNN's fused backward against 1.53 ms
  from the patch product.
- **Zen 4** (family 0x19; AVX-512 on 256-bit units), two-core EPYC (2026-12-07, a later
  session): MKL 92-98, oneDNN 94-107 GFLOP/s on the same shapes, but MKL the faster on the
  products the kernels run with two threads (the server's factored mean 2.0 against 2.4 ms,
  its second layer 0.51 against 0.78 ms; W1's round 11.4 against 12.1 ms, fifteen runs of each
  alternated); W2's round 0.62 s with the fused conv backward against 0.74 s from patches
  (twelve rounds each, alternated), whichever library ran the head.
- Intel CPUs (MKL runs AVX-512) and CPUs without AVX-512 (both libraries run AVX2) keep MKL
  and the patch product, as measured before this module existed (docs/design.md).

So two rules, each made once per process from the CPU's vendor, family and instruction set:
fixed rules rather than timings, so that a run's numbers do not depend on a measurement (the
libraries round differently). :func:`onednn_matmul`: the kernels' shared-weight products on
oneDNN (Zen 5 and later). :func:`fused_conv_weights`: a convolution's weight gradient from
oneDNN's fused backward rather than the patch product (AMD with AVX-512). ``PRIVFL_GEMM``
overrides both (``onednn``: both on oneDNN; ``mkl``: neither).

:func:`linear` and :func:`matmul` are the 2-d products the vectorized kernels route through
here, :func:`addmm` and :func:`bmm_into` write into given (strided) blocks. oneDNN's matmul is
reached through PyTorch only with one shared 2-d weight (``torch.ops.mkldnn._linear_pointwise``,
the op PyTorch's own compiler emits for linear layers), so batched products with per-client
matrices stay on ``torch.bmm``, except where each matrix is large enough to pay a call of its
own (:func:`bmm_into`: a client's whole round of a dense layer's update).
"""

from __future__ import annotations

import functools
import os
import platform
import re
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


def _windows_processor() -> tuple[str, int | None]:
    """``(vendor, family)`` from Windows' processor string (``platform.processor()``, e.g.
    ``"AMD64 Family 25 Model 17 Stepping 1, AuthenticAMD"``); ``("", None)`` elsewhere or
    when the string has another shape."""
    if platform.system() != "Windows":
        return "", None
    m = re.fullmatch(r".*\bFamily (\d+)\b.*,\s*(\w+)\s*", platform.processor())
    return (m.group(2), int(m.group(1))) if m else ("", None)


def cpu_vendor() -> str:
    """The CPU's vendor string (``GenuineIntel``, ``AuthenticAMD``, ...; ``""`` if unknown):
    ``/proc/cpuinfo``'s ``vendor_id``, or the vendor at the end of Windows' processor
    string."""
    return cpu_info("vendor_id") or _windows_processor()[0]


def cpu_family() -> int | None:
    """The CPU's family number (``cpu family`` of ``/proc/cpuinfo``, or ``Family N`` of
    Windows' processor string; AMD Zen 4 is 25, Zen 5 26), or None where unknown."""
    family = cpu_info("cpu family")
    return int(family) if family.isdigit() else _windows_processor()[1]


def _amd_avx512(vendor: str, capability: str) -> bool:
    return vendor == "AuthenticAMD" and capability.startswith("AVX512")


def prefers_onednn(vendor: str, capability: str, family: int | None) -> bool:
    """The matmul rule: oneDNN for an AMD CPU with AVX-512 from Zen 5 on (family 26 and later,
    where MKL's AVX2 code runs at half the cores' rate), MKL otherwise (Zen 4, where MKL was
    the faster on the kernels' products; Intel, where MKL runs AVX-512; CPUs without AVX-512;
    other vendors and architectures, unmeasured)."""
    return _amd_avx512(vendor, capability) and family is not None and family >= 26


def prefers_fused_conv_weights(vendor: str, capability: str) -> bool:
    """The convolution rule: a conv's weight gradient from oneDNN's fused backward on AMD
    CPUs with AVX-512 (Zen 4 and Zen 5, measured), from the patch product elsewhere."""
    return _amd_avx512(vendor, capability)


def _forced() -> str:
    forced = os.environ.get(ENV, "").strip().lower()
    if forced not in ("", "mkl", "onednn"):
        raise ValueError(f"{ENV} must be 'mkl' or 'onednn', got {forced!r}")
    return forced


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@functools.cache
def onednn_matmul() -> bool:
    """Whether this process sends the kernels' shared-weight products to oneDNN (see the
    module docstring); ``PRIVFL_GEMM`` overrides."""
    forced = _forced()
    if forced:
        return forced == "onednn" and _onednn_available()
    return _onednn_available() and prefers_onednn(
        cpu_vendor(), torch.backends.cpu.get_cpu_capability(), cpu_family()
    )


@functools.cache
def fused_conv_weights() -> bool:
    """Whether the batched CNN kernel takes a convolution's weight gradient from oneDNN's
    fused backward (True) or as the product of its patches (False); ``PRIVFL_GEMM``
    overrides (``onednn``: fused, ``mkl``: patches)."""
    forced = _forced()
    if forced:
        return forced == "onednn"
    return prefers_fused_conv_weights(cpu_vendor(), torch.backends.cpu.get_cpu_capability())


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
    "cpu_family",
    "cpu_info",
    "cpu_vendor",
    "fused_conv_weights",
    "linear",
    "matmul",
    "onednn_matmul",
    "prefers_fused_conv_weights",
    "prefers_onednn",
]
