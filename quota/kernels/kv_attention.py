"""Attention over the int4/int8 KV cache, dequantizing inside the kernel.

Cache layout: see ``quota.kernels.kv_write`` (codes uint8 ``[B, H_kv, S_cap, D/2 or D]``, float32
scale and zero ``[B, H_kv, S_cap, D / group]``). Each call names the cache length ``L`` in use (each
layer has its own), and optionally ``kv_start`` int32 ``[B]``: positions before it are padding
(left-padded batches) and are masked out.

- :func:`kv_attention_prefill`: ``q`` ``[B, H_q, T, D]`` whose ``T`` queries sit at cache positions
  ``L - T .. L - 1``, causal. One program per (query block, batch, query head).
- :func:`kv_attention_decode`: ``q`` ``[B, H_q, 1, D]`` at position ``L - 1``. A 4-bit cache goes to
  :func:`quota.kernels.kv_decode_splitk.kv_decode_splitk` by default (bound by bandwidth: int32 words, no
  dequantized element, tensor cores or CUDA cores by autotuning). The first decode kernel, below, stays for the
  caches that one does not read (8 bits, groups under 8) and by name (``kernel="v1"``): split-K (flash-decoding), programs own (batch, kv head, chunk of positions)
  and handle all ``G = H_q / H_kv`` query heads of their kv head at once, so the cache is read once; a second
  kernel merges the chunks.

Both dequantize a tile as ``code * scale + zero`` (in bf16 registers through a few PTX instructions
for a 4-bit cache and bf16 queries on CUDA, in float32 otherwise), run the dots in q's dtype
(bf16/fp16; float32 q gives float32 dots) with float32 accumulation and a float32 online softmax; the
attention matrix is never stored. The int4 nibbles are never interleaved: ``q . k`` is summed as
``q_even . k_low + q_odd . k_high``, and ``p @ v`` gives the even and odd output columns separately.

A query with no visible key (all of them padding) gets a zero output.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from quota.kernels import kv_decode_splitk as splitk
from quota.kernels._env import INTERPRET, check_device, next_power_of_2
from quota.kernels.kv_write import check_cache_pair, check_kv_start
from quota.quant.int4 import unpack_uint4
from quota.quant.quantizers import dequantize_asymmetric

_LOG2E = 1.4426950408889634


@triton.jit
def _cast(v, DOT: tl.constexpr):
    """Dot operand dtype: 0 float32, 1 bfloat16, 2 float16."""
    if DOT == 1:
        return v.to(tl.bfloat16)
    elif DOT == 2:
        return v.to(tl.float16)
    else:
        return v.to(tl.float32)


@triton.jit
def _dot(a, b, acc, DOT: tl.constexpr):
    if DOT == 0:
        return tl.dot(a, b, acc, input_precision="ieee", out_dtype=tl.float32)
    else:
        return tl.dot(a, b, acc, out_dtype=tl.float32)


@triton.jit
def _load_q(q_base, rows_off, row_ok, R: tl.constexpr, D: tl.constexpr, G: tl.constexpr, GP: tl.constexpr,
            GS: tl.constexpr):  # fmt: skip
    """Rows of q as (even columns, odd columns), each float32 ``[R, GP * GS / 2]`` (padded groups 0)."""
    g = tl.arange(0, GP)[None, :, None]
    jj = tl.arange(0, GS // 2)[None, None, :]
    ok = row_ok[:, None, None] & (g < G)
    ptr = q_base + rows_off[:, None, None] + g * GS + 2 * jj  # [R, GP, GS/2]
    qe = tl.load(ptr, mask=ok, other=0.0).to(tl.float32)
    qo = tl.load(ptr + 1, mask=ok, other=0.0).to(tl.float32)
    return tl.reshape(qe, [R, GP * GS // 2]), tl.reshape(qo, [R, GP * GS // 2])


_DEQUANT_BF16_ASM = tl.constexpr("""{
    .reg .b32 l, h, t0, t1, t2, t3, off;
    mov.b32 off, 0x43004300;
    and.b32 l, $4, 0x0F0F0F0F;
    shr.u32 h, $4, 4;
    and.b32 h, h, 0x0F0F0F0F;
    prmt.b32 t0, l, 0x43434343, 0x5140;
    prmt.b32 t1, l, 0x43434343, 0x5342;
    prmt.b32 t2, h, 0x43434343, 0x5140;
    prmt.b32 t3, h, 0x43434343, 0x5342;
    sub.rn.bf16x2 t0, t0, off;
    sub.rn.bf16x2 t1, t1, off;
    sub.rn.bf16x2 t2, t2, off;
    sub.rn.bf16x2 t3, t3, off;
    fma.rn.bf16x2 $0, t0, $5, $7;
    fma.rn.bf16x2 $1, t1, $6, $8;
    fma.rn.bf16x2 $2, t2, $5, $7;
    fma.rn.bf16x2 $3, t3, $6, $8;
}""")
"""Four packed bytes (8 int4 codes) -> bf16 ``code * scale + zero`` for the low and the high nibbles.

