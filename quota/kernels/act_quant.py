"""Fused activation quantization: optional block Hadamard, per-token absmax scale, round, pack.

Programs loop over tokens (rows). A program reads a row of ``x``, rotates it by the block-diagonal Hadamard
(``hadamard_block``, in registers: two small tensor-core dots per block, see ``_hadamard_tl``),
takes ``scale = clip * absmax / qmax``, rounds half to even, clamps, and writes int4 codes packed two
per byte (``quota.quant.int4.pack_int4``: element ``2i`` in the low nibble) or int8 codes, plus one
float32 scale. A row that fits one tile (:data:`TILE_PLAIN` / :data:`TILE_HADAMARD` elements) is read
once, with the next row's loads in flight during this row's math; a longer row is read twice, the
second pass from L2, and written once.

Without a Hadamard the codes and scales are bit-identical to the reference (float32 true division,
``torch.round``). With one, the transform matches the reference's float32 butterfly to float32
accuracy but not bit for bit, so a value within rounding of a half-integer may round the other way.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from quota.kernels._env import INTERPRET, check_device, next_power_of_2
from quota.kernels._hadamard_tl import dot_split_left, dot_split_right, factor_block, hadamard_pm1, split_parts
from quota.quant.hadamard import apply_block_hadamard, is_power_of_two
from quota.quant.int4 import pack_int4
from quota.quant.quantizers import quantize_activation

TILE_PLAIN = 2048  # elements of one row held at once without a Hadamard
TILE_HADAMARD = 2048  # with a Hadamard
PROGRAMS_PER_SM = 16  # persistent grid: rows are shared out among this many programs per SM
ACT_WARPS = 4  # warps per program for tiles of up to 4096 elements


@triton.jit
def _cols(q0, k_lim, BLK: tl.constexpr, B1: tl.constexpr, NBI: tl.constexpr, B2: tl.constexpr):
    """Columns of blocks ``q0 .. q0 + NBI`` of a row as ``[B1, NBI, B2]`` (element ``(i, p, j)`` is column
    ``(q0 + p) * BLK + i * B2 + j``) and their mask ``col < k_lim`` (``k_lim``: K, or 0 past the last row)."""
    i = tl.arange(0, B1)[:, None, None]
    p = tl.arange(0, NBI)[None, :, None]
    j = tl.arange(0, B2)[None, None, :]
    k = (q0 + p) * BLK + i * B2 + j  # [B1, NBI, B2]
    return k, k < k_lim


@triton.jit
def _row_tile(x_ptr, row_off, q0, k_lim, BLK: tl.constexpr, B1: tl.constexpr, NBI: tl.constexpr, B2: tl.constexpr):
    """The tile of :func:`_cols` of one row, in ``x``'s dtype (0 where masked)."""
    k, ok = _cols(q0, k_lim, BLK, B1, NBI, B2)
    return tl.load(x_ptr + row_off + k, mask=ok, other=0.0)


@triton.jit
def _transform(x, h1, h2, inv_sqrt,
               HAD: tl.constexpr, B1: tl.constexpr, NBI: tl.constexpr, B2: tl.constexpr,
               X_PARTS: tl.constexpr, DOT_F32: tl.constexpr):  # fmt: skip
    """``[B1, NBI, B2]`` tile -> float32 tile, each block of ``B1 * B2`` rotated: ``H1 X H2 / sqrt(b)``."""
    if HAD:
        z = dot_split_right(tl.reshape(x, [B1 * NBI, B2]), h2, X_PARTS, DOT_F32)  # [B1*NBI, B2]
        if B1 > 1:
            z = dot_split_left(h1, tl.reshape(z, [B1, NBI * B2]), DOT_F32)  # [B1, NBI*B2]
        return tl.reshape(z, [B1, NBI, B2]) * inv_sqrt
    else:
        return x.to(tl.float32)


@triton.jit
def _absmax(y):
    return tl.max(tl.max(tl.max(tl.abs(y), axis=2), axis=1), axis=0)


