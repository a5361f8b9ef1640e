"""w4a4_matmul / w8a8_matmul against their references: exact integer core, float epilogue rule."""

import pytest
import torch

from quota.kernels.w4a4_gemm import w4a4_matmul, w4a4_matmul_reference, w8a8_matmul, w8a8_matmul_reference
from quota.quant.int4 import pack_int4
from tests.kernels.kernel_checks import DEVICE, assert_twice_torch_error, gpu, poison_like, requires_cuda

SHAPES = [(96, 40), (160, 72)]  # (K, N): not powers of two


def _operands(m, k, n, seed, bits=4):
    g = torch.Generator().manual_seed(seed)
    lo, hi = (-8, 8) if bits == 4 else (-128, 128)
    a = torch.randint(lo, hi, (m, k), generator=g, dtype=torch.int8)
    w = torch.randint(lo, hi, (n, k), generator=g, dtype=torch.int8)
    a_scale = torch.rand((m, 1), generator=g) * 0.02 + 1e-3
    w_scale = torch.rand((n,), generator=g) * 0.02 + 1e-3
    bias = torch.randn((n,), generator=g)
    if bits == 4:
        a, w = pack_int4(a), pack_int4(w)
    return a, a_scale, w, w_scale, bias


def _matmul(bits):
    return (w4a4_matmul, w4a4_matmul_reference) if bits == 4 else (w8a8_matmul, w8a8_matmul_reference)


def _on(device, *tensors):
    return [t.to(device) if t is not None else None for t in tensors]


def _check_exact_integer_part(m, k, n, bits, seed):
    """Unit scales and a float32 output: the result is the integer product itself, exactly."""
    kernel, reference = _matmul(bits)
    a, _, w, _, _ = _operands(m, k, n, seed, bits)
    ones_a, ones_w = torch.ones(m, 1), torch.ones(n)
    out = poison_like(torch.empty((m, n), dtype=torch.float32, device=DEVICE))
    kernel(*_on(DEVICE, a, ones_a, w, ones_w), out_dtype=torch.float32, out=out)
    ref = reference(a, ones_a, w, ones_w, out_dtype=torch.float64)
    assert torch.equal(out.cpu().double(), ref)


def _check_epilogue(m, k, n, bits, seed, out_dtype, with_bias):
    kernel, reference = _matmul(bits)
    a, a_s, w, w_s, bias = _operands(m, k, n, seed, bits)
    bias = bias.to(torch.bfloat16) if with_bias else None
    out = poison_like(torch.empty((m, n), dtype=out_dtype, device=DEVICE))
    kernel(*_on(DEVICE, a, a_s, w, w_s), bias=_on(DEVICE, bias)[0], out_dtype=out_dtype, out=out)
    ref = reference(a, a_s, w, w_s, bias, out_dtype=torch.float64)
    # plain PyTorch at the kernel's dtype: the same exact integers, a float32 epilogue, then the cast
    acc = reference(a, torch.ones(m, 1), w, torch.ones(n), out_dtype=torch.float32)
    torch_out = acc * a_s * w_s + (bias.float() if bias is not None else 0.0)
    assert_twice_torch_error(out, ref, torch_out.to(out_dtype))


@pytest.mark.parametrize("m", [1, 3, 17, 64])
@pytest.mark.parametrize("k,n", SHAPES)
@pytest.mark.parametrize("bits", [4, 8])
def test_integer_part_is_exact(m, k, n, bits):
    _check_exact_integer_part(m, k, n, bits, seed=m * 100 + k + n + bits)


@pytest.mark.parametrize("m", [1, 17])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("bits", [4, 8])
def test_epilogue_scales_bias_dtype(m, out_dtype, bits):
    _check_epilogue(m, 160, 72, bits, seed=m + bits, out_dtype=out_dtype, with_bias=m == 17)


def test_extreme_codes_do_not_overflow():
    m, k, n = 3, 4096, 40  # every product is (-8) * (-8): 4096 * 64 = 2^18, times 256 inside the kernel
    a = pack_int4(torch.full((m, k), -8, dtype=torch.int8))
    w = pack_int4(torch.full((n, k), -8, dtype=torch.int8))
    out = w4a4_matmul(*_on(DEVICE, a, torch.ones(m, 1), w, torch.ones(n)), out_dtype=torch.float32)
    assert torch.equal(out.cpu(), torch.full((m, n), 64.0 * k))


