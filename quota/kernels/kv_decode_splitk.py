"""Decode attention over the 4-bit KV cache, bound by bandwidth: split-K (flash-decoding) with a reduction.

One new query per sequence (``q`` ``[B, H_q, 1, D]``) attends to cache positions ``[kv_start[b], L)``. The cache
layout is :mod:`quota.kernels.kv_write`'s (4 bits only): codes uint8 ``[B, H_kv, S_cap, D/2]`` (element ``2i`` in
the low nibble of byte ``i``), float32 scale and zero ``[B, H_kv, S_cap, D / group]``, a value being
``code * scale + zero``. Keys may be Hadamard-rotated (the caller rotates the query the same way).

Two kernels:

1. ``_split_kernel``, one program per (split, batch x kv head): it streams the chunk ``[split * CHUNK,
   (split + 1) * CHUNK)`` of its kv head's cache once, for all ``G = H_q / H_kv`` query heads of that kv head,
   and writes an online-softmax partial (``m``, ``l`` and the unnormalized output, float32) to a workspace; with
   one split it normalizes and writes the output itself.
2. ``_merge_kernel``, one program per (batch, query head): combines the splits' partials.

No element is dequantized. The codes are read as int32 words (8 codes each) through a ``cp.async`` pipeline, a
word is unpacked with integer bit tricks (no int-to-float conversion), and the group's scale and zero are
folded out of the inner products::

    q . k   = sum_groups scale * (q_grp . code_grp) + zero * sum(q_grp)
    p @ v   = sum_n (p * scale) code + sum_n p * zero      (per group of columns)

The split kernel has two bodies, both autotuned (``MMA`` is part of the configuration):

- tensor cores (``MMA``, bf16/fp16 queries): one warp per program. Code ``k`` of every word forms an operand
  tile (``0x4300 | code`` is the bf16 ``128 + code``, ``prmt`` builds two per instruction), so ``q . k`` is 8
  ``mma`` dots over the words and ``p @ v`` 8 more whose outputs are the columns ``8 * word + k``. The dots'
  rows are (query head, group) pairs: a row's query keeps only its group's columns, the group's scale then
  multiplies whole rows, and the ``128`` offset is taken back exactly through the same sums. ``p @ v``'s
  operand is read as 32-bit words, so the transposition a token-major V needs costs nothing.
- CUDA cores (any dtype, and float32 queries): 4-D tiles [heads, groups, positions, words]; a word gives 8
  exact float32 codes (``prmt`` under the float32 ``2^23`` pattern, one subtraction), each used by one FMA per
  query head, and the accumulators stay in the thread that loaded the word until the loop ends.

Both keep float32 accumulators and a float32 softmax that rescales lazily, only when a block's maximum exceeds
the running one by more than ``2^8``. No host synchronization: the grid, the workspace and every launch depend
only on the shapes (and on ``S_cap`` when the length is read from device memory), so a CUDA graph can capture a
call. On a GPU the configuration is autotuned per (query heads per kv head, head_dim, group size, sequence
bucket, dtypes); under ``TRITON_INTERPRET=1`` one fixed configuration runs unless a call names another. The
reference is :func:`kv_decode_reference` (dequantize the cache, attention in float32).
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from quota.kernels._env import INTERPRET, check_device, next_power_of_2, pick_configs
from quota.kernels.kv_write import check_cache_pair, check_kv_start
from quota.quant.int4 import unpack_uint4
from quota.quant.quantizers import dequantize_asymmetric

__all__ = ["kv_decode_splitk", "kv_decode_reference", "decode_splits", "supports", "USE_ASM_UNPACK"]

_LOG2E = 1.4426950408889634
RESCALE_SLACK = tl.constexpr(8.0)
"""log2 of how far a score may exceed the running maximum before the accumulators are rescaled (p <= 2^8)."""

USE_ASM_UNPACK = True
"""On CUDA, unpack a word into 8 float32 codes with :data:`_UNPACK_ASM` (plain Triton shifts otherwise)."""

CHUNK_ALIGN = 16 if INTERPRET else 32
"""Chunks are a multiple of this (the largest ``BLOCK_N``), so only the last block of a sequence is partial."""
MIN_CHUNK = 128
"""The default heuristic never splits below this many positions per program."""
MAX_SPLITS = 256
OCCUPANCIES = (8, 12, 15, 16)
"""Resident programs per SM the configurations reach (registers: 1-warp programs of 120-170 registers, or
2-warp ones of 128), for the split heuristic's wave model."""


_UNPACK_ASM = tl.constexpr("""{
    .reg .b32 lo, hi;
    and.b32 lo, $8, 0x0F0F0F0F;
    shr.u32 hi, $8, 4;
    and.b32 hi, hi, 0x0F0F0F0F;
    prmt.b32 $0, lo, 0x4B000000, 0x7540;
    prmt.b32 $1, hi, 0x4B000000, 0x7540;
    prmt.b32 $2, lo, 0x4B000000, 0x7541;
    prmt.b32 $3, hi, 0x4B000000, 0x7541;
    prmt.b32 $4, lo, 0x4B000000, 0x7542;
    prmt.b32 $5, hi, 0x4B000000, 0x7542;
    prmt.b32 $6, lo, 0x4B000000, 0x7543;
    prmt.b32 $7, hi, 0x4B000000, 0x7543;
    sub.f32 $0, $0, 0f4B000000;
    sub.f32 $1, $1, 0f4B000000;
    sub.f32 $2, $2, 0f4B000000;
    sub.f32 $3, $3, 0f4B000000;
    sub.f32 $4, $4, 0f4B000000;
    sub.f32 $5, $5, 0f4B000000;
    sub.f32 $6, $6, 0f4B000000;
    sub.f32 $7, $7, 0f4B000000;
}""")
"""One int32 word (bytes b0..b3, codes 0..7 of the word: code ``2i`` the low nibble of ``b_i``) -> its 8 codes as
exact float32. ``prmt`` puts a nibble byte under the bits ``0x4B0000``, the float32 ``2^23 + code``, and one exact
subtraction leaves ``code``: 19 instructions for 8 codes, none of them an int-to-float conversion."""