bf16 bits ``0x4300 | c`` are exactly ``128 + c``: ``prmt`` puts each nibble byte under a 0x43 high byte,
an exact bf16 subtraction leaves ``c``, and one bf16x2 fma applies scale and zero (rounded to bf16, as a
bf16 cache would be). 17 instructions for 8 values, none of them a slow int-to-float conversion."""


@triton.jit
def _load_kv(codes_ptr, scale_ptr, zero_ptr, rows, row_ok, N: tl.constexpr, BITS: tl.constexpr, D: tl.constexpr,
             G: tl.constexpr, GP: tl.constexpr, GS: tl.constexpr, DOT: tl.constexpr, ASM: tl.constexpr):  # fmt: skip
    """Dequantize cache rows ``rows`` (int64 ``[N]``) as (even, odd) columns ``[N, GP*GS/2]`` in the dot dtype.

    ``ASM`` (4 bits, bf16 dots, CUDA): :data:`_DEQUANT_BF16_ASM`; otherwise ``code * scale + zero`` in float32.
    """
    g = tl.arange(0, GP)[None, :, None]
    jj = tl.arange(0, GS // 2)[None, None, :]
    r = rows[:, None, None]
    ok = row_ok[:, None, None] & (g < G)  # [N, GP, 1]
    sc = tl.load(scale_ptr + r * G + g, mask=ok, other=0.0)  # [N, GP, 1]
    zr = tl.load(zero_ptr + r * G + g, mask=ok, other=0.0)
    if BITS == 4:
        c = tl.load(codes_ptr + r * (D // 2) + g * (GS // 2) + jj, mask=ok, other=0)  # [N, GP, GS/2] uint8
        if ASM:
            ke, ko = tl.inline_asm_elementwise(
                asm=_DEQUANT_BF16_ASM,
                constraints="=r,=r,=r,=r,r,r,r,r,r",
                args=[c, tl.broadcast_to(sc.to(tl.bfloat16), c.shape), tl.broadcast_to(zr.to(tl.bfloat16), c.shape)],
                dtype=(tl.bfloat16, tl.bfloat16),
                is_pure=True,
                pack=4,
            )
        else:
            ke = _cast((c & 15).to(tl.float32) * sc + zr, DOT)
            ko = _cast((c >> 4).to(tl.float32) * sc + zr, DOT)
    else:
        ptr = codes_ptr + r * D + g * GS + 2 * jj
        ke = _cast(tl.load(ptr, mask=ok, other=0).to(tl.float32) * sc + zr, DOT)
        ko = _cast(tl.load(ptr + 1, mask=ok, other=0).to(tl.float32) * sc + zr, DOT)
    return tl.reshape(ke, [N, GP * GS // 2]), tl.reshape(ko, [N, GP * GS // 2])


@triton.jit
def _attend_block(qe, qo, m, l_i, acc_e, acc_o, kc, ks, kz, vc, vs, vz, rows, n_ok, visible,
                  R: tl.constexpr, N: tl.constexpr, BITS: tl.constexpr, D: tl.constexpr, G: tl.constexpr,
                  GP: tl.constexpr, GS: tl.constexpr, DOT: tl.constexpr, ASM: tl.constexpr):  # fmt: skip
    """One online-softmax step over a block of keys. ``qe``/``qo`` are pre-scaled by ``sm_scale * log2(e)``
    and cast; ``visible`` ``[R, N]`` masks (query, key) pairs. Returns the updated ``m, l_i, acc_e, acc_o``."""
    ke, ko = _load_kv(kc, ks, kz, rows, n_ok, N, BITS, D, G, GP, GS, DOT, ASM)  # [N, DH] each
    s = _dot(qe, tl.trans(ke), tl.zeros((R, N), tl.float32), DOT)
    s = _dot(qo, tl.trans(ko), s, DOT)  # [R, N] log2-domain scores
    s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, axis=1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet stay at 0
    alpha = tl.exp2(m - m_use)
    p = tl.exp2(s - m_use[:, None])  # [R, N]
    l_i = l_i * alpha + tl.sum(p, axis=1)
    ve, vo = _load_kv(vc, vs, vz, rows, n_ok, N, BITS, D, G, GP, GS, DOT, ASM)
    pd = _cast(p, DOT)
    acc_e = _dot(pd, ve, acc_e * alpha[:, None], DOT)
    acc_o = _dot(pd, vo, acc_o * alpha[:, None], DOT)
    return m_new, l_i, acc_e, acc_o


@triton.jit
def _store_cols(ptr_rows, row_ok, acc_e, acc_o, R: tl.constexpr, D: tl.constexpr, DH: tl.constexpr):
    """Store even/odd column halves ``[R, DH]`` interleaved into rows ``ptr_rows`` ``[R]`` of width D."""
    out = tl.reshape(tl.join(acc_e, acc_o), [R, 2 * DH])  # column 2j + parity
    d = tl.arange(0, 2 * DH)[None, :]
    tl.store(ptr_rows[:, None] + d, out, mask=row_ok[:, None] & (d < D))


@triton.jit
def _prefill_kernel(
    q_ptr, o_ptr, kc, ks, kz, vc, vs, vz, kv_start_ptr,
    T, L, S_CAP, HQ, HKV, qk_scale,
    stride_qb, stride_qh, stride_qt, stride_ob, stride_oh, stride_ot,
    HAS_START: tl.constexpr, BITS: tl.constexpr, D: tl.constexpr, G: tl.constexpr, GP: tl.constexpr,
    GS: tl.constexpr, DOT: tl.constexpr, ASM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // HQ
    hq = bh % HQ
    hkv = hq // (HQ // HKV)
    DH: tl.constexpr = GP * GS // 2

    t = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM] query index
    t_ok = t < T
    pos = L - T + t  # [BM] cache position of each query
    q_base = q_ptr + b.to(tl.int64) * stride_qb + hq.to(tl.int64) * stride_qh
    qe, qo = _load_q(q_base, t.to(tl.int64) * stride_qt, t_ok, BLOCK_M, D, G, GP, GS)
    qe = _cast(qe * qk_scale, DOT)
    qo = _cast(qo * qk_scale, DOT)

    lo = 0
    if HAS_START:
        lo = tl.load(kv_start_ptr + b)
    hi = tl.minimum(L, L - T + (pid_m + 1) * BLOCK_M)  # keys the last query of the block may see
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc_e = tl.zeros([BLOCK_M, DH], tl.float32)
    acc_o = tl.zeros([BLOCK_M, DH], tl.float32)
    row0 = (b * HKV + hkv).to(tl.int64) * S_CAP
    for n0 in range(lo, hi, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)  # [BN]
        n_ok = n < hi
        visible = n_ok[None, :] & (n[None, :] <= pos[:, None])
        m, l_i, acc_e, acc_o = _attend_block(
            qe, qo, m, l_i, acc_e, acc_o, kc, ks, kz, vc, vs, vz, row0 + n, n_ok, visible,
            BLOCK_M, BLOCK_N, BITS, D, G, GP, GS, DOT, ASM,
        )  # fmt: skip
    inv_l = tl.where(l_i > 0.0, 1.0 / tl.where(l_i > 0.0, l_i, 1.0), 0.0)
    o_rows = o_ptr + b.to(tl.int64) * stride_ob + hq.to(tl.int64) * stride_oh + t.to(tl.int64) * stride_ot
    _store_cols(o_rows, t_ok, (acc_e * inv_l[:, None]).to(o_ptr.dtype.element_ty),
                (acc_o * inv_l[:, None]).to(o_ptr.dtype.element_ty), BLOCK_M, D, DH)  # fmt: skip


@triton.jit
def _decode_split_kernel(
    q_ptr, part_o_ptr, part_ml_ptr, kc, ks, kz, vc, vs, vz, kv_start_ptr, length_ptr,
    L, S_CAP, HKV, CHUNK, NUM_SPLITS, qk_scale, stride_qb, stride_qh,
    HAS_START: tl.constexpr, LENGTH_ON_DEVICE: tl.constexpr, GQ: tl.constexpr, GQP: tl.constexpr,
    BITS: tl.constexpr, D: tl.constexpr,
    G: tl.constexpr, GP: tl.constexpr, GS: tl.constexpr, DOT: tl.constexpr, ASM: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    split = tl.program_id(0)
    bh = tl.program_id(1)  # b * HKV + hkv
    b = bh // HKV
    hkv = bh % HKV
    DH: tl.constexpr = GP * GS // 2

    i = tl.arange(0, GQP)  # query heads of this kv head (padded to a dot-sized tile)
    i_ok = i < GQ
    q_base = q_ptr + b.to(tl.int64) * stride_qb
    qe, qo = _load_q(q_base, (hkv * GQ + i).to(tl.int64) * stride_qh, i_ok, GQP, D, G, GP, GS)
    qe = _cast(qe * qk_scale, DOT)
    qo = _cast(qo * qk_scale, DOT)

    if LENGTH_ON_DEVICE:  # read at run time: the grid covers the capacity, splits past the length stay empty
        L = tl.minimum(tl.load(length_ptr), S_CAP)
    lo = split * CHUNK
    hi = tl.minimum(lo + CHUNK, L)
    if HAS_START:
        lo = tl.maximum(lo, tl.load(kv_start_ptr + b))
    m = tl.full([GQP], float("-inf"), tl.float32)
    l_i = tl.zeros([GQP], tl.float32)
    acc_e = tl.zeros([GQP, DH], tl.float32)
    acc_o = tl.zeros([GQP, DH], tl.float32)
    row0 = bh.to(tl.int64) * S_CAP
    for n0 in range(lo, hi, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_ok = n < hi
        visible = n_ok[None, :] & i_ok[:, None]
        m, l_i, acc_e, acc_o = _attend_block(
            qe, qo, m, l_i, acc_e, acc_o, kc, ks, kz, vc, vs, vz, row0 + n, n_ok, visible,
            GQP, BLOCK_N, BITS, D, G, GP, GS, DOT, ASM,
        )  # fmt: skip
    # partials: o [B*HQ, NUM_SPLITS, D] (unnormalized), (m, l_i) [B*HQ, NUM_SPLITS, 2]
    qh = (bh * GQ + i).to(tl.int64)  # b * HQ + hq
    slot = qh * NUM_SPLITS + split  # [GQP]
    _store_cols(part_o_ptr + slot * D, i_ok, acc_e, acc_o, GQP, D, DH)
    tl.store(part_ml_ptr + slot * 2, m, mask=i_ok)
    tl.store(part_ml_ptr + slot * 2 + 1, l_i, mask=i_ok)


@triton.jit
def _decode_merge_kernel(part_o_ptr, part_ml_ptr, o_ptr, NUM_SPLITS, HQ, stride_ob, stride_oh,
                         D: tl.constexpr, DP: tl.constexpr, SP: tl.constexpr):  # fmt: skip
    qh = tl.program_id(0).to(tl.int64)  # b * HQ + hq
    s = tl.arange(0, SP)
    s_ok = s < NUM_SPLITS
    m = tl.load(part_ml_ptr + (qh * NUM_SPLITS + s) * 2, mask=s_ok, other=float("-inf"))  # [SP]
    l_i = tl.load(part_ml_ptr + (qh * NUM_SPLITS + s) * 2 + 1, mask=s_ok, other=0.0)
    m_all = tl.max(m, axis=0)
    m_use = tl.where(m_all == float("-inf"), 0.0, m_all)
    w = tl.exp2(m - m_use)  # [SP]
    d = tl.arange(0, DP)
    o_ok = s_ok[:, None] & (d[None, :] < D)
    o = tl.load(part_o_ptr + (qh * NUM_SPLITS + s[:, None]) * D + d[None, :], mask=o_ok, other=0.0)  # [SP, DP]
    total = tl.sum(w * l_i, axis=0)
    out = tl.sum(o * w[:, None], axis=0) * tl.where(total > 0.0, 1.0 / tl.where(total > 0.0, total, 1.0), 0.0)
    b = qh // HQ
    hq = qh % HQ
    tl.store(o_ptr + b * stride_ob + hq * stride_oh + d, out.to(o_ptr.dtype.element_ty), mask=d < D)


# ----------------------------------------------------------------------------- launchers


USE_ASM_DEQUANT = True
"""On CUDA, dequantize 4-bit bf16 tiles with :data:`_DEQUANT_BF16_ASM` (no int-to-float conversions)."""
DECODE_BLOCK_N = 64  # cache positions per step of the decode kernel (CUDA)
DECODE_WARPS = 4
DECODE_STAGES = 3


def _asm(bits: int, dtype: torch.dtype, asm: bool | None = None) -> bool:
    asm = USE_ASM_DEQUANT if asm is None else asm
    return bool(asm) and bits == 4 and dtype == torch.bfloat16 and not INTERPRET


def _padded_groups(groups: int, group_size: int) -> int:
    """Groups per row padded to a power of two and so that the even/odd halves (``GP * GS / 2`` columns) are at
    least 16 wide, the least inner dimension of ``tl.dot`` (head_dim 16 would give 8). Padded groups load as 0."""
    return max(next_power_of_2(groups), max(1, 32 // group_size))


def _dot_kind(dtype: torch.dtype) -> int:
    if INTERPRET:
        return 0
    return {torch.bfloat16: 1, torch.float16: 2}.get(dtype, 0)


def _check(q, k_cache, v_cache, length, kv_start, bits, group_size, name):
    if q.dim() != 4 or q.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"{name}: q must be [B, H_q, T, D] bf16/fp16/fp32, got {q.dtype} {tuple(q.shape)}")
    if len(k_cache) != 3 or len(v_cache) != 3:
        raise ValueError(f"{name}: k_cache and v_cache are (codes, scale, zero) tuples")
    b, hq, t, d = q.shape
    if bits not in (4, 8):
        raise ValueError(f"{name}: bits must be 4 or 8, got {bits}")
    if group_size < 2 or d % group_size != 0 or group_size & (group_size - 1):
        raise ValueError(f"{name}: group_size={group_size} must be a power of two >= 2 dividing D={d}")
    hkv, s_cap = check_cache_pair(name, b, hq, d, k_cache, v_cache, bits, group_size)
    if not t <= length <= s_cap:
        raise ValueError(f"{name}: need T={t} <= length={length} <= S_cap={s_cap}")
    check_kv_start(name, kv_start, b)
    check_device(name, q, *k_cache, *v_cache, *([kv_start] if kv_start is not None else []))
    return b, hq, t, d, hkv, s_cap


def _output(q: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    if out is None:
        return torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if out.shape != q.shape or out.dtype != q.dtype or out.device != q.device or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {q.dtype} tensor of q's shape {tuple(q.shape)}")
    return out


def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


def kv_attention_prefill(
    q: torch.Tensor,
    k_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    v_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    length: int,
    bits: int,
    group_size: int,
    sm_scale: float | None = None,
    kv_start: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of ``T`` new queries over the quantized cache.

    - ``q``: ``[B, H_q, T, D]`` bf16/fp16/fp32; query ``t`` sits at cache position ``length - T + t``;
    - ``k_cache``, ``v_cache``: ``(codes, scale, zero)``: uint8 ``[B, H_kv, S_cap, D/2]`` (4 bits) or
      ``[B, H_kv, S_cap, D]`` (8 bits), float32 ``[B, H_kv, S_cap, D/group_size]`` twice; ``H_q % H_kv == 0``;
    - ``length``: positions in use (``T <= length <= S_cap``);
    - ``sm_scale``: softmax scale (default ``1/sqrt(D)``);
    - ``kv_start``: optional int32 ``[B]``; key positions ``< kv_start[b]`` are masked;
    - ``out``: optional preallocated contiguous result;
    - returns ``[B, H_q, T, D]`` in q's dtype.
    """
    b, hq, t, d, hkv, s_cap = _check(q, k_cache, v_cache, length, kv_start, bits, group_size, "kv_attention_prefill")
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = _output(q, out)
    if t == 0 or b == 0:
        return out
    groups = d // group_size
    block_m, block_n = (16, 16) if INTERPRET else (64, 64)
    sm_scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    grid = (triton.cdiv(t, block_m), b * hq)
    _prefill_kernel[grid](
        q, out, *k_cache, *v_cache, kv_start if kv_start is not None else out,
        t, length, s_cap, hq, hkv, sm_scale * _LOG2E,
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        HAS_START=kv_start is not None, BITS=bits, D=d, G=groups, GP=_padded_groups(groups, group_size),
        GS=group_size, DOT=_dot_kind(q.dtype), BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4, num_stages=2,
        ASM=_asm(bits, q.dtype),
    )  # fmt: skip
    return out


