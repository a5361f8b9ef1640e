"""FP8 e4m3: the per-token quantization kernel is bit-identical to the PyTorch cast (ties, subnormals, the -0 of a
small negative value, all-zero rows, long rows); the W8A8 GEMM (``torch._scaled_mm``, which PyTorch also runs on
the CPU) matches its float64 reference by the tolerance rule at every output dtype."""

import pytest
import torch

from quota.kernels.fp8_gemm import fp8_matmul, fp8_matmul_reference
from quota.kernels.fp8_quant import quantize_fp8_reference, quantize_fp8_triton, quantize_weight_fp8
from tests.kernels.kernel_checks import DEVICE, assert_twice_torch_error, gpu, requires_cuda


def _bits(t):
    return t.view(torch.uint8).cpu()


@pytest.mark.parametrize("m,k", [(37, 128), (3, 96), (2, 2500)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_quantizer_is_bit_identical_to_the_reference(m, k, dtype):
    g = torch.Generator().manual_seed(m + k)
    x = (torch.randn((m, k), generator=g) * torch.logspace(-5, 3, k)).to(dtype)  # subnormal codes included
    x[0] = 0.0  # an all-zero row: scale 1, codes 0
    codes, scale = quantize_fp8_triton(x.to(DEVICE), 0.85)
    ref_codes, ref_scale = quantize_fp8_reference(x, 0.85)
    assert codes.dtype == torch.float8_e4m3fn and codes.shape == (m, k) and scale.shape == (m, 1)
    assert torch.equal(scale.cpu(), ref_scale)
    assert torch.equal(_bits(codes), _bits(ref_codes))


def test_quantizer_rounds_ties_to_even_like_the_cast():
    values = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).float()
    values = values[torch.isfinite(values)].sort().values
    mids = (values[1:] + values[:-1]) / 2  # every tie between neighbouring e4m3 values
    x = torch.cat([torch.tensor([448.0]), mids]).unsqueeze(0)  # absmax 448: scale 1
    codes, scale = quantize_fp8_triton(x.to(DEVICE))
    assert scale.item() == 1.0
    assert torch.equal(_bits(codes), _bits(quantize_fp8_reference(x)[0]))


def test_weight_quantizer_is_per_channel():
    w = torch.randn(24, 64) * torch.arange(1, 25).float()[:, None]
    codes, scale = quantize_weight_fp8(w)
    assert scale.shape == (24, 1) and torch.allclose(scale[:, 0], w.abs().amax(1) / 448)
    assert torch.equal(codes.float().abs().amax(1), torch.full((24,), 448.0))
    rel = ((codes.float() * scale - w).norm() / w.norm()).item()
    assert rel < 0.04  # e4m3: 3 mantissa bits


@pytest.mark.parametrize("m,k,n", [(37, 128, 72), (1, 96, 40), (16, 160, 32)])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fp8_matmul_against_the_reference(m, k, n, out_dtype):
    if DEVICE == "cuda" and (k % 16 or n % 16):
        pytest.skip("torch._scaled_mm on CUDA needs K and N multiples of 16")
    g = torch.Generator().manual_seed(m * k + n)
    a, a_s = quantize_fp8_reference(torch.randn((m, k), generator=g))
    w, w_s = quantize_weight_fp8(torch.randn((n, k), generator=g))
    bias = torch.randn((n,), generator=g)
    on = [t.to(DEVICE) for t in (a, a_s, w, w_s, bias)]
    out = fp8_matmul(*on[:3], on[3].view(-1), on[4], out_dtype=out_dtype)
    ref = fp8_matmul_reference(a, a_s, w, w_s, bias, out_dtype=torch.float64)
    torch_out = ((a.float() * a_s) @ (w.float() * w_s).T + bias).to(out_dtype)
    assert out.dtype == out_dtype and out.shape == (m, n)
    assert_twice_torch_error(out, ref, torch_out)


def test_fp8_matmul_refuses_bad_operands():
    a, a_s = quantize_fp8_reference(torch.randn(4, 32))
    w, w_s = quantize_weight_fp8(torch.randn(8, 32))
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        fp8_matmul(a.float(), a_s, w, w_s)
    with pytest.raises(ValueError, match="w_scale"):
        fp8_matmul(a, a_s, w, w_s[:3])
    with pytest.raises(ValueError, match="out_dtype"):
        fp8_matmul(a, a_s, w, w_s, out_dtype=torch.int32)


@gpu
@requires_cuda
def test_fp8_matmul_on_the_gpu_at_a_model_shape():
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 tensor cores need compute capability 8.9")
    g = torch.Generator().manual_seed(0)
    a, a_s = quantize_fp8_triton(torch.randn((300, 4096), generator=g).cuda())
    w, w_s = quantize_weight_fp8(torch.randn((1024, 4096), generator=g))
    out = fp8_matmul(a, a_s, w.cuda(), w_s.cuda().view(-1), out_dtype=torch.bfloat16)
    ref = fp8_matmul_reference(a.cpu(), a_s.cpu(), w, w_s, out_dtype=torch.float64)
    assert_twice_torch_error(out, ref, ref.to(torch.bfloat16))