@triton.jit
def _unpack8(w, ASM: tl.constexpr):
    """int32 words -> 8 float32 tensors of ``w``'s shape: code ``k`` of every word (``k = 0..7``)."""
    if ASM:
        c0, c1, c2, c3, c4, c5, c6, c7 = tl.inline_asm_elementwise(
            asm=_UNPACK_ASM,
            constraints="=r,=r,=r,=r,=r,=r,=r,=r,r",
            args=[w],
            dtype=(tl.float32, tl.float32, tl.float32, tl.float32, tl.float32, tl.float32, tl.float32, tl.float32),
            is_pure=True,
            pack=1,
        )
    else:
        c0 = (w & 15).to(tl.float32)
        c1 = ((w >> 4) & 15).to(tl.float32)
        c2 = ((w >> 8) & 15).to(tl.float32)
        c3 = ((w >> 12) & 15).to(tl.float32)
        c4 = ((w >> 16) & 15).to(tl.float32)
        c5 = ((w >> 20) & 15).to(tl.float32)
        c6 = ((w >> 24) & 15).to(tl.float32)
        c7 = ((w >> 28) & 15).to(tl.float32)
    return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def _load_q8(qp, ok, scale):
    """The query's 8 codes-positions per word, float32 pre-scaled: element ``8 * word + k`` for ``k = 0..7``."""
    q0 = tl.load(qp + 0, mask=ok, other=0.0).to(tl.float32) * scale
    q1 = tl.load(qp + 1, mask=ok, other=0.0).to(tl.float32) * scale
    q2 = tl.load(qp + 2, mask=ok, other=0.0).to(tl.float32) * scale
    q3 = tl.load(qp + 3, mask=ok, other=0.0).to(tl.float32) * scale
    q4 = tl.load(qp + 4, mask=ok, other=0.0).to(tl.float32) * scale
    q5 = tl.load(qp + 5, mask=ok, other=0.0).to(tl.float32) * scale
    q6 = tl.load(qp + 6, mask=ok, other=0.0).to(tl.float32) * scale
    q7 = tl.load(qp + 7, mask=ok, other=0.0).to(tl.float32) * scale
    return q0, q1, q2, q3, q4, q5, q6, q7


_PAIR_ASM = """{
    .reg .b32 la, lb, ha, hb;
    and.b32 la, $8, 0x0F0F0F0F;
    and.b32 lb, $9, 0x0F0F0F0F;
    shr.u32 ha, $8, 4;
    shr.u32 hb, $9, 4;
    and.b32 ha, ha, 0x0F0F0F0F;
    and.b32 hb, hb, 0x0F0F0F0F;
    prmt.b32 $0, la, lb, 0x8480;
    prmt.b32 $1, ha, hb, 0x8480;
    prmt.b32 $2, la, lb, 0x8581;
    prmt.b32 $3, ha, hb, 0x8581;
    prmt.b32 $4, la, lb, 0x8682;
    prmt.b32 $5, ha, hb, 0x8682;
    prmt.b32 $6, la, lb, 0x8783;
    prmt.b32 $7, ha, hb, 0x8783;
    or.b32 $0, $0, OFF;
    or.b32 $1, $1, OFF;
    or.b32 $2, $2, OFF;
    or.b32 $3, $3, OFF;
    or.b32 $4, $4, OFF;
    or.b32 $5, $5, OFF;
    or.b32 $6, $6, OFF;
    or.b32 $7, $7, OFF;
}"""
"""Two int32 words ``a``, ``b`` (operands ``$8``, ``$9``) -> 8 registers, register ``k`` the 16-bit pair
(``OFF + code_k(a)``, ``OFF + code_k(b)``): ``prmt`` moves byte ``k // 2`` of each word's masked low or high
nibbles under a zero byte (the sign of a byte below 16) and one ``or`` sets the exponent bits ``OFF`` (bf16
``0x4300``: ``128 + code``; fp16 ``0x6400``: ``1024 + code``). 22 instructions for 16 codes."""
_PAIR_ASM_BF16 = tl.constexpr(_PAIR_ASM.replace("OFF", "0x43004300"))
_PAIR_ASM_FP16 = tl.constexpr(_PAIR_ASM.replace("OFF", "0x64006400"))


@triton.jit
def _codes_dot(w, DOT: tl.constexpr, ASM: tl.constexpr):
    """The 8 codes of every int32 word ``w`` as dot operands, exact: ``OFFSET + code`` in the dot dtype (float32
    ``code``; bf16 ``128 + code``; fp16 ``1024 + code``). With ``ASM`` (bf16/fp16), pairs of words along ``w``'s
    fastest register dimension go through :data:`_PAIR_ASM`."""
    if ASM and DOT != 0:
        if DOT == 1:
            c0, c1, c2, c3, c4, c5, c6, c7 = tl.inline_asm_elementwise(
                asm=_PAIR_ASM_BF16, constraints="=r,=r,=r,=r,=r,=r,=r,=r,r,r", args=[w],
                dtype=(tl.bfloat16, tl.bfloat16, tl.bfloat16, tl.bfloat16, tl.bfloat16, tl.bfloat16, tl.bfloat16,
                       tl.bfloat16),
                is_pure=True, pack=2,
            )  # fmt: skip
        else:
            c0, c1, c2, c3, c4, c5, c6, c7 = tl.inline_asm_elementwise(
                asm=_PAIR_ASM_FP16, constraints="=r,=r,=r,=r,=r,=r,=r,=r,r,r", args=[w],
                dtype=(tl.float16, tl.float16, tl.float16, tl.float16, tl.float16, tl.float16, tl.float16, tl.float16),
                is_pure=True, pack=2,
            )  # fmt: skip
    else:
        c0 = _code_dot(w, 0, DOT)
        c1 = _code_dot(w, 1, DOT)
        c2 = _code_dot(w, 2, DOT)
        c3 = _code_dot(w, 3, DOT)
        c4 = _code_dot(w, 4, DOT)
        c5 = _code_dot(w, 5, DOT)
        c6 = _code_dot(w, 6, DOT)
        c7 = _code_dot(w, 7, DOT)
    return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def _code_dot(w, K: tl.constexpr, DOT: tl.constexpr):
    """Code ``K`` of every word as :func:`_codes_dot` gives it, in plain Triton (bits ``0x4300 | code`` are the
    bf16 ``128 + code``, ``0x6400 | code`` the fp16 ``1024 + code``)."""
    c = (w >> (4 * K)) & 15
    if DOT == 1:
        return (c | 0x4300).to(tl.int16).to(tl.bfloat16, bitcast=True)
    elif DOT == 2:
        return (c | 0x6400).to(tl.int16).to(tl.float16, bitcast=True)
    else:
        return c.to(tl.float32)


@triton.jit
def _dot(a, b, acc, DOT: tl.constexpr):
    if DOT == 0:
        return tl.dot(a, b, acc, input_precision="ieee", out_dtype=tl.float32)
    else:
        return tl.dot(a, b, acc, out_dtype=tl.float32)