def decode_splits(batch: int, kv_heads: int, length: int, block_n: int, num_sms: int) -> tuple[int, int]:
    """``(num_splits, chunk)``: enough programs for about eight per SM, chunks a multiple of ``block_n``."""
    want = max(1, triton.cdiv(8 * num_sms, batch * kv_heads))
    splits = max(1, min(want, triton.cdiv(length, 4 * block_n)))
    chunk = triton.cdiv(triton.cdiv(max(length, 1), splits), block_n) * block_n
    return triton.cdiv(max(length, 1), chunk), chunk


def _splitk_applies(q: torch.Tensor, k_cache: tuple, bits: int, group_size: int) -> bool:
    """Whether ``kernel="auto"`` takes the split-K kernel: its cache layout (4 bits, whole 32-bit words per group,
    codes on a 4-byte boundary) and a power-of-two group size."""
    codes = k_cache[0] if len(k_cache) == 3 else None
    return (codes is not None and codes.dim() == 4 and splitk.supports(bits, q.shape[-1], group_size)
            and group_size & (group_size - 1) == 0 and codes.data_ptr() % 4 == 0)


def kv_attention_decode(
    q: torch.Tensor,
    k_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    v_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    length: int | torch.Tensor,
    bits: int,
    group_size: int,
    sm_scale: float | None = None,
    kv_start: torch.Tensor | None = None,
    num_splits: int | None = None,
    asm_dequant: bool | None = None,
    out: torch.Tensor | None = None,
    kernel: str = "auto",
) -> torch.Tensor:
    """One new query per sequence against cache positions ``[kv_start[b], length)``, split-K.

    Shapes as :func:`kv_attention_prefill` with ``T == 1`` (``q`` ``[B, H_q, 1, D]``); ``num_splits``
    overrides the chunking heuristic and ``asm_dequant`` the inline-PTX choice (:data:`USE_ASM_DEQUANT`, or the
    new kernel's :data:`~quota.kernels.kv_decode_splitk.USE_ASM_UNPACK`). Returns ``[B, H_q, 1, D]`` in q's dtype.

    ``kernel``: ``"splitk"`` runs :func:`~quota.kernels.kv_decode_splitk.kv_decode_splitk` (4 bits, ``D % 8 ==
    0``, power-of-two groups of at least 8 dividing ``D``, codes on a 4-byte boundary), ``"v1"`` the first decode
    kernel (this module's); ``"auto"`` (default) is ``"splitk"`` wherever it applies and ``"v1"`` elsewhere (8-bit
    caches, odd head dims). On an NVIDIA H100 80GB HBM3 at ctx 16k, batch 16, head_dim 128, groups of 64
    (``examples/bench_kv_decode.py``, docs/results/kv_decode_splitk_h100), splitk ran 2.80x (MHA 32/32) and 2.02x
    (GQA 32/8) SDPA bf16, v1 1.46x and 1.22x, in the same run.

    ``length`` may be an int32 tensor of one element on the cache's device: the kernel then reads it when it
    runs (a captured CUDA graph replays with the length the tensor holds at each replay), splits the whole
    capacity ``S_cap`` (splits past the length do no work) and clamps the length to ``S_cap``; it is not
    checked on the host, which would synchronize.
    """
    name = "kv_attention_decode"
    if kernel not in ("auto", "splitk", "v1"):
        raise ValueError(f"{name}: kernel must be 'auto', 'splitk' or 'v1', got {kernel!r}")
    if kernel == "auto":
        kernel = "splitk" if _splitk_applies(q, k_cache, bits, group_size) else "v1"
    if kernel == "splitk":
        if bits != 4:
            raise ValueError(f"{name}: kernel='splitk' reads 4-bit caches only, got bits={bits}")
        return splitk.kv_decode_splitk(q, k_cache, v_cache, length, group_size, sm_scale, kv_start, num_splits,
                                       asm_unpack=asm_dequant, out=out)  # fmt: skip
    length_t = None
    if isinstance(length, torch.Tensor):
        codes = k_cache[0] if len(k_cache) == 3 else None
        if length.dtype != torch.int32 or length.numel() != 1 or codes is None or length.device != codes.device:
            raise ValueError(f"{name}: a tensor length must be one int32 element on the cache's device, got "
                             f"{length.dtype} {tuple(length.shape)} on {length.device}")
        length_t, length = length, (codes.shape[2] if codes.dim() == 4 else 1)
    b, hq, t, d, hkv, s_cap = _check(q, k_cache, v_cache, length, kv_start, bits, group_size, name)
    if t != 1:
        raise ValueError(f"kv_attention_decode: q must hold one query per sequence, got T={t}")
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = _output(q, out)
    if b == 0:
        return out
    gq = hq // hkv
    groups = d // group_size
    block_n = 16 if INTERPRET else DECODE_BLOCK_N
    if num_splits is None:
        splits, chunk = decode_splits(b, hkv, length, block_n, _num_sms(q.device))
    else:
        chunk = triton.cdiv(triton.cdiv(max(length, 1), num_splits), block_n) * block_n
        splits = triton.cdiv(max(length, 1), chunk)
    part_o = torch.empty((b * hq, splits, d), dtype=torch.float32, device=q.device)
    part_ml = torch.empty((b * hq, splits, 2), dtype=torch.float32, device=q.device)
    sm_scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    _decode_split_kernel[(splits, b * hkv)](
        q, part_o, part_ml, *k_cache, *v_cache, kv_start if kv_start is not None else part_ml,
        length_t if length_t is not None else part_ml,
        length, s_cap, hkv, chunk, splits, sm_scale * _LOG2E, q.stride(0), q.stride(1),
        HAS_START=kv_start is not None, LENGTH_ON_DEVICE=length_t is not None, GQ=gq,
        GQP=max(16, next_power_of_2(gq)), BITS=bits, D=d, G=groups,
        GP=_padded_groups(groups, group_size), GS=group_size, DOT=_dot_kind(q.dtype), BLOCK_N=block_n,
        num_warps=DECODE_WARPS, num_stages=DECODE_STAGES,
        ASM=_asm(bits, q.dtype, asm_dequant),
    )  # fmt: skip
    _decode_merge_kernel[(b * hq,)](
        part_o, part_ml, out, splits, hq, out.stride(0), out.stride(1),
        D=d, DP=next_power_of_2(d), SP=next_power_of_2(splits), num_warps=4,
    )  # fmt: skip
    return out


