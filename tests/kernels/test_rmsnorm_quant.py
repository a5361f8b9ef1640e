"""rmsnorm_quantize_triton (fused RMSNorm + per-token quantization) against rmsnorm_quantize_reference."""

import pytest
import torch

from quota.kernels.act_quant import _act_config
from quota.kernels.rmsnorm_quant import (
    FusedNormQuant, rmsnorm_quantize_reference, rmsnorm_quantize_triton, rmsnorm_transform_reference,
)  # fmt: skip
from quota.quant.int4 import unpack_int4
from tests.kernels.kernel_checks import DEVICE, assert_codes_equal_or_tie, gpu, poison_like, requires_cuda


def _x(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 3.0
    x[..., 1] = 40.0  # a massive channel, as in real hidden states
    return x.to(dtype)


def _check(x, weight, bits, clip, block, config=None):
    eps = 1e-5
    m, k = x.reshape(-1, x.shape[-1]).shape
    codes = poison_like(torch.empty((m, k // 2 if bits == 4 else k), dtype=torch.int8, device=DEVICE))
    scale = poison_like(torch.empty((m, 1), dtype=torch.float32, device=DEVICE))
    w = weight.to(DEVICE) if weight is not None else None
    rmsnorm_quantize_triton(x.to(DEVICE), w, eps, bits, clip, block, out=(codes, scale), config=config)
    ref_codes, ref_scale = rmsnorm_quantize_reference(x, weight, eps, bits, clip, block)
    torch.testing.assert_close(scale.cpu(), ref_scale.reshape(m, 1), rtol=2e-6, atol=0)
    exact = rmsnorm_transform_reference(x.double(), weight.double() if weight is not None else None, eps, block)
    exact = exact.reshape(m, k) / ref_scale.reshape(m, 1).double()
    unpack = unpack_int4 if bits == 4 else (lambda c: c)
    assert_codes_equal_or_tie(unpack(codes.cpu()), unpack(ref_codes.reshape(m, -1)), exact)


@pytest.mark.parametrize(
    "m,k,block,with_weight,dtype",
    [(1, 96, None, True, torch.bfloat16), (5, 160, None, False, torch.float16), (17, 1536, 512, True, torch.float32),
     (3, 384, 128, False, torch.bfloat16), (4, 5120, None, True, torch.bfloat16), (3, 5120, 256, False, torch.float16),
     (2, 40, 8, True, torch.bfloat16)],
)  # fmt: skip
@pytest.mark.parametrize("bits", [4, 8])
def test_matches_reference(m, k, block, with_weight, dtype, bits):
    x = _x((m, k), dtype, seed=m + k)
    g = torch.Generator().manual_seed(k)
    weight = (torch.rand(k, generator=g) + 0.5).to(dtype) if with_weight else None
    _check(x, weight, bits, 0.9, block)


def test_a_larger_tile_and_leading_dims():
    x = _x((2, 3, 1024), torch.bfloat16, seed=1)
    _check(x, torch.linspace(0.5, 1.5, 1024), 4, 1.0, None, config=_act_config(4096, 2, 8))
    codes, scale = rmsnorm_quantize_triton(x.to(DEVICE), None, 1e-6)
    assert codes.shape == (2, 3, 512) and scale.shape == (2, 3, 1)


def test_module_from_a_folded_norm_drops_the_weight():
    class Norm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(64))
            self.variance_epsilon = 1e-6

    norm = Norm()
    mod = FusedNormQuant.from_rmsnorm(norm, clip_ratio=0.9, hadamard_block=32, impl="triton")
    assert mod.weight is None and mod.eps == 1e-6
    norm.weight.data[0] = 2.0
    assert FusedNormQuant.from_rmsnorm(norm).weight[0].item() == 2.0
    x = _x((3, 64), torch.float32, seed=2)
    codes, scale = mod.to(DEVICE)(x.to(DEVICE))
    ref_codes, ref_scale = rmsnorm_quantize_reference(x, None, 1e-6, 4, 0.9, 32)
    torch.testing.assert_close(scale.cpu(), ref_scale, rtol=2e-6, atol=0)
    assert (unpack_int4(codes.cpu()) - unpack_int4(ref_codes)).abs().max() <= 1


def test_invalid_arguments():
    x = torch.zeros(2, 96, device=DEVICE)
    with pytest.raises(ValueError, match="weight"):
        rmsnorm_quantize_triton(x, torch.ones(95, device=DEVICE), 1e-6)
    with pytest.raises(ValueError, match="eps"):
        rmsnorm_quantize_triton(x, None, -1.0)
    with pytest.raises(ValueError, match="power of two"):
        rmsnorm_quantize_triton(x, None, 1e-6, hadamard_block=48)


@gpu
@requires_cuda
@pytest.mark.parametrize("m,k,block", [(1, 4096, None), (300, 4096, 4096), (64, 11008, 256), (33, 18944, 512)])
def test_gpu_large(m, k, block):
    x = _x((m, k), torch.bfloat16, seed=m + k)
    _check(x, torch.rand(k) + 0.5, 4, 0.9, block)
    _check(x, None, 4, 1.0, block)
