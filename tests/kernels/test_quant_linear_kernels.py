"""QuantLinear's one switch: impl="triton" runs act_quant + w4a4_gemm (interpreted on the CPU) and agrees
with impl="reference" (the simulated path) per the kernel tolerance rule."""

import pytest
import torch

from quota.quant.hadamard import apply_block_hadamard
from quota.quantize.linear import QuantLinear
from quota.quant.quantizers import quantize_weight_rtn
from tests.kernels.kernel_checks import DEVICE


@pytest.mark.parametrize("m,k,n,block", [(3, 96, 40, None), (17, 160, 72, 32), (2, 96, 40, 32), (9, 96, 40, None)])
def test_triton_path_matches_reference(m, k, n, block):
    g = torch.Generator().manual_seed(m)
    w = torch.randn(n, k, generator=g)
    if block:
        w = apply_block_hadamard(w, block)
    q = quantize_weight_rtn(w, 4)
    bias = torch.randn(n, generator=g)
    ref = QuantLinear.from_quantized(q, bias, a_bits=4, a_clip_ratio=0.9, hadamard_block=block, impl="reference")
    kern = QuantLinear.from_quantized(q, bias, a_bits=4, a_clip_ratio=0.9, hadamard_block=block, impl="triton")
    x = torch.randn(m, k, generator=g).to(DEVICE)
    ref, kern = ref.to(DEVICE), kern.to(DEVICE)
    out_ref, out_kern = ref(x), kern(x)
    assert out_kern.dtype == x.dtype and out_kern.shape == (m, n)
    if block is None:
        # same codes and scales on both paths: the integer product is exact, only the epilogue's float
        # rounding can differ
        torch.testing.assert_close(out_kern, out_ref, rtol=1e-5, atol=1e-5)
    else:
        # the in-kernel Hadamard may move a value across a rounding tie: a code differs by one in rare elements
        rel = (out_kern - out_ref).norm() / out_ref.norm()
        assert rel < 1e-2, float(rel)


def test_auto_uses_reference_on_cpu_tensors():
    if DEVICE != "cpu":
        pytest.skip("CPU-only check")
    q = quantize_weight_rtn(torch.randn(8, 32), 4)
    mod = QuantLinear.from_quantized(q, None, a_bits=4, impl="auto")
    assert not mod._use_triton(torch.randn(2, 32))


def test_linears_reading_one_input_quantize_it_once(monkeypatch):
    """q/k/v (or gate/up) read the same tensor: one activation quantization serves them all when their settings
    agree; another clipping ratio, an in-place change or another tensor with equal values recomputes. The
    outputs equal each module's own quantization."""
    import quota.kernels.act_quant as act_quant
    import quota.quantize.linear as linear

    monkeypatch.setattr(linear, "GEMV_QUANT_IN_MAX_M", 0)  # every size goes through act_quant here
    calls = []
    real = act_quant.quantize_activation_triton
    monkeypatch.setattr(act_quant, "quantize_activation_triton", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    g = torch.Generator().manual_seed(3)
    mods = [QuantLinear.from_quantized(quantize_weight_rtn(torch.randn(n, 64, generator=g), 4), None, a_bits=4,
                                       a_clip_ratio=clip, impl="triton").to(DEVICE)
            for n, clip in ((32, 0.9), (16, 0.9), (16, 0.9), (24, 0.8))]  # fmt: skip
    x = torch.randn(2, 5, 64, generator=g).to(DEVICE)
    outs = [m(x) for m in mods]
    assert calls == [0.9, 0.8]  # the three 0.9 linears shared one quantization
    y = x.clone()
    fresh = [m(y) for m in mods]  # another tensor with equal values: quantized anew, the same outputs
    assert calls == [0.9, 0.8, 0.9, 0.8]
    for a, b in zip(outs, fresh):
        assert torch.equal(a, b)
    x.mul_(2.0)  # an in-place change between two readers
    doubled = mods[0](x)
    assert calls[-1] == 0.9 and len(calls) == 5
    torch.testing.assert_close(doubled, 2 * outs[0], rtol=2e-2, atol=2e-2)
    with torch.inference_mode():  # no version counter to trust: every reader quantizes
        z = torch.randn(3, 64, generator=g).to(DEVICE)
        for m in mods[:2]:
            m(z)
    assert len(calls) == 7


@pytest.mark.parametrize("m,block", [(1, None), (4, None), (7, None), (3, 32)])
def test_decode_rows_take_the_gemv_and_equal_the_reference(monkeypatch, m, block):
    """M <= 16 runs quota.kernels.w4_gemv (in-kernel quantization up to GEMV_QUANT_IN_MAX_M rows without a
    Hadamard, act_quant codes otherwise); without a Hadamard its float32 result equals the reference path's."""
    import quota.kernels.w4_gemv as w4_gemv
    import quota.kernels.w4a4_gemm as w4a4_gemm

    used = []
    for mod, name in ((w4_gemv, "w4_gemv"), (w4_gemv, "w4_gemv_codes"), (w4a4_gemm, "w4a4_matmul")):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _r=real, _n=name, **k: used.append(_n) or _r(*a, **k))
    g = torch.Generator().manual_seed(m)
    w = torch.randn(40, 96, generator=g)
    q = quantize_weight_rtn(apply_block_hadamard(w, block) if block else w, 4)
    bias = torch.randn(40, generator=g)
    ref, kern = (QuantLinear.from_quantized(q, bias, a_bits=4, a_clip_ratio=0.9, hadamard_block=block, impl=impl)
                 .to(DEVICE) for impl in ("reference", "triton"))  # fmt: skip
    x = torch.randn(m, 96, generator=g).to(DEVICE)
    out_ref, out_kern = ref(x), kern(x)
    assert used == ["w4_gemv" if block is None and m <= 4 else "w4_gemv_codes"]
    if block is None:
        assert torch.equal(out_kern, out_ref)
    else:
        assert ((out_kern - out_ref).norm() / out_ref.norm()) < 1e-2
