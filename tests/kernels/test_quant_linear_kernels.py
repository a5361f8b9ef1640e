"""QuantLinear's one switch: impl="triton" runs act_quant + w4a4_gemm (interpreted on the CPU) and agrees
with impl="reference" (the simulated path) per the kernel tolerance rule."""

import pytest
import torch

from quota.quant.hadamard import apply_block_hadamard
from quota.quant.modules import QuantLinear
from quota.quant.quantizers import quantize_weight_rtn
from tests.kernels.kernel_checks import DEVICE


@pytest.mark.parametrize("m,k,n,block", [(3, 96, 40, None), (17, 160, 72, 32)])
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