@triton.jit
def _code_bits(y, scale, inv, BITS: tl.constexpr):
    """``clamp(round_half_even(y / scale))`` as the int32 bits of ``code + 1.5 * 2^23`` (float32), whose low
    bits are the code in two's complement: no float-to-int conversion needed.

    ``y * inv`` (``inv = 1 / scale`` rounded once) is within 2^-23 relative of the true quotient; wherever it
    lies within 2^-20 of a rounding boundary anywhere in the tile, the tile is redone with IEEE division,
    so the result equals ``torch.round(y / scale)`` exactly.
    """
    QMAX: tl.constexpr = (1 << (BITS - 1)) - 1
    q = tl.minimum(tl.maximum(y * inv, -QMAX - 1.0), QMAX * 1.0)
    t = q + 12582912.0  # 1.5 * 2^23: rounds half to even
    near = 0.5 - tl.abs(q - (t - 12582912.0)) <= tl.abs(q) * 9.5367431640625e-07 + 1e-30
    need = tl.maximum(tl.max(tl.max(tl.max(near.to(tl.int32), axis=2), axis=1), axis=0), (inv > 1e38).to(tl.int32))
    if need > 0:
        q = tl.minimum(tl.maximum(tl.math.div_rn(y, scale), -QMAX - 1.0), QMAX * 1.0)
        t = q + 12582912.0
    return t.to(tl.int32, bitcast=True)


