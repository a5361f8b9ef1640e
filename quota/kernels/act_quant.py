"""Fused activation quantization: optional block Hadamard, per-token absmax scale, round, pack.

Programs loop over tokens (rows). A program reads a row of ``x``, rotates it by the block-diagonal Hadamard
(``hadamard_block``, in registers: two small tensor-core dots per block, see ``_hadamard_tl``),
takes ``scale = clip * absmax / qmax``, rounds half to even, clamps, and writes int4 codes packed two
per byte (``quota.quant.int4.pack_int4``: element ``2i`` in the low nibble) or int8 codes, plus one
float32 scale. A row that fits one tile (``TILE`` elements) is read once, with the next row's loads in
flight during this row's math; a longer row is read twice, the second pass from L2, and written once.
On the GPU the tile size, the programs per SM and the warps are autotuned per (K, Hadamard block, bits,
row-count bucket) among :data:`_ACT_CONFIGS` (tiles up to 32768 elements, so a 7B row is read once); the
interpreter runs one configuration (tiles of :data:`TILE_PLAIN`, which exercises both paths).

The same kernel optionally RMS-normalizes each row first (``NORM``, used by :mod:`quota.kernels.rmsnorm_quant`).

Without a Hadamard the codes and scales are bit-identical to the reference (float32 true division,
``torch.round``). With one, the transform matches the reference's float32 butterfly to float32
accuracy but not bit for bit, so a value within rounding of a half-integer may round the other way.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from quota.kernels._env import INTERPRET, check_device, next_power_of_2, pick_configs
from quota.kernels._hadamard_tl import dot_split_left, dot_split_right, factor_block, hadamard_pm1, split_parts
from quota.quant.hadamard import apply_block_hadamard, is_power_of_two
from quota.quant.int4 import pack_int4
from quota.quant.quantizers import quantize_activation

TILE_PLAIN = 2048  # the interpreter's tile (elements of one row held at once); the GPU autotunes TILE
TILE_HADAMARD = 2048
PROGRAMS_PER_SM = 16  # the interpreter's persistent grid: programs per SM; the GPU autotunes PPS
ACT_WARPS = 4


def _act_config(tile: int, pps: int, warps: int) -> triton.Config:
    return triton.Config({"TILE": tile, "PPS": pps}, num_warps=warps)


# Candidates (tile elements, programs per SM, warps). The largest tiles hold a 7B row (4096, 11008 padded to
# 16384, 18944 to 32768) at once: one read of x instead of two, and the next row's loads in flight.
_ACT_CONFIGS = [
    _act_config(2048, 16, 4),
    _act_config(4096, 8, 4),
    _act_config(4096, 8, 8),
    _act_config(8192, 4, 8),
    _act_config(8192, 8, 8),
    _act_config(16384, 2, 16),
    _act_config(16384, 4, 8),
    _act_config(32768, 2, 16),
]
_ACT_INTERPRET = _act_config(TILE_PLAIN, PROGRAMS_PER_SM, ACT_WARPS)


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
def _prepare(x, w, NORM: tl.constexpr, HAS_W: tl.constexpr):
    """The tile the transform reads: ``x`` itself, or ``w * x`` in float32 when a norm weight applies."""
    if NORM and HAS_W:
        return x.to(tl.float32) * w
    else:
        return x


@triton.jit
def _sumsq(x, NORM: tl.constexpr):
    if NORM:
        xf = x.to(tl.float32)
        return tl.sum(tl.sum(tl.sum(xf * xf, axis=2), axis=1), axis=0)
    else:
        return 0.0


@triton.jit
def _rstd(ss, K, eps, NORM: tl.constexpr):
    """``1 / sqrt(ss / K + eps)`` with IEEE float32 ops (1 without a norm)."""
    if NORM:
        return tl.math.div_rn(1.0, tl.math.sqrt_rn(tl.math.div_rn(ss, K.to(tl.float32)) + eps))
    else:
        return 1.0


@triton.jit
def _act_quant_kernel(
    x_ptr, codes_ptr, scale_ptr, nw_ptr,
    M, K, stride_xm, clip, inv_sqrt, eps, M_BUCKET,
    BITS: tl.constexpr, HAD: tl.constexpr, HBLOCK: tl.constexpr, NORM: tl.constexpr, HAS_W: tl.constexpr,
    BLK: tl.constexpr, B1: tl.constexpr, NBI: tl.constexpr, B2: tl.constexpr, NUM_ITERS: tl.constexpr,
    X_PARTS: tl.constexpr, DOT_F32: tl.constexpr, TILE: tl.constexpr, PPS: tl.constexpr,
):  # fmt: skip
    """Persistent over rows: program ``p`` handles rows ``p, p + P, ...``.

    ``NORM``: the row is first RMS-normalized, ``y = rstd * T(w * x)`` with ``rstd = 1 / sqrt(mean(x^2) + eps)``
    (``w``: ``nw_ptr``, float32 ``[K]``, when ``HAS_W``), computed as written, in float32. Since rounding is
    monotone, ``max|y| = rstd * max|T(w * x)|`` exactly, so a long row still needs only two passes."""
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
        if NORM and HAS_W:
            kk, kok = _cols(0, K, BLK, B1, NBI, B2)
            w = tl.load(nw_ptr + kk, mask=kok, other=0.0)  # [B1, NBI, B2] fp32, once per program
        else:
            w = 1.0
        x_next = _row_tile(x_ptr, pid.to(tl.int64) * stride_xm, 0, tl.where(pid < M, K, 0), BLK, B1, NBI, B2)
        for i in range(0, tl.cdiv(M - pid, nprog)):
            row = (pid + i * nprog).to(tl.int64)
            x = x_next
            nxt = row + nprog
            x_next = _row_tile(x_ptr, nxt * stride_xm, 0, tl.where(nxt < M, K, 0), BLK, B1, NBI, B2)
            y = _transform(_prepare(x, w, NORM, HAS_W), h1, h2, inv_sqrt, HAD, B1, NBI, B2, X_PARTS, DOT_F32)
            if NORM:
                y = y * _rstd(_sumsq(x, NORM), K, eps, NORM)  # [B1, NBI, B2] fp32
            scale, inv = _scale_of(_absmax(y), clip, BITS)
            tl.store(scale_ptr + row, scale)
            _quantize_store(y, 0, scale, inv, codes_ptr, row, K, BITS, BLK, B1, NBI, B2)
    else:
        # a long row: pass 1 finds the absmax (and the sum of squares), pass 2 re-reads the row (from L2)
        for i in range(0, tl.cdiv(M - pid, nprog)):
            row = (pid + i * nprog).to(tl.int64)
            off = row * stride_xm
            amax = 0.0
            ss = 0.0
            for it in range(0, NUM_ITERS):
                x = _row_tile(x_ptr, off, it * NBI, K, BLK, B1, NBI, B2)
                if NORM and HAS_W:
                    kk, kok = _cols(it * NBI, K, BLK, B1, NBI, B2)
                    w = tl.load(nw_ptr + kk, mask=kok, other=0.0)
                else:
                    w = 1.0
                z = _transform(_prepare(x, w, NORM, HAS_W), h1, h2, inv_sqrt, HAD, B1, NBI, B2, X_PARTS, DOT_F32)
                amax = tl.maximum(amax, _absmax(z))
                ss += _sumsq(x, NORM)
            r = _rstd(ss, K, eps, NORM)
            if NORM:
                amax = amax * r
            scale, inv = _scale_of(amax, clip, BITS)
            tl.store(scale_ptr + row, scale)
            for it in range(0, NUM_ITERS):
                x = _row_tile(x_ptr, off, it * NBI, K, BLK, B1, NBI, B2)
                if NORM and HAS_W:
                    kk, kok = _cols(it * NBI, K, BLK, B1, NBI, B2)
                    w = tl.load(nw_ptr + kk, mask=kok, other=0.0)
                else:
                    w = 1.0
                y = _transform(_prepare(x, w, NORM, HAS_W), h1, h2, inv_sqrt, HAD, B1, NBI, B2, X_PARTS, DOT_F32)
                if NORM:
                    y = y * r
                _quantize_store(y, it * NBI, scale, inv, codes_ptr, row, K, BITS, BLK, B1, NBI, B2)


@functools.lru_cache(maxsize=1024)
def _plan(k: int, block: int | None, tile: int = TILE_PLAIN) -> dict:
    """Tile shape ``[B1, NBI, B2]`` and the pass count for a row of ``k`` columns and tiles of ``tile`` elements.

    A row of up to one tile is held at once; a longer one is cut into ``NUM_ITERS`` tiles of ``NBI`` blocks,
    ``NBI`` as small as the power-of-two tiling allows (so little of the last tile is masked).
    """
    if block is None:
        b2 = min(next_power_of_2(k), 256)
        b1, blk = 1, b2
        min_nbi = 1
    else:
        b1, b2 = factor_block(block)
        blk = b1 * b2
        min_nbi = 16 // b1 if b1 < 16 else 1  # tl.dot needs 16 rows
    blocks = triton.cdiv(k, blk)
    max_nbi = max(tile // blk, 1)
    iters = triton.cdiv(blocks, max_nbi)
    nbi = max(next_power_of_2(triton.cdiv(blocks, iters)), min_nbi)
    return {"BLK": blk, "B1": b1, "NBI": nbi, "B2": b2, "NUM_ITERS": triton.cdiv(blocks, nbi)}


def _plan_of(args: dict) -> dict:
    return _plan(args["K"], args["HBLOCK"] if args["HAD"] else None, args["TILE"])


def act_candidates(configs: list, k: int, block: int | None) -> list:
    """The configurations worth timing for rows of ``k`` (Hadamard ``block``): tiles no larger than twice the
    row needs, with 4 to 64 elements per thread."""
    keep = []
    for c in configs:
        plan = _plan(k, block, c.kwargs["TILE"])
        per_thread = plan["B1"] * plan["NBI"] * plan["B2"] // (32 * c.num_warps)
        if c.kwargs["TILE"] <= max(2048, 2 * next_power_of_2(k)) and 4 <= per_thread <= 64:
            keep.append(c)
    return keep or configs[:1]


def _act_prune(configs, named_args, **kwargs):
    if INTERPRET:
        return configs
    args = {**named_args, **kwargs}  # the constexprs (HAD, HBLOCK) arrive as keyword arguments
    return act_candidates(configs, args["K"], args["HBLOCK"] if args["HAD"] else None)


def _rows_bucket(m: int) -> int:
    """Autotune key for the row count: decode, short, medium and long inputs."""
    return 16 if m <= 16 else 256 if m <= 256 else 2048 if m <= 2048 else 8192


_act_quant_tuned = triton.autotune(
    configs=pick_configs(_ACT_CONFIGS, _ACT_INTERPRET),
    key=["K", "HAD", "HBLOCK", "BITS", "NORM", "HAS_W", "M_BUCKET", "X_PARTS"],
    prune_configs_by={"early_config_prune": _act_prune},
)(triton.heuristics({name: (lambda args, _n=name: _plan_of(args)[_n]) for name in ("BLK", "B1", "NBI", "B2", "NUM_ITERS")})(
    _act_quant_kernel))  # fmt: skip


def launch_act_quant(x2, codes, scale, bits, clip_ratio, hadamard_block, norm_weight=None, eps=None, config=None):
    """Run the kernel on ``x2`` ``[M, K]`` (unit stride along K) into ``codes`` and ``scale`` (checked by the
    callers). ``eps`` not None turns on the RMSNorm (``norm_weight``: float ``[K]`` or None); ``config``: a fixed
    ``triton.Config`` instead of the autotuner's choice."""
    m, k = x2.shape
    had = hadamard_block is not None
    has_w = eps is not None and norm_weight is not None
    sms = torch.cuda.get_device_properties(x2.device).multi_processor_count if x2.device.type == "cuda" else 2

    def grid(meta):
        return (min(m, meta["PPS"] * sms),)

    kernel, extra = _act_quant_tuned, {}
    if config is not None:
        kernel, extra = _act_quant_tuned.fn, {**config.all_kwargs()}
    nw = norm_weight.float().contiguous() if has_w else scale
    kernel[grid](
        x2, codes, scale, nw,
        m, k, x2.stride(0), float(clip_ratio), 1.0 / math.sqrt(hadamard_block) if had else 1.0,
        float(eps) if eps is not None else 0.0, _rows_bucket(m),
        BITS=bits, HAD=had, HBLOCK=hadamard_block or 1, NORM=eps is not None, HAS_W=has_w,
        X_PARTS=3 if has_w else split_parts(x2.dtype), DOT_F32=INTERPRET, enable_fp_fusion=False, **extra,
    )  # fmt: skip


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
    if m > 0:
        launch_act_quant(x2, codes, scale, bits, clip_ratio, hadamard_block)
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
