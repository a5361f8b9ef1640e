"""The Triton Hadamard helpers of _hadamard_tl (used inside act_quant and kv_cache), checked directly."""

import pytest
import torch
import triton
import triton.language as tl

from quota.kernels._hadamard_tl import dot_split_right, factor_block, hadamard_pm1, split_parts
from quota.quant.hadamard import block_hadamard_matrix
from tests.kernels.kernel_checks import DEVICE


@triton.jit
def _pm1_kernel(out_ptr, N: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.arange(0, N)[:, None]
    c = tl.arange(0, N)[None, :]
    tl.store(out_ptr + r * N + c, hadamard_pm1(N, BLOCK))


@triton.jit
def _apply_kernel(x_ptr, out_ptr, R: tl.constexpr, N: tl.constexpr, BLOCK: tl.constexpr, PARTS: tl.constexpr,
                  DOT_F32: tl.constexpr):
    r = tl.arange(0, R)[:, None]
    c = tl.arange(0, N)[None, :]
    x = tl.load(x_ptr + r * N + c)
    tl.store(out_ptr + r * N + c, dot_split_right(x, hadamard_pm1(N, BLOCK), PARTS, DOT_F32))


@pytest.mark.parametrize("n,block", [(16, 16), (32, 8), (64, 32)])
def test_pm1_matrix_is_the_block_sylvester_matrix(n, block):
    out = torch.empty(n, n, device=DEVICE)
    _pm1_kernel[(1,)](out, N=n, BLOCK=block)
    expected = block_hadamard_matrix(n, block, torch.float64) * block**0.5
    assert torch.equal(out.cpu().double(), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_split_dot_is_float32_accurate(dtype):
    n, block = 32, 32
    x = torch.randn(16, n, dtype=dtype, device=DEVICE)
    out = torch.empty(16, n, dtype=torch.float32, device=DEVICE)
    _apply_kernel[(1,)](x, out, R=16, N=n, BLOCK=block, PARTS=split_parts(dtype), DOT_F32=DEVICE == "cpu")
    expected = x.double().cpu() @ (block_hadamard_matrix(n, block, torch.float64) * block**0.5)
    torch.testing.assert_close(out.cpu().double(), expected, rtol=1e-6, atol=1e-5)


def test_factor_block_and_parts():
    for block in (8, 16, 64, 128, 256, 512):
        b1, b2 = factor_block(block)
        assert b1 * b2 == max(block, 16)
    assert (split_parts(torch.bfloat16), split_parts(torch.float16), split_parts(torch.float32)) == (1, 2, 3)