@triton.jit
def _quantize_store(y, q0, scale, inv, codes_ptr, row, K, BITS: tl.constexpr, BLK: tl.constexpr,
                    B1: tl.constexpr, NBI: tl.constexpr, B2: tl.constexpr):  # fmt: skip
    bits = _code_bits(y, scale, inv, BITS)  # [B1, NBI, B2] int32
    k, ok = _cols(q0, K, BLK, B1, NBI, B2)
    if BITS == 4:
        b_even, b_odd = tl.split(tl.reshape(bits, [B1, NBI, B2 // 2, 2]))  # [B1, NBI, B2/2] each
        k_even, _ = tl.split(tl.reshape(k, [B1, NBI, B2 // 2, 2]))
        ok_even, _ = tl.split(tl.reshape(ok, [B1, NBI, B2 // 2, 2]))
        byte = ((b_even & 15) | ((b_odd & 15) << 4)).to(tl.int8)
        tl.store(codes_ptr + row * (K // 2) + k_even // 2, byte, mask=ok_even)
    else:
        tl.store(codes_ptr + row * K + k, bits.to(tl.int8), mask=ok)


@triton.jit
def _scale_of(amax, clip, BITS: tl.constexpr):
    QMAX: tl.constexpr = (1 << (BITS - 1)) - 1
    scale = tl.math.div_rn(amax * clip, QMAX * 1.0)  # the reference's float32 ops, in its order
    scale = tl.where(scale > 0.0, scale, 1.0)
    return scale, tl.math.div_rn(1.0, scale)


@triton.jit
def _act_quant_kernel(
    x_ptr, codes_ptr, scale_ptr,
    M, K, stride_xm, clip, inv_sqrt,
    BITS: tl.constexpr, HAD: tl.constexpr, HBLOCK: tl.constexpr,
    BLK: tl.constexpr, B1: tl.constexpr, NBI: tl.constexpr, B2: tl.constexpr, NUM_ITERS: tl.constexpr,
    X_PARTS: tl.constexpr, DOT_F32: tl.constexpr,
):  # fmt: skip
    """Persistent over rows: program ``p`` handles rows ``p, p + P, ...``."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    if HAD:
        h1 = hadamard_pm1(B1, B1)  # [B1, B1]
        h2 = hadamard_pm1(B2, HBLOCK)  # [B2, B2], block-diagonal when HBLOCK < B2
    else:
        h1 = 0.0
        h2 = 0.0
    if NUM_ITERS == 1:
        # the row fits one tile: read it once, and issue the next row's loads before this row's math
        x_next = _row_tile(x_ptr, pid.to(tl.int64) * stride_xm, 0, tl.where(pid < M, K, 0), BLK, B1, NBI, B2)
        for i in range(0, tl.cdiv(M - pid, nprog)):
            row = (pid + i * nprog).to(tl.int64)
            x = x_next
            nxt = row + nprog
            x_next = _row_tile(x_ptr, nxt * stride_xm, 0, tl.where(nxt < M, K, 0), BLK, B1, NBI, B2)
            y = _transform(x, h1, h2, inv_sqrt, HAD, B1, NBI, B2, X_PARTS, DOT_F32)  # [B1, NBI, B2] fp32
            scale, inv = _scale_of(_absmax(y), clip, BITS)
            tl.store(scale_ptr + row, scale)
            _quantize_store(y, 0, scale, inv, codes_ptr, row, K, BITS, BLK, B1, NBI, B2)
    else:
        # a long row: pass 1 finds the absmax, pass 2 re-reads the row (from L2) and quantizes it
        for i in range(0, tl.cdiv(M - pid, nprog)):
            row = (pid + i * nprog).to(tl.int64)
            off = row * stride_xm
            amax = 0.0
            for it in range(0, NUM_ITERS):
                x = _row_tile(x_ptr, off, it * NBI, K, BLK, B1, NBI, B2)
                amax = tl.maximum(amax, _absmax(_transform(x, h1, h2, inv_sqrt, HAD, B1, NBI, B2, X_PARTS, DOT_F32)))
            scale, inv = _scale_of(amax, clip, BITS)
            tl.store(scale_ptr + row, scale)
            for it in range(0, NUM_ITERS):
                x = _row_tile(x_ptr, off, it * NBI, K, BLK, B1, NBI, B2)
                y = _transform(x, h1, h2, inv_sqrt, HAD, B1, NBI, B2, X_PARTS, DOT_F32)
                _quantize_store(y, it * NBI, scale, inv, codes_ptr, row, K, BITS, BLK, B1, NBI, B2)


def _plan(k: int, block: int | None) -> dict:
    """Tile shape ``[B1, NBI, B2]`` and the pass count for a row of ``k`` columns.

    A row of up to one tile is held at once; a longer one is cut into ``NUM_ITERS`` tiles of ``NBI`` blocks,
    ``NBI`` as small as the power-of-two tiling allows (so little of the last tile is masked).
    """
    if block is None:
        b2 = min(next_power_of_2(k), 256)
        b1, blk = 1, b2
        tile = TILE_PLAIN
        min_nbi = 1
    else:
        b1, b2 = factor_block(block)
        blk = b1 * b2
        tile = TILE_HADAMARD
        min_nbi = 16 // b1 if b1 < 16 else 1  # tl.dot needs 16 rows
    blocks = triton.cdiv(k, blk)
    max_nbi = max(tile // blk, 1)
    iters = triton.cdiv(blocks, max_nbi)
    nbi = max(next_power_of_2(triton.cdiv(blocks, iters)), min_nbi)
    return {"BLK": blk, "B1": b1, "NBI": nbi, "B2": b2, "NUM_ITERS": triton.cdiv(blocks, nbi)}


def _check(x: torch.Tensor, bits: int, clip_ratio: float, hadamard_block: int | None, name: str) -> int:
    if x.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"{name}: x must be bfloat16, float16 or float32, got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"{name}: x must be [..., K] with K > 0, got {tuple(x.shape)}")
    k = x.shape[-1]
    if bits not in (4, 8):
        raise ValueError(f"{name}: bits must be 4 or 8, got {bits}")
    if bits == 4 and k % 2 != 0:
        raise ValueError(f"{name}: int4 packing needs an even K, got K={k}")
    if not 0.0 < float(clip_ratio) <= 1.0:
        raise ValueError(f"{name}: clip_ratio must lie in (0, 1], got {clip_ratio}")
    if hadamard_block is not None:
        if not is_power_of_two(hadamard_block) or k % hadamard_block != 0:
            raise ValueError(f"{name}: hadamard_block={hadamard_block} must be a power of two dividing K={k}")
        if hadamard_block > 16384:
            raise ValueError(f"{name}: hadamard_block={hadamard_block} exceeds the in-kernel limit 16384")
    return k


def quantize_activation_triton(
    x: torch.Tensor,
    bits: int = 4,
    clip_ratio: float = 1.0,
    hadamard_block: int | None = None,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token symmetric quantization of ``x``, optionally after a block Hadamard along K.

    - ``x``: ``[..., K]`` bfloat16, float16 or float32 (leading dims are flattened to M rows);
    - ``hadamard_block``: None, or a power of two dividing K: ``x`` is first multiplied by
      ``blockdiag(H_b, ..., H_b)`` (orthonormal Sylvester blocks, as ``apply_block_hadamard``);
    - returns ``codes``: int8 ``[..., K/2]`` (bits=4, ``pack_int4`` layout) or int8 ``[..., K]`` (bits=8),
      and ``scale``: float32 ``[..., 1]`` with ``scale = clip_ratio * max|x_row| / (2^(bits-1) - 1)``
      (1 for an all-zero row), codes ``= clamp(round_half_even(x / scale))``;
    - ``out``: optional preallocated ``(codes [M, K/2 or K], scale [M, 1])``, contiguous.
    """
    name = "quantize_activation_triton"
    k = _check(x, bits, clip_ratio, hadamard_block, name)
    device = check_device(name, x)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)  # [M, K]
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    shapes = ((m, k // 2 if bits == 4 else k), (m, 1))
    if out is None:
        codes = torch.empty(shapes[0], dtype=torch.int8, device=device)
        scale = torch.empty(shapes[1], dtype=torch.float32, device=device)
    else:
        codes, scale = out
        for t, shape, dtype in ((codes, shapes[0], torch.int8), (scale, shapes[1], torch.float32)):
            if tuple(t.shape) != shape or t.dtype != dtype or t.device != device or not t.is_contiguous():
                raise ValueError(f"{name}: out tensors must be contiguous int8 {shapes[0]} and float32 {shapes[1]}")
    if m == 0:
        return codes.reshape(*lead, -1), scale.reshape(*lead, 1)
    plan = _plan(k, hadamard_block)
    had = hadamard_block is not None
    elems = plan["B1"] * plan["NBI"] * plan["B2"]
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 2
    _act_quant_kernel[(min(m, PROGRAMS_PER_SM * sms),)](
        x2, codes, scale,
        m, k, x2.stride(0), float(clip_ratio), 1.0 / math.sqrt(hadamard_block) if had else 1.0,
        BITS=bits, HAD=had, HBLOCK=hadamard_block or 1, X_PARTS=split_parts(x.dtype), DOT_F32=INTERPRET,
        num_warps=ACT_WARPS if elems <= 4096 else 8, enable_fp_fusion=False, **plan,
    )  # fmt: skip
    return codes.reshape(*lead, -1), scale.reshape(*lead, 1)


def quantize_activation_reference(
    x: torch.Tensor, bits: int = 4, clip_ratio: float = 1.0, hadamard_block: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for :func:`quantize_activation_triton` (same contract), from ``quota.quant``.

    The Hadamard runs in float32 (``apply_block_hadamard`` on ``x.float()``), so the rotated row is not
    rounded back to ``x``'s dtype before quantization.
    """
    _check(x, bits, clip_ratio, hadamard_block, "quantize_activation_reference")
    y = x.float() if hadamard_block is None else apply_block_hadamard(x.float(), hadamard_block)
    codes, scale = quantize_activation(y, bits, clip_ratio)  # [..., K] int8, [..., 1] fp32
    if bits == 4:
        codes = pack_int4(codes)
    return codes, scale