@triton.jit
def _cast(x, DOT: tl.constexpr):
    if DOT == 1:
        return x.to(tl.bfloat16)
    elif DOT == 2:
        return x.to(tl.float16)
    else:
        return x.to(tl.float32)


@triton.jit
def _fma_body(
    q_base, o_base, part_o_ptr, part_ml_ptr, kc, ks, kz, vc, vs, vz, lo, hi, row0, slot0, NUM_SPLITS, qk_scale,
    stride_qh, stride_oh, DIRECT: tl.constexpr, GQ: tl.constexpr, GQP: tl.constexpr, D: tl.constexpr,
    NG: tl.constexpr, NGP: tl.constexpr, GS: tl.constexpr, ASM: tl.constexpr, BLOCK_N: tl.constexpr,
    STAGES: tl.constexpr,
):  # fmt: skip
    """CUDA-core path. Tiles are 4-D [GQP query heads, NGP groups, BLOCK_N positions, WPG words of a group]; the
    loads are [1, NGP, BLOCK_N, WPG] (words) and [1, NGP, BLOCK_N, 1] (scales, zeros), broadcast over the heads,
    and every accumulator keeps the loads' layout (one slot per row of the tile, summed after the loop)."""
    WPG: tl.constexpr = GS // 8  # int32 words per group of a row
    W: tl.constexpr = D // 8  # words per row
    h4 = tl.arange(0, GQP)[:, None, None, None]
    g4 = tl.arange(0, NGP)[None, :, None, None]
    n4 = tl.arange(0, BLOCK_N)[None, None, :, None]
    w4 = tl.arange(0, WPG)[None, None, None, :]
    h_ok = h4 < GQ
    g_ok = g4 < NG

    qp = q_base + h4.to(tl.int64) * stride_qh + g4 * GS + 8 * w4  # [GQP, NGP, 1, WPG]
    q0, q1, q2, q3, q4, q5, q6, q7 = _load_q8(qp, h_ok & g_ok, qk_scale)  # log2-domain scores
    qsum = tl.sum(q0 + q1 + q2 + q3 + q4 + q5 + q6 + q7, axis=3, keep_dims=True)  # [GQP, NGP, 1, 1]

    m_i = tl.full([GQP, 1, 1, 1], float("-inf"), tl.float32)  # running max (the reference of l and acc)
    l_i = tl.zeros([GQP, 1, BLOCK_N, 1], tl.float32)  # per-row partial sums of p
    a0 = tl.zeros([GQP, NGP, BLOCK_N, WPG], tl.float32)  # sum_n p * scale_v * code_k, per row slot
    a1 = tl.zeros([GQP, NGP, BLOCK_N, WPG], tl.float32)
    a2 = tl.zeros([GQP, NGP, BLOCK_N, WPG], tl.float32)
    a3 = tl.zeros([GQP, NGP, BLOCK_N, WPG], tl.float32)
    a4 = tl.zeros([GQP, NGP, BLOCK_N, WPG], tl.float32)
    a5 = tl.zeros([GQP, NGP, BLOCK_N, WPG], tl.float32)
    a6 = tl.zeros([GQP, NGP, BLOCK_N, WPG], tl.float32)
    a7 = tl.zeros([GQP, NGP, BLOCK_N, WPG], tl.float32)
    za = tl.zeros([GQP, NGP, BLOCK_N, 1], tl.float32)  # sum_n p * zero_v, per row slot
    for n0 in tl.range(lo, hi, BLOCK_N, num_stages=STAGES):
        n = n0 + n4  # [1, 1, BN, 1]
        ok = (n < hi) & g_ok  # [1, NGP, BN, 1]
        r = row0 + n
        wk = tl.load(kc + r * W + g4 * WPG + w4, mask=ok, other=0)  # [1, NGP, BN, WPG] int32
        wv = tl.load(vc + r * W + g4 * WPG + w4, mask=ok, other=0)
        sk = tl.load(ks + r * NG + g4, mask=ok, other=0.0)  # [1, NGP, BN, 1]
        zk = tl.load(kz + r * NG + g4, mask=ok, other=0.0)
        sv = tl.load(vs + r * NG + g4, mask=ok, other=0.0)
        zv = tl.load(vz + r * NG + g4, mask=ok, other=0.0)

        k0, k1, k2, k3, k4, k5, k6, k7 = _unpack8(wk, ASM)
        t = q0 * k0 + q1 * k1 + q2 * k2 + q3 * k3
        t += q4 * k4 + q5 * k5 + q6 * k6 + q7 * k7  # [GQP, NGP, BN, WPG]
        dg = tl.sum(t, axis=3, keep_dims=True)  # q_grp . code_grp  [GQP, NGP, BN, 1]
        s = tl.sum(dg * sk + qsum * zk, axis=1, keep_dims=True)  # [GQP, 1, BN, 1]
        s = tl.where(n < hi, s, float("-inf"))

        m_blk = tl.max(s, axis=2, keep_dims=True)  # [GQP, 1, 1, 1]
        if tl.max(tl.ravel(m_blk - m_i), axis=0) > RESCALE_SLACK:  # rare: a new maximum, by more than 2^8
            m_new = tl.maximum(m_i, m_blk)
            alpha = tl.exp2(m_i - m_new)  # 0 on the first block
            l_i = l_i * alpha
            za = za * alpha
            a0 = a0 * alpha
            a1 = a1 * alpha
            a2 = a2 * alpha
            a3 = a3 * alpha
            a4 = a4 * alpha
            a5 = a5 * alpha
            a6 = a6 * alpha
            a7 = a7 * alpha
            m_i = m_new
        p = tl.exp2(s - m_i)  # [GQP, 1, BN, 1], at most 2^8; 0 past the chunk
        l_i += p
        za += p * zv  # [GQP, NGP, BN, 1]
        pv = p * sv
        v0, v1, v2, v3, v4, v5, v6, v7 = _unpack8(wv, ASM)
        a0 += pv * v0
        a1 += pv * v1
        a2 += pv * v2
        a3 += pv * v3
        a4 += pv * v4
        a5 += pv * v5
        a6 += pv * v6
        a7 += pv * v7

    # Rows of the tile -> one partial per query head. Column of a_k: group g, word w -> g * GS + 8 * w + k.
    zo = tl.sum(za, axis=2, keep_dims=True)  # [GQP, NGP, 1, 1]
    l_tot = tl.sum(l_i, axis=2, keep_dims=True)  # [GQP, 1, 1, 1]
    st_ok = h_ok & g_ok  # [GQP, NGP, 1, 1]
    col = g4 * GS + 8 * w4  # [1, NGP, 1, WPG]
    if DIRECT:  # one split: normalize and write the output
        scale = tl.where(l_tot > 0.0, 1.0 / tl.where(l_tot > 0.0, l_tot, 1.0), 0.0)
        base = o_base + h4.to(tl.int64) * stride_oh + col
        ty = o_base.dtype.element_ty
    else:  # partials: o [B*H_q, NUM_SPLITS, D] unnormalized, (m, l) [B*H_q, NUM_SPLITS, 2]
        scale = tl.full([GQP, 1, 1, 1], 1.0, tl.float32)
        slot = slot0 + h4.to(tl.int64) * NUM_SPLITS  # [GQP, 1, 1, 1]
        base = part_o_ptr + slot * D + col
        ty = tl.float32
        tl.store(part_ml_ptr + slot * 2, m_i, mask=h_ok)
        tl.store(part_ml_ptr + slot * 2 + 1, l_tot, mask=h_ok)
    tl.store(base + 0, ((tl.sum(a0, axis=2, keep_dims=True) + zo) * scale).to(ty), mask=st_ok)
    tl.store(base + 1, ((tl.sum(a1, axis=2, keep_dims=True) + zo) * scale).to(ty), mask=st_ok)
    tl.store(base + 2, ((tl.sum(a2, axis=2, keep_dims=True) + zo) * scale).to(ty), mask=st_ok)
    tl.store(base + 3, ((tl.sum(a3, axis=2, keep_dims=True) + zo) * scale).to(ty), mask=st_ok)
    tl.store(base + 4, ((tl.sum(a4, axis=2, keep_dims=True) + zo) * scale).to(ty), mask=st_ok)
    tl.store(base + 5, ((tl.sum(a5, axis=2, keep_dims=True) + zo) * scale).to(ty), mask=st_ok)
    tl.store(base + 6, ((tl.sum(a6, axis=2, keep_dims=True) + zo) * scale).to(ty), mask=st_ok)
    tl.store(base + 7, ((tl.sum(a7, axis=2, keep_dims=True) + zo) * scale).to(ty), mask=st_ok)


