"""Triton device helpers for an in-register block-diagonal Hadamard transform (no kernel here).

A power-of-two Sylvester block factors as ``H_b = H_{b1} (x) H_{b2}``: a length-``b`` vector viewed as
``X [b1, b2]`` (row-major) maps to ``H_{b1} X H_{b2}``, two small tensor-core dots instead of a
``b``-long one per element. The matrices hold +-1 (exact in bf16) and the ``1/sqrt(b)`` is applied
by the caller.

Tensor-core operands are bf16, so a float32 operand is split into up to three bf16 parts whose sum is
exact (8 + 8 + 8 significant bits); the products with +-1 are exact and the dot accumulates in
float32, which gives float32 accuracy (not the bit pattern of a butterfly, whose sums run in
another order). In the interpreter (``DOT_F32``) the dot runs in float32 directly.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def hadamard_pm1(N: tl.constexpr, BLOCK: tl.constexpr):
    """``[N, N]`` float32 block-diagonal Sylvester matrix with +-1 entries and blocks of ``BLOCK``.

    Entry ``(r, c)`` is ``(-1)^popcount(r & c & (BLOCK - 1))`` when ``r`` and ``c`` share a block, else 0.
    ``N <= 256``.
    """
    r = tl.arange(0, N)[:, None]  # [N, 1]
    c = tl.arange(0, N)[None, :]  # [1, N]
    v = r & c & (BLOCK - 1)
    v = v ^ (v >> 4)
    v = v ^ (v >> 2)
    v = v ^ (v >> 1)
    sign = 1.0 - 2.0 * (v & 1).to(tl.float32)  # [N, N]
    return tl.where((r // BLOCK) == (c // BLOCK), sign, 0.0)


@triton.jit
def _to_dot(v, DOT_F32: tl.constexpr):
    if DOT_F32:
        return v.to(tl.float32)
    else:
        return v.to(tl.bfloat16)


@triton.jit
def dot_split_right(x, h, PARTS: tl.constexpr, DOT_F32: tl.constexpr):
    """``x @ h`` in float32 accuracy: ``x`` ``[R, C]`` any float dtype, ``h`` ``[C, C]`` +-1 float32."""
    hb = _to_dot(h, DOT_F32)
    if DOT_F32 or PARTS == 1:
        return tl.dot(_to_dot(x, DOT_F32), hb, out_dtype=tl.float32)
    else:
        v = x.to(tl.float32)
        hi = v.to(tl.bfloat16)
        rest = v - hi.to(tl.float32)
        acc = tl.dot(hi, hb, out_dtype=tl.float32)
        mid = rest.to(tl.bfloat16)
        acc = tl.dot(mid, hb, acc, out_dtype=tl.float32)
        if PARTS == 3:
            lo = (rest - mid.to(tl.float32)).to(tl.bfloat16)
            acc = tl.dot(lo, hb, acc, out_dtype=tl.float32)
        return acc


@triton.jit
def dot_split_left(h, z, DOT_F32: tl.constexpr):
    """``h @ z`` in float32 accuracy: ``h`` ``[R, R]`` +-1 float32, ``z`` ``[R, C]`` float32."""
    hb = _to_dot(h, DOT_F32)
    if DOT_F32:
        return tl.dot(hb, z, out_dtype=tl.float32)
    else:
        hi = z.to(tl.bfloat16)
        rest = z - hi.to(tl.float32)
        mid = rest.to(tl.bfloat16)
        lo = (rest - mid.to(tl.float32)).to(tl.bfloat16)
        acc = tl.dot(hb, hi, out_dtype=tl.float32)
        acc = tl.dot(hb, mid, acc, out_dtype=tl.float32)
        return tl.dot(hb, lo, acc, out_dtype=tl.float32)


def factor_block(block: int, min_dot: int = 16) -> tuple[int, int]:
    """``(b1, b2)`` with ``b1 * b2 == max(block, min_dot)`` for :func:`hadamard_pm1` tiles.

    Blocks up to 128 use one dot (``b1 == 1``, ``b2 >= 16`` holding ``b2 / block`` diagonal blocks);
    larger ones split into two factors of at least 16 each.
    """
    if block <= 128:
        return 1, max(block, min_dot)
    log = block.bit_length() - 1
    b1 = 1 << (log // 2)
    return b1, block // b1


def split_parts(dtype) -> int:
    """bf16 parts that hold a value of ``dtype`` exactly: bf16 1, fp16 2, fp32 3."""
    import torch

    return {torch.bfloat16: 1, torch.float16: 2}.get(dtype, 3)
