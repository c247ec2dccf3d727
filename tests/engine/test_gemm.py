"""privfl.engine.gemm: the per-CPU choice of GEMM library, and each product against torch's
own on both libraries (strided inputs and outputs, as the kernels pass them)."""

from __future__ import annotations

import pytest
import torch

from privfl.engine import gemm


@pytest.mark.parametrize(
    ("vendor", "capability", "family", "matmul", "conv"),
    [
        ("AuthenticAMD", "AVX512", 26, True, True),  # Zen 5: MKL's AVX2 at half the rate
        ("AuthenticAMD", "AVX512", 27, True, True),
        ("AuthenticAMD", "AVX512", 25, False, True),  # Zen 4: MKL the faster on products
        ("AuthenticAMD", "AVX512", None, False, True),  # family unknown: MKL
        ("HygonGenuine", "AVX512", 26, False, False),  # unmeasured: as before
        ("GenuineIntel", "AVX512", 6, False, False),  # MKL runs AVX-512 on Intel
        ("AuthenticAMD", "AVX2", 26, False, False),  # both libraries run AVX2
        ("AuthenticAMD", "AVX2", 25, False, False),
        ("GenuineIntel", "AVX2", 6, False, False),
        ("", "AVX512", None, False, False),  # vendor unknown: keep torch's default
        ("", "DEFAULT", None, False, False),
    ],
)
def test_the_rules_pick_onednn_only_where_it_was_measured_faster(
    vendor, capability, family, matmul, conv
):
    assert gemm.prefers_onednn(vendor, capability, family) is matmul
    assert gemm.prefers_fused_conv_weights(vendor, capability) is conv


def _clear() -> None:
    gemm.onednn_matmul.cache_clear()
    gemm.fused_conv_weights.cache_clear()


@pytest.mark.parametrize(("forced", "want"), [("mkl", False), ("onednn", True)])
def test_the_environment_overrides_both_rules(monkeypatch, forced, want):
    try:
        monkeypatch.setenv(gemm.ENV, forced)
        _clear()
        assert gemm.fused_conv_weights() is want
        if want and not torch.backends.mkldnn.is_available():
            pytest.skip("no oneDNN in this torch build")
        assert gemm.onednn_matmul() is want
    finally:
        monkeypatch.undo()
        _clear()


def test_the_environment_refuses_other_values(monkeypatch):
    try:
        monkeypatch.setenv(gemm.ENV, "blas")
        _clear()
        for rule in (gemm.onednn_matmul, gemm.fused_conv_weights):
            with pytest.raises(ValueError, match="PRIVFL_GEMM must be 'mkl' or 'onednn'"):
                rule()
    finally:
        monkeypatch.undo()
        _clear()


def test_without_an_override_the_rules_follow_this_cpu(monkeypatch):
    try:
        monkeypatch.delenv(gemm.ENV, raising=False)
        _clear()
        vendor, cap = gemm.cpu_vendor(), torch.backends.cpu.get_cpu_capability()
        assert gemm.fused_conv_weights() is gemm.prefers_fused_conv_weights(vendor, cap)
        want = gemm.prefers_onednn(vendor, cap, gemm.cpu_family())
        assert gemm.onednn_matmul() is (want and torch.backends.mkldnn.is_available())
    finally:
        monkeypatch.undo()
        _clear()


def _strided(*shape: int) -> torch.Tensor:
    """A float32 tensor of ``shape`` whose last two axes are a transposed view (not
    contiguous), filled from a seeded generator."""
    g = torch.Generator().manual_seed(sum(shape))
    return torch.randn((*shape[:-2], shape[-1], shape[-2]), generator=g).transpose(-1, -2)