@triton.jit
def _mma_body(
    q_base, o_base, part_o_ptr, part_ml_ptr, kc, ks, kz, vc, vs, vz, lo, hi, row0, slot0, NUM_SPLITS, qk_scale,
    stride_qh, stride_oh, DIRECT: tl.constexpr, GQ: tl.constexpr, D: tl.constexpr, NG: tl.constexpr,
    NGP: tl.constexpr, GS: tl.constexpr, ASM: tl.constexpr, DOT: tl.constexpr, MP: tl.constexpr,
    WP: tl.constexpr, BLOCK_N: tl.constexpr, STAGES: tl.constexpr,
):  # fmt: skip
    """Tensor-core path. Row ``r`` of the dots is (query head ``r // NGP``, group ``r % NGP``): its query keeps
    only that group's columns, so ``q_r . code`` is the group's partial product and a group's scale multiplies
    whole rows. Code ``k`` of every word forms one operand tile ``[BLOCK_N, WP]``: ``q . k`` is 8 dots over the
    words and ``p @ v`` 8 dots whose output columns are ``8 * word + k`` (each row keeps its group's columns).
    Per-head quantities live in 3-D views ``[MH, NGP, ...]`` of the rows (``MH = MP // NGP`` heads)."""
    WPG: tl.constexpr = GS // 8
    W: tl.constexpr = D // 8
    MH: tl.constexpr = MP // NGP
    OFFSET: tl.constexpr = 128.0 if DOT == 1 else (1024.0 if DOT == 2 else 0.0)  # see _codes_dot
    r = tl.arange(0, MP)
    h = r // NGP
    g = r % NGP
    r_ok = (h < GQ) & (g < NG)
    w = tl.arange(0, WP)  # words of a row, padded to the least dot width (16)
    w_ok = w < W
    mine = r_ok[:, None] & w_ok[None, :] & ((w[None, :] // WPG) == g[:, None])  # [MP, WP]: row r's columns

    qp = q_base + h[:, None].to(tl.int64) * stride_qh + 8 * w[None, :]  # [MP, WP]
    q0, q1, q2, q3, q4, q5, q6, q7 = _load_q8(qp, mine, qk_scale)
    q0 = _cast(q0, DOT)
    q1 = _cast(q1, DOT)
    q2 = _cast(q2, DOT)
    q3 = _cast(q3, DOT)
    q4 = _cast(q4, DOT)
    q5 = _cast(q5, DOT)
    q6 = _cast(q6, DOT)
    q7 = _cast(q7, DOT)
    qsum = tl.sum(q0.to(tl.float32) + q1.to(tl.float32) + q2.to(tl.float32) + q3.to(tl.float32)
                  + q4.to(tl.float32) + q5.to(tl.float32) + q6.to(tl.float32) + q7.to(tl.float32), axis=1)  # [MP]
    qsum3 = tl.reshape(qsum, [MH, NGP, 1])  # the exact sum of the dot's q row: the offset's share

    m_i = tl.full([MH, 1, 1], float("-inf"), tl.float32)  # per head
    l_i = tl.zeros([MH, 1, 1], tl.float32)
    za = tl.zeros([MH, NGP, 1], tl.float32)  # per row: sum_n p * zero_v, minus the offset's share
    o0 = tl.zeros([MP, WP], tl.float32)
    o1 = tl.zeros([MP, WP], tl.float32)
    o2 = tl.zeros([MP, WP], tl.float32)
    o3 = tl.zeros([MP, WP], tl.float32)
    o4 = tl.zeros([MP, WP], tl.float32)
    o5 = tl.zeros([MP, WP], tl.float32)
    o6 = tl.zeros([MP, WP], tl.float32)
    o7 = tl.zeros([MP, WP], tl.float32)
    nn = tl.arange(0, BLOCK_N)
    g3 = tl.arange(0, NGP)[:, None]  # [NGP, 1]
    for n0 in tl.range(lo, hi, BLOCK_N, num_stages=STAGES):
        n = n0 + nn  # [BN]
        n_ok = n < hi
        rows = row0 + n
        wm = n_ok[:, None] & w_ok[None, :]
        wk = tl.load(kc + rows[:, None] * W + w[None, :], mask=wm, other=0)  # [BN, WP] int32
        wv = tl.load(vc + rows[:, None] * W + w[None, :], mask=wm, other=0)
        meta = rows[None, :] * NG + g3  # [NGP, BN]
        mm = n_ok[None, :] & (g3 < NG)
        sk = tl.load(ks + meta, mask=mm, other=0.0)[None]  # [1, NGP, BN]
        zk = tl.load(kz + meta, mask=mm, other=0.0)[None]
        sv = tl.load(vs + meta, mask=mm, other=0.0)[None]
        zv = tl.load(vz + meta, mask=mm, other=0.0)[None]

        k0, k1, k2, k3, k4, k5, k6, k7 = _codes_dot(wk, DOT, ASM)  # [BN, WP] each
        acc = tl.zeros([MP, BLOCK_N], tl.float32)
        acc = _dot(q0, tl.trans(k0), acc, DOT)
        acc = _dot(q1, tl.trans(k1), acc, DOT)
        acc = _dot(q2, tl.trans(k2), acc, DOT)
        acc = _dot(q3, tl.trans(k3), acc, DOT)
        acc = _dot(q4, tl.trans(k4), acc, DOT)
        acc = _dot(q5, tl.trans(k5), acc, DOT)
        acc = _dot(q6, tl.trans(k6), acc, DOT)
        acc = _dot(q7, tl.trans(k7), acc, DOT)  # q_r . (OFFSET + code)  [MP, BN]
        t = tl.reshape(acc, [MH, NGP, BLOCK_N]) * sk + qsum3 * (zk - OFFSET * sk)  # each group's share
        s = tl.sum(t, axis=1, keep_dims=True)  # [MH, 1, BN] log2-domain scores
        s = tl.where(n_ok[None, None, :], s, float("-inf"))

        m_blk = tl.max(s, axis=2, keep_dims=True)  # [MH, 1, 1]
        if tl.max(tl.ravel(m_blk - m_i), axis=0) > RESCALE_SLACK:  # rare: a new maximum, by more than 2^8
            m_new = tl.maximum(m_i, m_blk)
            alpha = tl.exp2(m_i - m_new)  # [MH, 1, 1]
            l_i = l_i * alpha
            za = za * alpha
            al = tl.reshape(tl.broadcast_to(alpha, [MH, NGP, 1]), [MP, 1])
            o0 = o0 * al
            o1 = o1 * al
            o2 = o2 * al
            o3 = o3 * al
            o4 = o4 * al
            o5 = o5 * al
            o6 = o6 * al
            o7 = o7 * al
            m_i = m_new
        p = tl.exp2(s - m_i)  # [MH, 1, BN]
        l_i += tl.sum(p, axis=2, keep_dims=True)
        a3 = _cast(p * sv, DOT)  # [MH, NGP, BN]: p times row r's group scale, rounded as the dot takes it
        za += tl.sum(p * zv - OFFSET * a3.to(tl.float32), axis=2, keep_dims=True)
        a = tl.reshape(a3, [MP, BLOCK_N])
        v0, v1, v2, v3, v4, v5, v6, v7 = _codes_dot(wv, DOT, ASM)  # [BN, WP] each
        o0 = _dot(a, v0, o0, DOT)
        o1 = _dot(a, v1, o1, DOT)
        o2 = _dot(a, v2, o2, DOT)
        o3 = _dot(a, v3, o3, DOT)
        o4 = _dot(a, v4, o4, DOT)
        o5 = _dot(a, v5, o5, DOT)
        o6 = _dot(a, v6, o6, DOT)
        o7 = _dot(a, v7, o7, DOT)  # [MP, WP]

    # Row r holds its group's columns 8 * word + k (masked stores keep only those).
    col = 8 * w[None, :]  # [1, WP]
    zo = tl.reshape(za, [MP, 1])
    l_r = tl.reshape(tl.broadcast_to(l_i, [MH, NGP, 1]), [MP])  # every row of a head: its l
    m_r = tl.reshape(tl.broadcast_to(m_i, [MH, NGP, 1]), [MP])
    if DIRECT:
        scale = tl.where(l_r > 0.0, 1.0 / tl.where(l_r > 0.0, l_r, 1.0), 0.0)[:, None]  # [MP, 1]
        base = o_base + h[:, None].to(tl.int64) * stride_oh + col
        ty = o_base.dtype.element_ty
    else:
        scale = tl.full([MP, 1], 1.0, tl.float32)
        slot = slot0 + h.to(tl.int64) * NUM_SPLITS  # [MP]
        base = part_o_ptr + slot[:, None] * D + col
        ty = tl.float32
        first = r_ok & (g == 0)  # one row per head carries (m, l)
        tl.store(part_ml_ptr + slot * 2, m_r, mask=first)
        tl.store(part_ml_ptr + slot * 2 + 1, l_r, mask=first)
    tl.store(base + 0, ((o0 + zo) * scale).to(ty), mask=mine)
    tl.store(base + 1, ((o1 + zo) * scale).to(ty), mask=mine)
    tl.store(base + 2, ((o2 + zo) * scale).to(ty), mask=mine)
    tl.store(base + 3, ((o3 + zo) * scale).to(ty), mask=mine)
    tl.store(base + 4, ((o4 + zo) * scale).to(ty), mask=mine)
    tl.store(base + 5, ((o5 + zo) * scale).to(ty), mask=mine)
    tl.store(base + 6, ((o6 + zo) * scale).to(ty), mask=mine)
    tl.store(base + 7, ((o7 + zo) * scale).to(ty), mask=mine)


@triton.jit
def _split_kernel(
    q_ptr, o_ptr, part_o_ptr, part_ml_ptr, kc, ks, kz, vc, vs, vz, kv_start_ptr, length_ptr,
    L, S_CAP, HKV, CHUNK, NUM_SPLITS, qk_scale, seq_bucket,
    stride_qb, stride_qh, stride_ob, stride_oh,
    HAS_START: tl.constexpr, LENGTH_ON_DEVICE: tl.constexpr, DIRECT: tl.constexpr, GQ: tl.constexpr,
    GQP: tl.constexpr, D: tl.constexpr, NG: tl.constexpr, NGP: tl.constexpr, GS: tl.constexpr,
    ASM: tl.constexpr, DOT: tl.constexpr, MP: tl.constexpr, WP: tl.constexpr,
    MMA: tl.constexpr, BLOCK_N: tl.constexpr, STAGES: tl.constexpr,
):  # fmt: skip
    split = tl.program_id(0)
    bh = tl.program_id(1)  # b * HKV + hkv
    b = bh // HKV
    hkv = bh % HKV
    if LENGTH_ON_DEVICE:  # read at run time: the grid covers the capacity, splits past the length stay empty
        L = tl.minimum(tl.load(length_ptr), S_CAP)
    lo = split * CHUNK
    hi = tl.minimum(lo + CHUNK, L)
    if HAS_START:
        lo = tl.maximum(lo, tl.load(kv_start_ptr + b))
    q_base = q_ptr + b.to(tl.int64) * stride_qb + (hkv * GQ).to(tl.int64) * stride_qh  # first query head
    o_base = o_ptr + b.to(tl.int64) * stride_ob + (hkv * GQ).to(tl.int64) * stride_oh
    row0 = bh.to(tl.int64) * S_CAP  # cache row of position 0
    slot0 = (bh * GQ).to(tl.int64) * NUM_SPLITS + split  # workspace slot of the first query head
    if MMA:
        _mma_body(q_base, o_base, part_o_ptr, part_ml_ptr, kc, ks, kz, vc, vs, vz, lo, hi, row0, slot0, NUM_SPLITS,
                  qk_scale, stride_qh, stride_oh, DIRECT, GQ, D, NG, NGP, GS, ASM, DOT, MP, WP, BLOCK_N, STAGES)
    else:
        _fma_body(q_base, o_base, part_o_ptr, part_ml_ptr, kc, ks, kz, vc, vs, vz, lo, hi, row0, slot0, NUM_SPLITS,
                  qk_scale, stride_qh, stride_oh, DIRECT, GQ, GQP, D, NG, NGP, GS, ASM, BLOCK_N, STAGES)


@triton.jit
def _merge_kernel(part_o_ptr, part_ml_ptr, o_ptr, NUM_SPLITS, HQ, stride_ob, stride_oh,
                  D: tl.constexpr, DP: tl.constexpr, SP: tl.constexpr, SB: tl.constexpr):  # fmt: skip
    """One program per (batch, query head): ``sum_s 2^(m_s - m) o_s / sum_s 2^(m_s - m) l_s``."""
    qh = tl.program_id(0).to(tl.int64)  # b * HQ + hq
    first = qh * NUM_SPLITS  # workspace slot of split 0
    s = tl.arange(0, SP)
    m = tl.load(part_ml_ptr + (first + s) * 2, mask=s < NUM_SPLITS, other=float("-inf"))  # [SP]
    l_i = tl.load(part_ml_ptr + (first + s) * 2 + 1, mask=s < NUM_SPLITS, other=0.0)
    m_all = tl.max(m, axis=0)
    m_use = tl.where(m_all == float("-inf"), 0.0, m_all)  # every split empty: weights 0, output 0
    total = tl.sum(tl.exp2(m - m_use) * l_i, axis=0)
    d = tl.arange(0, DP)
    acc = tl.zeros([DP], tl.float32)
    for s0 in range(0, NUM_SPLITS, SB):
        sb = s0 + tl.arange(0, SB)
        ok = sb < NUM_SPLITS
        w = tl.exp2(tl.load(part_ml_ptr + (first + sb) * 2, mask=ok, other=float("-inf")) - m_use)  # [SB]
        o = tl.load(part_o_ptr + (first + sb[:, None]) * D + d[None, :], mask=ok[:, None] & (d[None, :] < D),
                    other=0.0)  # [SB, DP]
        acc += tl.sum(o * w[:, None], axis=0)
    out = acc * tl.where(total > 0.0, 1.0 / tl.where(total > 0.0, total, 1.0), 0.0)
    b = qh // HQ
    hq = qh % HQ
    tl.store(o_ptr + b * stride_ob + hq * stride_oh + d, out.to(o_ptr.dtype.element_ty), mask=d < D)


# ----------------------------------------------------------------------------- configurations


def _config(mma: bool, block_n: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"MMA": mma, "BLOCK_N": block_n, "STAGES": stages}, num_warps=warps, num_stages=stages)


_FMA_CONFIGS = [  # (BLOCK_N, warps, stages) of the CUDA-core path; _prune keeps those that fit the registers
    _config(False, 8, 1, 3),
    _config(False, 16, 1, 3),
    _config(False, 16, 2, 3),
    _config(False, 8, 4, 4),
    _config(False, 16, 4, 3),
]
_MMA_CONFIGS = [  # the tensor-core path: one warp per program, so p and both dots stay in the warp's registers
    _config(True, 16, 1, 3),
    _config(True, 32, 1, 3),
    _config(True, 32, 1, 4),
]
_INTERPRET_CONFIG = _config(False, 8, 1, 1)
MAX_ACC_WORDS = 8
"""CUDA-core path: most words (query heads x words per thread) a configuration may keep per thread: each costs
16 registers (8 accumulators, 8 query values), so 8 keeps a thread near 128 registers."""


def words_per_thread(block_n: int, warps: int, head_dim: int) -> float:
    """int32 words of one K (or V) tile that each thread loads: ``BLOCK_N * D / 8`` over the threads."""
    return block_n * (head_dim // 8) / (32 * warps)


def _fits(cfg: triton.Config, gq: int, head_dim: int, dot: int, rows: int) -> bool:
    """Whether the autotuner tries ``cfg``: tensor cores for bf16/fp16 queries (float32 would run the dots in
    TF32) and up to 32 dot ``rows`` (query heads x padded groups); CUDA cores for float32 queries, or for up to 2
    query heads per kv head (measured statically on sm_90: 35-40 warp instructions per cached position at 1 head,
    against 28-31 on tensor cores at any head count up to 8, and 95-140 on CUDA cores at 4 heads), within the
    register budget."""
    if cfg.kwargs["MMA"]:
        return dot != 0 and rows <= 32
    wpt = words_per_thread(cfg.kwargs["BLOCK_N"], cfg.num_warps, head_dim)
    if dot != 0:  # beside the tensor cores, only the efficient ones: whole 16-byte vectors, 1-2 heads
        return gq <= 2 and 4 <= wpt and wpt * next_power_of_2(gq) <= MAX_ACC_WORDS
    return 1 <= wpt and wpt * next_power_of_2(gq) <= MAX_ACC_WORDS


def _prune(configs, named_args, **kwargs):
    if INTERPRET:
        return configs
    gq, d, dot, rows = kwargs["GQ"], kwargs["D"], kwargs["DOT"], kwargs["MP"]
    keep = [c for c in configs if _fits(c, gq, d, dot, rows)]
    if keep:
        return keep
    fma = [c for c in configs if not c.kwargs["MMA"]]
    return [min(fma, key=lambda c: words_per_thread(c.kwargs["BLOCK_N"], c.num_warps, d))]


_split_kernel_tuned = triton.autotune(
    configs=pick_configs(_FMA_CONFIGS + _MMA_CONFIGS, _INTERPRET_CONFIG),
    key=["seq_bucket", "GQ", "D", "GS"],  # and the dtypes of every tensor argument
    prune_configs_by={"early_config_prune": _prune},
)(_split_kernel)


def configs_for(
    gq: int, head_dim: int, dtype: torch.dtype = torch.bfloat16, group_size: int = 64
) -> list[triton.Config]:
    """The configurations the autotuner tries for ``gq`` query heads per kv head, ``head_dim``, q's dtype and the
    group size."""
    if INTERPRET:
        return [_INTERPRET_CONFIG]
    rows = _dot_rows(gq, head_dim // group_size)
    return _prune(_FMA_CONFIGS + _MMA_CONFIGS, {}, GQ=gq, D=head_dim, DOT=_dot_kind(dtype), MP=rows)


def _dot_rows(gq: int, groups: int) -> int:
    """Rows of the tensor-core path's dots: (query head, group) pairs, padded to a power of two of at least 16."""
    return max(16, next_power_of_2(gq * next_power_of_2(groups)))


def _dot_kind(dtype: torch.dtype) -> int:
    """Dot operand dtype of the tensor-core path: 0 float32, 1 bf16, 2 fp16 (q's dtype). The interpreter gets
    bf16 dots wrong (see :mod:`quota.kernels._env`), so there bf16 queries use float32 dots; fp16 dots are right."""
    kind = {torch.bfloat16: 1, torch.float16: 2}.get(dtype, 0)
    return 0 if INTERPRET and kind == 1 else kind


def seq_bucket(length: int) -> int:
    """Autotune key for the sequence: powers of two from 256 to 65536."""
    return min(max(next_power_of_2(length), 256), 65536)


# ----------------------------------------------------------------------------- launcher


def supports(bits: int, head_dim: int, group_size: int) -> bool:
    """Whether this kernel handles the cache: 4 bits, ``head_dim % 8 == 0``, groups of at least 8 (whole words)."""
    return bits == 4 and head_dim % 8 == 0 and group_size >= 8 and head_dim % group_size == 0


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4
    return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _wave_loss(programs: int, num_sms: int) -> float:
    """Mean time lost to the last, partly filled wave of ``programs`` equal programs, over the occupancies the
    configurations reach (8 to 16 resident programs per SM): ``ceil(waves) / waves - 1``."""
    losses = []
    for per_sm in OCCUPANCIES:
        waves = programs / (per_sm * num_sms)
        losses.append(math.ceil(waves) / waves - 1.0)
    return sum(losses) / len(losses)


def decode_splits(
    batch: int, kv_heads: int, length: int, num_sms: int, num_splits: int | None = None, gq: int = 1,
    head_dim: int = 128,
) -> tuple[int, int]:  # fmt: skip
    """``(splits, chunk)``: ``length`` positions cut into ``splits`` chunks of ``chunk`` (a multiple of
    :data:`CHUNK_ALIGN`, at least :data:`MIN_CHUNK` unless the sequence is shorter).

    By default the count minimizes the time lost to a partly filled last wave of the ``batch * kv_heads *
    splits`` equal programs (:func:`_wave_loss`) plus the workspace traffic (each split writes, and the merge
    reads back, mostly from L2, ``gq * head_dim`` floats per kv head, against the ``1.25 * chunk * head_dim``
    bytes of codes and scales it reads; counted once).
    It depends on the shapes only. ``num_splits`` asks for that many instead (fewer once chunks are rounded up).
    """
    length = max(int(length), 1)
    rows = max(batch * kv_heads, 1)
    if num_splits is None:
        num_splits = _best_split_count(length, rows, num_sms, gq, head_dim)
    num_splits = max(1, min(int(num_splits), MAX_SPLITS))
    chunk = triton.cdiv(triton.cdiv(length, num_splits), CHUNK_ALIGN) * CHUNK_ALIGN
    return triton.cdiv(length, chunk), chunk


@functools.lru_cache(maxsize=4096)
def _best_split_count(length: int, rows: int, num_sms: int, gq: int, head_dim: int) -> int:
    """The split count of :func:`decode_splits`'s search, memoized: the search costs about a millisecond of
    Python, more than the kernel itself at 16k positions, and runs once per shape instead of once per call."""
    best = None
    for want in range(1, min(MAX_SPLITS, triton.cdiv(length, MIN_CHUNK)) + 1):
        chunk = triton.cdiv(triton.cdiv(length, want), CHUNK_ALIGN) * CHUNK_ALIGN
        splits = triton.cdiv(length, chunk)
        if splits > 1 and chunk < MIN_CHUNK:
            break
        workspace = 0.0 if splits == 1 else 4 * gq * (head_dim + 2) / (chunk * 1.25 * head_dim)
        score = _wave_loss(rows * splits, num_sms) + workspace
        if best is None or score < best[0] - 1e-9:
            best = (score, splits)
    return best[1]


def _check(q, k_cache, v_cache, length, kv_start, group_size, name):
    if q.dim() != 4 or q.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"{name}: q must be [B, H_q, 1, D] bf16/fp16/fp32, got {q.dtype} {tuple(q.shape)}")
    if q.shape[2] != 1:
        raise ValueError(f"{name}: q must hold one query per sequence, got T={q.shape[2]}")
    if len(k_cache) != 3 or len(v_cache) != 3:
        raise ValueError(f"{name}: k_cache and v_cache are (codes, scale, zero) tuples")
    b, hq, _, d = q.shape
    if not supports(4, d, group_size) or group_size & (group_size - 1):
        raise ValueError(f"{name}: needs head_dim % 8 == 0 and a power-of-two group_size >= 8 dividing it, "
                         f"got head_dim {d}, group_size {group_size}")  # fmt: skip
    hkv, s_cap = check_cache_pair(name, b, hq, d, k_cache, v_cache, 4, group_size)
    if any(cache[0].storage_offset() % 4 for cache in (k_cache, v_cache)):
        raise ValueError(f"{name}: cache codes must start on a 4-byte boundary (they are read as int32 words)")
    if not 1 <= length <= s_cap:
        raise ValueError(f"{name}: need 1 <= length={length} <= S_cap={s_cap}")
    check_kv_start(name, kv_start, b)
    check_device(name, q, *k_cache, *v_cache, *([kv_start] if kv_start is not None else []))
    return b, hq, d, hkv, s_cap


def kv_decode_splitk(
    q: torch.Tensor,
    k_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    v_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    length: int | torch.Tensor,
    group_size: int,
    sm_scale: float | None = None,
    kv_start: torch.Tensor | None = None,
    num_splits: int | None = None,
    asm_unpack: bool | None = None,
    config: dict | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """One new query per sequence against 4-bit cache positions ``[kv_start[b], length)``.

    - ``q``: ``[B, H_q, 1, D]`` bf16/fp16/fp32 (keys Hadamard-rotated: ``q`` rotated the same way by the caller);
    - ``k_cache``, ``v_cache``: ``(codes, scale, zero)``: uint8 ``[B, H_kv, S_cap, D/2]``, float32
      ``[B, H_kv, S_cap, D/group_size]`` twice, contiguous; ``H_q % H_kv == 0`` (any ratio), ``D % 8 == 0``,
      ``group_size`` a power of two ``>= 8`` dividing ``D``;
    - ``length``: positions in use (``1 <= length <= S_cap``), or an int32 tensor of one element on the cache's
      device, read when the kernel runs (a CUDA graph replays with the length it then holds): the grid then
      covers the capacity ``S_cap`` (splits past the length do no work), the length is clamped to ``S_cap`` and
      not checked on the host (that would synchronize);
    - ``sm_scale``: softmax scale (default ``1/sqrt(D)``);
    - ``kv_start``: optional int32 ``[B]``: positions ``< kv_start[b]`` are padding (a row with none left gets 0);
    - ``num_splits``: override :func:`decode_splits`' choice; ``asm_unpack``: override :data:`USE_ASM_UNPACK`;
    - ``config``: ``{"MMA", "BLOCK_N", "num_warps", "STAGES"}`` to bypass the autotuner (benchmarks, tests);
    - ``out``: optional preallocated contiguous result;
    - returns ``[B, H_q, 1, D]`` in q's dtype.

    The float32 workspace (``[B * H_q, splits, D]`` and ``[B * H_q, splits, 2]``) is allocated per call with a
    size that depends only on the shapes, so a captured CUDA graph owns one copy.
    """
    name = "kv_decode_splitk"
    length_t = None
    if isinstance(length, torch.Tensor):
        codes = k_cache[0] if len(k_cache) == 3 else None
        if length.dtype != torch.int32 or length.numel() != 1 or codes is None or length.device != codes.device:
            raise ValueError(f"{name}: a tensor length must be one int32 element on the cache's device, got "
                             f"{length.dtype} {tuple(length.shape)} on {length.device}")  # fmt: skip
        length_t, length = length, (codes.shape[2] if codes.dim() == 4 else 1)
    b, hq, d, hkv, s_cap = _check(q, k_cache, v_cache, length, kv_start, group_size, name)
    q = q if q.stride(-1) == 1 else q.contiguous()
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    elif out.shape != q.shape or out.dtype != q.dtype or out.device != q.device or not out.is_contiguous():
        raise ValueError(f"{name}: out must be a contiguous {q.dtype} tensor of q's shape {tuple(q.shape)}")
    if b == 0:
        return out
    gq = hq // hkv
    groups = d // group_size
    splits, chunk = decode_splits(b, hkv, length, _num_sms(q.device), num_splits, gq, d)
    direct = splits == 1
    if direct:
        part_o = part_ml = out  # unused
    else:
        part_o = torch.empty((b * hq, splits, d), dtype=torch.float32, device=q.device)
        part_ml = torch.empty((b * hq, splits, 2), dtype=torch.float32, device=q.device)
    sm_scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    asm = (USE_ASM_UNPACK if asm_unpack is None else bool(asm_unpack)) and not INTERPRET
    args = (
        q, out, part_o, part_ml, k_cache[0].view(torch.int32), k_cache[1], k_cache[2],
        v_cache[0].view(torch.int32), v_cache[1], v_cache[2],
        kv_start if kv_start is not None else part_ml, length_t if length_t is not None else part_ml,
        length, s_cap, hkv, chunk, splits, sm_scale * _LOG2E, seq_bucket(length),
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
    )  # fmt: skip
    meta = dict(
        HAS_START=kv_start is not None, LENGTH_ON_DEVICE=length_t is not None, DIRECT=direct, GQ=gq,
        GQP=next_power_of_2(gq), D=d, NG=groups, NGP=next_power_of_2(groups), GS=group_size, ASM=asm,
        DOT=_dot_kind(q.dtype), MP=_dot_rows(gq, groups), WP=max(16, d // 8),
    )  # fmt: skip
    grid = (splits, b * hkv)
    if config is not None or INTERPRET:
        cfg = {**_INTERPRET_CONFIG.kwargs, "num_warps": _INTERPRET_CONFIG.num_warps, **(config or {})}
        _split_kernel[grid](*args, **meta, MMA=bool(cfg["MMA"]), BLOCK_N=cfg["BLOCK_N"], STAGES=cfg["STAGES"],
                            num_warps=cfg["num_warps"], num_stages=cfg["STAGES"])
    else:
        _split_kernel_tuned[grid](*args, **meta)
    if not direct:
        _merge_kernel[(b * hq,)](
            part_o, part_ml, out, splits, hq, out.stride(0), out.stride(1),
            D=d, DP=next_power_of_2(d), SP=next_power_of_2(splits), SB=16, num_warps=4,
        )  # fmt: skip
    return out


def best_config(
    gq: int, head_dim: int, group_size: int, length: int, dtype: torch.dtype = torch.bfloat16
) -> triton.Config | None:
    """The configuration the autotuner picked for these shapes and q's ``dtype`` in this process (``None`` before
    a call ran them, or when a call named its configuration)."""
    want = (seq_bucket(length), gq, head_dim, group_size)
    for key, cfg in getattr(_split_kernel_tuned, "cache", {}).items():
        if tuple(key[:4]) == want and str(dtype) in key[4:5]:
            return cfg
    return None


# ----------------------------------------------------------------------------- reference


def kv_decode_reference(
    q: torch.Tensor,
    k_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    v_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    length: int,
    group_size: int,
    sm_scale: float | None = None,
    kv_start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference of :func:`kv_decode_splitk` (same arguments, int ``length``): the cache dequantized to float32
    ``[B, H_kv, length, D]``, then softmax attention of the last position in float32 (GQA by repeating kv heads).
    Returns float32 ``[B, H_q, 1, D]``; a row whose every position is padding gets 0."""
    b, hq, _, d = q.shape

    def dequant(cache):
        codes, scale, zero = (x[:, :, :length] for x in cache)
        return dequantize_asymmetric(unpack_uint4(codes), scale, zero)  # [B, H_kv, L, D]

    k, v = dequant(k_cache), dequant(v_cache)
    rep = hq // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # [B, H_q, L, D]
    sm_scale = 1.0 / math.sqrt(d) if sm_scale is None else sm_scale
    scores = (q.float() @ k.transpose(-1, -2)) * sm_scale  # [B, H_q, 1, L]
    if kv_start is not None:
        pos = torch.arange(length, device=q.device)
        pad = pos[None, :] < kv_start.to(q.device).long()[:, None]  # [B, L]
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return probs @ v