def test_strided_rows():
    m, k, n = 17, 96, 40
    a, a_s, w, w_s, _ = _operands(m, 2 * k, n, seed=9)  # [M, K] packed bytes; use the first K/2 of each row
    a_view = a[:, : k // 2]
    w_c = w[:, : k // 2].contiguous()
    out = w4a4_matmul(*_on(DEVICE, a_view, a_s, w_c, w_s), out_dtype=torch.float32)
    ref = w4a4_matmul_reference(a_view, a_s, w_c, w_s, out_dtype=torch.float64)
    assert_twice_torch_error(out, ref, ref.float())


def test_invalid_arguments():
    a, a_s, w, w_s, _ = _on(DEVICE, *_operands(4, 96, 40, seed=1))
    with pytest.raises(ValueError, match="same KB"):
        w4a4_matmul(a, a_s, w[:, :-2], w_s)
    with pytest.raises(ValueError, match="int8"):
        w4a4_matmul(a.to(torch.int32), a_s, w, w_s)
    with pytest.raises(ValueError, match="a_scale"):
        w4a4_matmul(a, a_s[:2], w, w_s)
    with pytest.raises(ValueError, match="w_scale"):
        w4a4_matmul(a, a_s, w, w_s.double())
    with pytest.raises(ValueError, match="K-major"):
        w4a4_matmul(a, a_s, w.t().contiguous().t(), w_s)


@gpu
@requires_cuda
@pytest.mark.parametrize("m", [1, 16, 300, 2048])
@pytest.mark.parametrize("k,n", [(4096, 4096), (11008, 4096), (3584, 18944)])
def test_gpu_large(m, k, n):
    _check_exact_integer_part(m, k, n, 4, seed=m + k)
    _check_epilogue(m, k, n, 4, seed=m + k + 1, out_dtype=torch.bfloat16, with_bias=True)


@gpu
@requires_cuda
@pytest.mark.parametrize("m", [1, 300])
def test_gpu_large_w8a8(m):
    _check_exact_integer_part(m, 4096, 4096, 8, seed=m)


@pytest.mark.parametrize("split_k", [2, 3])
@pytest.mark.parametrize("bits", [4, 8])
def test_split_k_is_exact_and_leaves_the_workspace_zeroed(split_k, bits):
    """Split-K configurations (offered for 64 <= M <= 1024) sum their int32 partial tiles exactly; the cached
    workspace and counters are zero again after each launch, so a second launch gives the same result."""
    from quota.kernels.w4a4_gemm import _config, splitk_workspace

    m, k, n = 19, 448, 72  # K blocks of 32 bytes: 7 (int4) or 14 (int8), not a multiple of the split count
    kernel, reference = _matmul(bits)
    a, a_s, w, w_s, bias = _operands(m, k, n, seed=split_k + bits, bits=bits)
    cfg = _config(16, 32, 32, 2, 4, 1, split_k=split_k)
    for _ in range(2):
        out = poison_like(torch.empty((m, n), dtype=torch.float32, device=DEVICE))
        kernel(*_on(DEVICE, a, torch.ones(m, 1), w, torch.ones(n)), out_dtype=torch.float32, out=out, config=cfg)
        assert torch.equal(out.cpu().double(), reference(a, torch.ones(m, 1), w, torch.ones(n), out_dtype=torch.float64))
        ws, locks = splitk_workspace(torch.device(DEVICE), 0, 0)
        assert not ws.any() and not locks.any()
    out = kernel(*_on(DEVICE, a, a_s, w, w_s, bias), out_dtype=torch.bfloat16, config=cfg)
    no_split = kernel(*_on(DEVICE, a, a_s, w, w_s, bias), out_dtype=torch.bfloat16, config=_config(16, 32, 32, 2, 4, 1))
    assert torch.equal(out, no_split)  # same integer sums, same epilogue


def test_mid_m_buckets_offer_split_k_configs():
    from quota.kernels.w4a4_gemm import configs_for_bucket

    for bucket in (64, 128, 256, 512, 1024):
        assert any(c.kwargs["SPLIT_K"] > 1 for c in configs_for_bucket(bucket)), bucket
    for bucket in (1, 16, 32, 2048, 4096):
        assert all(c.kwargs["SPLIT_K"] == 1 for c in configs_for_bucket(bucket)), bucket


@gpu
@requires_cuda
@pytest.mark.parametrize("m", [64, 300, 1024])
def test_gpu_every_mid_m_config_is_exact(m):
    """Each candidate of the mid-M buckets (split-K included), forced in turn, on a 7B shape."""
    from quota.kernels._env import m_bucket
    from quota.kernels.w4a4_gemm import configs_for_bucket

    k, n = 4096, 4096
    a, _, w, _, _ = _operands(m, k, n, seed=m)
    ref = w4a4_matmul_reference(a, torch.ones(m, 1), w, torch.ones(n), out_dtype=torch.float64)
    for cfg in configs_for_bucket(m_bucket(m)):
        out = w4a4_matmul(*_on(DEVICE, a, torch.ones(m, 1), w, torch.ones(n)), out_dtype=torch.float32, config=cfg)
        assert torch.equal(out.cpu().double(), ref), str(cfg)