@pytest.mark.parametrize("onednn", [False, True])
def test_products_equal_torch_on_both_libraries(onednn):
    if onednn and not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN in this torch build")
    a, w, b = _strided(9, 13), _strided(7, 13), torch.randn(7)
    assert torch.allclose(gemm.linear(a, w, onednn=onednn), a @ w.t(), atol=1e-5)
    assert torch.allclose(gemm.linear(a, w, b, onednn=onednn), a @ w.t() + b, atol=1e-5)
    m = _strided(13, 7)
    assert torch.allclose(gemm.matmul(a, m, onednn=onednn), a @ m, atol=1e-5)
    # addmm into a strided block of a larger tensor, written then accumulated
    big = torch.full((9, 20), 5.0)
    out = big[:, 3:10]
    gemm.addmm(out, a, m, alpha=-0.5, onednn=onednn)
    assert torch.allclose(out, -0.5 * (a @ m), atol=1e-5)
    gemm.addmm(out, a, m, alpha=2.0, accumulate=True, onednn=onednn)
    assert torch.allclose(out, 1.5 * (a @ m), atol=1e-5)
    assert torch.equal(big[:, :3], torch.full((9, 3), 5.0))  # nothing outside the block
    assert torch.equal(big[:, 10:], torch.full((9, 10), 5.0))
    # bmm_into: rows of a (c, dim) tensor, as the engines' deltas
    p, q = _strided(4, 6, 3), _strided(4, 3, 5)
    rows = torch.zeros(4, 40)
    view = rows[:, 2:32].view(4, 6, 5)
    gemm.bmm_into(view, p, q, alpha=0.25, onednn=onednn)
    assert torch.allclose(view, 0.25 * torch.bmm(p, q), atol=1e-5)
    gemm.bmm_into(view, p, q, alpha=-0.25, accumulate=True, onednn=onednn)
    assert torch.allclose(view, torch.zeros(4, 6, 5), atol=1e-5)
    assert torch.equal(rows[:, 32:], torch.zeros(4, 8))


@pytest.mark.parametrize("onednn", [False, True])
def test_empty_products_give_zeros_on_both_libraries(onednn):
    # oneDNN refuses an inner size of 0 (a factored term of rank 0); torch gives zeros
    a, w = torch.randn(3, 0), torch.randn(5, 0)
    assert torch.equal(gemm.linear(a, w, onednn=onednn), torch.zeros(3, 5))
    out = torch.full((5, 3), 7.0)
    gemm.addmm(out, w, a.t(), alpha=2.0, onednn=onednn)
    assert torch.equal(out, torch.zeros(5, 3))
    rows = torch.full((2, 4, 6), 7.0)
    gemm.bmm_into(rows, torch.randn(2, 4, 0), torch.randn(2, 0, 6), onednn=onednn)
    assert torch.equal(rows, torch.zeros(2, 4, 6))
    assert gemm.linear(torch.randn(0, 4), torch.randn(5, 4), onednn=onednn).shape == (0, 5)


def test_cpu_info_reads_proc_cpuinfo_fields():
    import re
    from pathlib import Path

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    for field in ("vendor_id", "model name", "cpu family"):
        m = re.search(rf"^{field}\s*:\s*(.*)$", text, re.M)
        assert gemm.cpu_info(field) == (m.group(1).strip() if m else "")
    assert gemm.cpu_info("no such field") == ""
    assert gemm.cpu_vendor() == gemm.cpu_info("vendor_id") or not text
    family = re.search(r"^cpu family\s*:\s*(\d+)", text, re.M)
    assert gemm.cpu_family() == (int(family.group(1)) if family else None)


@pytest.mark.parametrize(
    ("processor", "vendor", "family"),
    [
        ("AMD64 Family 25 Model 17 Stepping 1, AuthenticAMD", "AuthenticAMD", 25),
        ("AMD64 Family 26 Model 2 Stepping 0, AuthenticAMD", "AuthenticAMD", 26),
        ("Intel64 Family 6 Model 143 Stepping 8, GenuineIntel", "GenuineIntel", 6),
        ("ARMv8 (64-bit) Family 8 Model D4B Revision 0, Qualcomm", "Qualcomm", 8),
        ("", "", None),
        ("some other text", "", None),
    ],
)
def test_windows_processor_string_gives_vendor_and_family(monkeypatch, processor, vendor, family):
    # Windows has no /proc/cpuinfo; its processor string names the vendor after a comma. Before,
    # cpu_vendor() returned the whole string, so neither rule ever recognized an AMD CPU there.
    monkeypatch.setattr(gemm, "cpu_info", lambda field: "")
    monkeypatch.setattr(gemm.platform, "system", lambda: "Windows")
    monkeypatch.setattr(gemm.platform, "processor", lambda: processor)
    assert gemm.cpu_vendor() == vendor
    assert gemm.cpu_family() == family
    amd = vendor == "AuthenticAMD"
    assert gemm.prefers_fused_conv_weights(gemm.cpu_vendor(), "AVX512") == amd
    zen5 = amd and family is not None and family >= 26
    assert gemm.prefers_onednn(gemm.cpu_vendor(), "AVX512", gemm.cpu_family()) == zen5


def test_processor_string_is_not_read_off_windows(monkeypatch):
    monkeypatch.setattr(gemm, "cpu_info", lambda field: "")
    monkeypatch.setattr(gemm.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(gemm.platform, "processor", lambda: "i386 Family 25, AuthenticAMD")
    assert (gemm.cpu_vendor(), gemm.cpu_family()) == ("", None)