# ----------------------------------------------------------------------------- reference


def dequantize_cache(cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor], length: int, bits: int) -> torch.Tensor:
    """``(codes, scale, zero)`` -> float32 ``[B, H_kv, length, D]`` (``dequantize_asymmetric``)."""
    codes, scale, zero = (x[:, :, :length] for x in cache)
    if bits == 4:
        codes = unpack_uint4(codes)
    return dequantize_asymmetric(codes, scale, zero)


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sm_scale: float | None = None,
    kv_start: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Causal GQA attention of ``q`` ``[B, H_q, T, D]`` at the last ``T`` positions of ``k``, ``v``
    ``[B, H_kv, L, D]``, with every tensor and op in ``dtype``; returns ``dtype``. Fully masked queries give 0."""
    b, hq, t, d = q.shape
    hkv, length = k.shape[1], k.shape[2]
    sm_scale = 1.0 / math.sqrt(d) if sm_scale is None else sm_scale
    qf = q.to(dtype)
    kf = k.to(dtype).repeat_interleave(hq // hkv, dim=1)  # [B, H_q, L, D]
    vf = v.to(dtype).repeat_interleave(hq // hkv, dim=1)
    scores = (qf @ kf.transpose(-1, -2)) * sm_scale  # [B, H_q, T, L]
    pos = torch.arange(length - t, length, device=q.device)[:, None]  # [T, 1]
    key = torch.arange(length, device=q.device)[None, :]  # [1, L]
    visible = (key <= pos)[None, None]  # [1, 1, T, L]
    if kv_start is not None:
        visible = visible & (key[None, None] >= kv_start.to(q.device).long()[:, None, None, None])
    scores = scores.masked_fill(~visible, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows with no visible key -> 0
    return probs @ vf


def kv_attention_reference(
    q: torch.Tensor,
    k_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    v_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    length: int,
    bits: int,
    group_size: int,
    sm_scale: float | None = None,
    kv_start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference for both kernels: dequantize the cache (float32) and run attention in float32.

    Returns float32 ``[B, H_q, T, D]`` (cast to q's dtype to compare with a kernel's output).
    """
    k = dequantize_cache(k_cache, length, bits)
    v = dequantize_cache(v_cache, length, bits)
    return attention_reference(q, k, v, sm_scale, kv_start, torch.float32)
