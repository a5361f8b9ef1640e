"""KV-cache write: quantize new keys or values per token, head and group, and store them in place.

Layout of one layer's cache for one of K or V (plain tensors, allocated by the caller, e.g. with
:func:`allocate_kv_cache`):

- ``codes``: uint8 ``[B, H_kv, S_cap, D // 2]`` for 4 bits (two codes per byte, element ``2i`` in the
  low nibble: ``quota.quant.int4.pack_uint4``) or uint8 ``[B, H_kv, S_cap, D]`` for 8 bits;
- ``scale``, ``zero``: float32 ``[B, H_kv, S_cap, D // group_size]``;
- a value is ``code * scale + zero`` (asymmetric min/max quantization,
  ``quota.quant.quantizers.quantize_asymmetric``: ``zero`` is the group minimum, ``scale`` is
  ``(max - min) / (2^bits - 1)``, shrunk around the midpoint by ``clip_ratio``).

Scales are float32 so that the kernel and the reference agree bit for bit (float32 true division,
round half to even). Position ``s`` of the cache holds token ``s``; the length in use is tracked by the
caller and passed to the attention kernels, so each layer may hold a different length.

Keys are written after RoPE. With ``hadamard=True`` (power-of-two ``D``) the head dimension is first
rotated by the orthonormal Sylvester Hadamard ``H_D``, which spreads outlier channels before
quantization; queries must then be rotated by the same ``H_D`` (``apply_block_hadamard(q, D)``), which
leaves ``q . k`` unchanged since ``H_D`` is orthogonal and symmetric.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from quota.kernels._env import INTERPRET, check_device, next_power_of_2
from quota.kernels._hadamard_tl import dot_split_right, hadamard_pm1, split_parts
from quota.quant.hadamard import apply_block_hadamard, is_power_of_two
from quota.quant.int4 import pack_uint4
from quota.quant.quantizers import quantize_asymmetric


@triton.jit
def _kv_write_kernel(
    x_ptr, codes_ptr, scale_ptr, zero_ptr, start_ptr,
    T, start, clip, inv_sqrt,
    stride_xb, stride_xh, stride_xt,
    H, S_CAP, D: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, GS: tl.constexpr,
    BITS: tl.constexpr, HAS_CLIP: tl.constexpr, HAD: tl.constexpr, X_PARTS: tl.constexpr, DOT_F32: tl.constexpr,
    BLOCK_T: tl.constexpr, START_ON_DEVICE: tl.constexpr,
):  # fmt: skip
    pid_t = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    LEVELS: tl.constexpr = (1 << BITS) - 1

    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)[:, None, None]  # [BT, 1, 1]
    g = tl.arange(0, GP)[None, :, None]  # [1, GP, 1]
    j = tl.arange(0, GS)[None, None, :]  # [1, 1, GS]
    if START_ON_DEVICE:  # read at run time (a CUDA graph replays this launch at a new position)
        start = tl.load(start_ptr)
    ok = (t < T) & (g < G) & (start + t < S_CAP)  # [BT, GP, 1]; rows past the capacity are never written
    x_base = x_ptr + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh
    x = tl.load(x_base + t * stride_xt + g * GS + j, mask=ok, other=0.0)  # [BT, GP, GS]
    if HAD:  # D == GP * GS is a power of two here
        y = dot_split_right(tl.reshape(x, [BLOCK_T, D]), hadamard_pm1(D, D), X_PARTS, DOT_F32)  # [BT, D]
        y = tl.reshape(y * inv_sqrt, [BLOCK_T, GP, GS])
    else:
        y = x.to(tl.float32)

    lo = tl.min(y, axis=2)  # [BT, GP]
    hi = tl.max(y, axis=2)
    if HAS_CLIP:  # the reference's float32 ops, in its order
        mid = (hi + lo) * 0.5
        half = (hi - lo) * 0.5 * clip
        lo = mid - half
        hi = mid + half
    scale = tl.math.div_rn(hi - lo, LEVELS * 1.0)
    scale = tl.where(scale > 0.0, scale, 1.0)
    q = tl.math.div_rn(y - lo[:, :, None], scale[:, :, None])
    q = (q + 12582912.0) - 12582912.0  # round half to even
    q = tl.minimum(tl.maximum(q, 0.0), LEVELS * 1.0).to(tl.int32)  # [BT, GP, GS]

    row = (bh.to(tl.int64) * S_CAP + start + t)  # [BT, 1, 1] cache rows
    meta = row * G + g  # [BT, GP, 1]
    tl.store(scale_ptr + meta, scale[:, :, None], mask=ok)
    tl.store(zero_ptr + meta, lo[:, :, None], mask=ok)
    if BITS == 4:
        q_even, q_odd = tl.split(tl.reshape(q, [BLOCK_T, GP, GS // 2, 2]))  # [BT, GP, GS/2]
        jj = tl.arange(0, GS // 2)[None, None, :]
        byte = (q_even | (q_odd << 4)).to(tl.uint8)
        tl.store(codes_ptr + row * (D // 2) + g * (GS // 2) + jj, byte, mask=ok)
    else:
        tl.store(codes_ptr + row * D + g * GS + j, q.to(tl.uint8), mask=ok)


def _check_cache(codes, scale, zero, bits, group_size, d, name):
    if bits not in (4, 8):
        raise ValueError(f"{name}: bits must be 4 or 8, got {bits}")
    if group_size < 2 or not is_power_of_two(group_size) or d % group_size != 0:
        raise ValueError(f"{name}: group_size={group_size} must be a power of two >= 2 dividing head_dim={d}")
    if codes.dtype != torch.uint8 or codes.dim() != 4:
        shape = tuple(codes.shape)
        raise ValueError(f"{name}: codes must be uint8 [B, H_kv, S_cap, D/2 or D], got {codes.dtype} {shape}")
    width = d // 2 if bits == 4 else d
    if codes.shape[-1] != width:
        raise ValueError(f"{name}: codes last dim must be {width} for {bits}-bit head_dim {d}, got {codes.shape[-1]}")
    want = (*codes.shape[:3], d // group_size)
    for t, label in ((scale, "scale"), (zero, "zero")):
        if t.dtype != torch.float32 or tuple(t.shape) != want:
            raise ValueError(f"{name}: {label} must be float32 {want}, got {t.dtype} {tuple(t.shape)}")
    for t in (codes, scale, zero):
        if not t.is_contiguous():
            raise ValueError(f"{name}: cache tensors must be contiguous")


def check_cache_pair(name, b, hq, d, k_cache, v_cache, bits, group_size) -> tuple[int, int]:
    """``(H_kv, S_cap)`` after checking the (codes, scale, zero) K and V caches an attention kernel reads for ``b``
    sequences of ``hq`` query heads of ``d`` dims: uint8 codes ``[B, H_kv, S_cap, D/2 or D]`` shared by K and V,
    ``H_q`` a multiple of ``H_kv``, float32 scale and zero ``[B, H_kv, S_cap, D / group_size]``, every tensor
    contiguous. One-line ``ValueError`` prefixed with ``name``."""
    if len(k_cache) != 3 or len(v_cache) != 3:
        raise ValueError(f"{name}: k_cache and v_cache are (codes, scale, zero) tuples")
    width = d // 2 if bits == 4 else d
    codes = k_cache[0]
    if codes.dim() != 4 or codes.shape[0] != b or codes.shape[3] != width or codes.dtype != torch.uint8:
        raise ValueError(
            f"{name}: cache codes must be uint8 [B={b}, H_kv, S_cap, {width}], got {codes.dtype} {tuple(codes.shape)}"
        )
    hkv, s_cap = codes.shape[1], codes.shape[2]
    if hq % hkv != 0:
        raise ValueError(f"{name}: H_q={hq} is not a multiple of H_kv={hkv}")
    meta = (b, hkv, s_cap, d // group_size)
    for cache in (k_cache, v_cache):
        c, s, z = cache
        if tuple(c.shape) != tuple(codes.shape) or c.dtype != torch.uint8:
            raise ValueError(f"{name}: K and V codes must share shape {tuple(codes.shape)}")
        for x in (s, z):
            if x.dtype != torch.float32 or tuple(x.shape) != meta:
                raise ValueError(f"{name}: scale/zero must be float32 {meta}, got {x.dtype} {tuple(x.shape)}")
        for x in cache:
            if not x.is_contiguous():
                raise ValueError(f"{name}: cache tensors must be contiguous")
    return hkv, s_cap


def check_kv_start(name, kv_start, b) -> None:
    """``kv_start`` (the first valid cache position of each sequence) must be ``None`` or int32 ``[B]``."""
    if kv_start is not None and (kv_start.dtype != torch.int32 or tuple(kv_start.shape) != (b,)):
        raise ValueError(f"{name}: kv_start must be int32 [B={b}], got {kv_start.dtype} {tuple(kv_start.shape)}")


def allocate_kv_cache(
    batch: int, heads: int, capacity: int, head_dim: int, bits: int, group_size: int, device="cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Empty ``(codes, scale, zero)`` for one of K or V of one layer, in the layout above."""
    width = head_dim // 2 if bits == 4 else head_dim
    codes = torch.zeros((batch, heads, capacity, width), dtype=torch.uint8, device=device)
    meta = (batch, heads, capacity, head_dim // group_size)
    scale = torch.ones(meta, dtype=torch.float32, device=device)
    return codes, scale, torch.zeros(meta, dtype=torch.float32, device=device)


def kv_cache_write(
    x: torch.Tensor,
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    start: int | torch.Tensor,
    bits: int,
    group_size: int,
    clip_ratio: float = 1.0,
    hadamard: bool = False,
) -> None:
    """Quantize ``x`` and write it into the cache at positions ``[start, start + T)``, in place.

    ``start`` is an int, or an int32 tensor of one element on the cache's device, read by the kernel when it
    runs (so that a captured CUDA graph writes each replay at the position the tensor then holds); a tensor
    start is not checked against the capacity on the host (that would synchronize), and rows that would fall
    past ``S_cap`` are not written.

    - ``x``: ``[B, H_kv, T, D]`` bfloat16, float16 or float32 (keys after RoPE, or values);
    - ``codes``: uint8 ``[B, H_kv, S_cap, D/2]`` (bits=4) or ``[B, H_kv, S_cap, D]`` (bits=8);
    - ``scale``, ``zero``: float32 ``[B, H_kv, S_cap, D / group_size]``;
    - ``hadamard``: rotate the head dimension by ``H_D`` first (power-of-two ``D <= 256``).

    Codes, scales and zeros equal :func:`kv_cache_write_reference`'s bit for bit without a Hadamard.
    """
    name = "kv_cache_write"
    if x.dim() != 4 or x.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"{name}: x must be [B, H_kv, T, D] bf16/fp16/fp32, got {x.dtype} {tuple(x.shape)}")
    b, h, t, d = x.shape
    _check_cache(codes, scale, zero, bits, group_size, d, name)
    if tuple(codes.shape[:2]) != (b, h):
        raise ValueError(f"{name}: cache is for [B, H_kv] = {tuple(codes.shape[:2])}, x has {(b, h)}")
    s_cap = codes.shape[2]
    start_t = None
    if isinstance(start, torch.Tensor):
        if start.dtype != torch.int32 or start.numel() != 1 or start.device != codes.device:
            raise ValueError(f"{name}: a tensor start must be one int32 element on {codes.device}, got "
                             f"{start.dtype} {tuple(start.shape)} on {start.device}")
        start_t, start = start, 0
    elif not 0 <= start or start + t > s_cap:
        raise ValueError(f"{name}: positions [{start}, {start + t}) do not fit the cache capacity {s_cap}")
    if not 0.0 < float(clip_ratio) <= 1.0:
        raise ValueError(f"{name}: clip_ratio must lie in (0, 1], got {clip_ratio}")
    if hadamard and (not is_power_of_two(d) or d > 256):
        raise ValueError(f"{name}: hadamard=True needs a power-of-two head_dim <= 256, got {d}")
    check_device(name, x, codes, scale, zero)
    if t == 0:
        return
    if x.stride(-1) != 1:
        x = x.contiguous()
    groups = d // group_size
    block_t = 16 if hadamard else min(max(next_power_of_2(t), 1), 32)
    grid = (triton.cdiv(t, block_t), b * h)
    _kv_write_kernel[grid](
        x, codes, scale, zero, start_t if start_t is not None else scale,
        t, start, float(clip_ratio), 1.0 / math.sqrt(d),
        x.stride(0), x.stride(1), x.stride(2), h, s_cap,
        D=d, G=groups, GP=next_power_of_2(groups), GS=group_size,
        BITS=bits, HAS_CLIP=float(clip_ratio) != 1.0, HAD=hadamard, X_PARTS=split_parts(x.dtype), DOT_F32=INTERPRET,
        BLOCK_T=block_t, START_ON_DEVICE=start_t is not None, num_warps=4, enable_fp_fusion=False,
    )  # fmt: skip


def quantize_kv_reference(
    x: torch.Tensor, bits: int, group_size: int, clip_ratio: float = 1.0, hadamard: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x`` ``[..., D]`` -> ``(codes, scale, zero)`` in the cache layout (codes packed for 4 bits)."""
    y = x.float()
    if hadamard:
        y = apply_block_hadamard(y, x.shape[-1])
    codes, scale, zero = quantize_asymmetric(y, bits, group_size, clip_ratio)
    if bits == 4:
        codes = pack_uint4(codes)
    return codes, scale, zero


def kv_cache_write_reference(
    x: torch.Tensor,
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    start: int,
    bits: int,
    group_size: int,
    clip_ratio: float = 1.0,
    hadamard: bool = False,
) -> None:
    """Reference for :func:`kv_cache_write` (same contract), from ``quota.quant.quantizers``."""
    t = x.shape[2]
    _check_cache(codes, scale, zero, bits, group_size, x.shape[-1], "kv_cache_write_reference")
    c, s, z = quantize_kv_reference(x, bits, group_size, clip_ratio, hadamard)
    codes[:, :, start : start + t] = c
    scale[:, :, start : start + t] = s
    zero[:, :, start : start + t] = z
