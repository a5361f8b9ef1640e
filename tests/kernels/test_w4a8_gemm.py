"""W4A8 GEMM (int4 weights, FP8 e4m3 or int8 activations) against its float64 reference on odd shapes: the int8
variant's integer part exactly, the FP8 variant by the tolerance rule (float32 accumulation); and the facts the
FP8 path rests on: every int4 value and every int4 x e4m3 product is exact through e4m3, bfloat16 and float32."""

import pytest
import torch

from quota.kernels.fp8_quant import quantize_fp8_reference
from quota.kernels.w4a8_gemm import w4a8_fp8_matmul, w4a8_int8_matmul, w4a8_matmul_reference
from quota.quant.int4 import pack_int4
from tests.kernels.kernel_checks import DEVICE, assert_twice_torch_error, gpu, requires_cuda

SHAPES = [(37, 128, 72), (1, 96, 40), (17, 160, 24)]  # (M, K, N): K = 96 + 32, N not a power of two


def _weights(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    w_scale = torch.rand((n,), generator=g) * 0.02 + 1e-3
    bias = torch.randn((n,), generator=g)
    return pack_int4(w), w_scale, bias


def _int8_acts(m, k, seed):
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8), torch.rand((m, 1), generator=g) * 0.02


def _fp8_acts(m, k, seed):
    g = torch.Generator().manual_seed(seed + 2)
    x = torch.randn((m, k), generator=g) * torch.logspace(-2, 1, k)  # spread exponents: subnormal codes too
    return quantize_fp8_reference(x, 0.9)


def _on(*tensors):
    return [t.to(DEVICE) if t is not None else None for t in tensors]


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_int8_variant_integer_part_is_exact(m, k, n):
    w, _, _ = _weights(n, k, m + k + n)
    a, _ = _int8_acts(m, k, m + k + n)
    ones_a, ones_w = torch.ones(m, 1), torch.ones(n)
    out = w4a8_int8_matmul(*_on(a, ones_a, w, ones_w), out_dtype=torch.float32)
    assert torch.equal(out.cpu().double(), w4a8_matmul_reference(a, ones_a, w, ones_w, out_dtype=torch.float64))


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_epilogue_scales_bias_against_the_reference(m, k, n, fmt):
    w, w_s, bias = _weights(n, k, m * 7 + n)
    a, a_s = _int8_acts(m, k, m) if fmt == "int8" else _fp8_acts(m, k, m)
    kernel = w4a8_int8_matmul if fmt == "int8" else w4a8_fp8_matmul
    out = kernel(*_on(a, a_s, w, w_s, bias), out_dtype=torch.float32)
    ref = w4a8_matmul_reference(a, a_s, w, w_s, bias, out_dtype=torch.float64)
    # plain PyTorch at float32: the dequantized operands multiplied in float32
    from quota.quant.int4 import unpack_int4

    torch_out = (a.float() * a_s) @ (unpack_int4(w).float() * w_s[:, None]).T + bias
    assert_twice_torch_error(out, ref, torch_out)


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
def test_low_precision_outputs(out_dtype):
    m, k, n = 5, 128, 72
    w, w_s, bias = _weights(n, k, 3)
    a, a_s = _fp8_acts(m, k, 3)
    out = w4a8_fp8_matmul(*_on(a, a_s, w, w_s, bias.to(out_dtype)), out_dtype=out_dtype)
    ref = w4a8_matmul_reference(a, a_s, w, w_s, bias, out_dtype=torch.float64)
    assert out.dtype == out_dtype
    assert_twice_torch_error(out, ref, ref.to(out_dtype))


def test_refuses_bad_operands():
    w, w_s, _ = _weights(8, 32, 0)
    a, a_s = _int8_acts(4, 32, 0)
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        w4a8_fp8_matmul(*_on(a, a_s, w, w_s))
    with pytest.raises(ValueError, match=r"a \[M, K\] and w \[N, K/2\]"):
        w4a8_int8_matmul(*_on(a[:, :16], a_s, w, w_s))
    with pytest.raises(ValueError, match="w_scale"):
        w4a8_int8_matmul(*_on(a, a_s, w, w_s[:3]))


def test_int4_values_and_their_products_with_e4m3_and_int8_are_exact():
    """Why the W4A8 paths are exact up to the accumulation: every int4 value survives int8 -> float16 -> e4m3 and
    bfloat16 unchanged; a product of an int4 value and any finite e4m3 value has at most 7 significant bits, exact
    in bfloat16 (8) and float32 (24); a product of an int4 and an int8 value (|p| <= 1024, up to 10 bits) is exact
    in float16 and float32 but not in bfloat16; a sum of 2^9 int4 x int8 products is exact in float32."""
    w = torch.arange(-8, 8, dtype=torch.int8)
    assert torch.equal(w.to(torch.float16).to(torch.float8_e4m3fn).float(), w.float())
    assert torch.equal(w.to(torch.bfloat16).float(), w.float())
    e4m3 = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).double()
    e4m3 = e4m3[torch.isfinite(e4m3)]
    products = w.double()[:, None] * e4m3[None, :]  # [16, 254], exact in float64
    assert torch.equal(products.float().double(), products)
    assert torch.equal(products.to(torch.bfloat16).double(), products)
    int8 = torch.arange(-128, 128).double()
    ints = w.double()[:, None] * int8[None, :]
    assert torch.equal(ints.to(torch.float16).double(), ints) and torch.equal(ints.float().double(), ints)
    assert not torch.equal(ints.to(torch.bfloat16).double(), ints)  # hence int8 dots for the int8 variant
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (64, 512), generator=g).float()
    b = torch.randint(-8, 8, (512, 32), generator=g).float()
    assert torch.equal((a @ b).double(), a.double() @ b.double())  # |sum| <= 2^19 < 2^24


@gpu
@requires_cuda
@pytest.mark.parametrize("m", [1, 16, 300])
def test_fp8_kernel_on_the_gpu_at_model_shapes(m):
    """FP8 wgmma on sm_90 (the interpreter runs the same kernel on the CPU above)."""
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 tensor cores need compute capability 8.9")
    k, n = 4096, 1024
    w, w_s, bias = _weights(n, k, m)
    a, a_s = _fp8_acts(m, k, m)
    out = w4a8_fp8_matmul(*_on(a, a_s, w, w_s, bias), out_dtype=torch.float32)
    ref = w4a8_matmul_reference(a, a_s, w, w_s, bias, out_dtype=torch.float64)
    from quota.quant.int4 import unpack_int4

    torch_out = (a.float() * a_s) @ (unpack_int4(w).float() * w_s[:, None]).T + bias
    assert_twice_torch_error(out, ref, torch_out)
