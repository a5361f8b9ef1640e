"""W4 decode GEMV: ``M <= 16`` rows against int4 weights, split-K, the input quantized inside the kernel.

``out[m, n] = a_scale[m] * w_scale[n] * sum_k q[m, k] * w[n, k] (+ bias[n])``, ``q`` the per-token int4 codes of
``x`` (``quantize_activation_reference(x, 4, clip_ratio)``: ``scale = clip * absmax / 7``, round half to even).

Decode reads every weight byte once per step and little else, so the kernel is shaped for weight bandwidth:
a program owns ``BLOCK_N`` output channels and one of ``SPLIT_K`` shares of K (K = 11008 for a 7B MLP down
projection gives few programs otherwise); the int32 partial tiles meet through
:func:`quota.kernels.w4a4_gemm.splitk_reduce` (integer atomics, exact and order-free, last program applies the
float32 epilogue). The weights are unpacked as in the GEMM (``16 * nibble``, two dots of K/2).

Two input forms:

- :func:`w4_gemv`: ``x`` in bfloat16/float16/float32. A first tiny kernel (:func:`row_scales`) finds each row's
  scale; the GEMV programs then quantize their ``[M, BLOCK_K]`` slice of ``x`` in registers (the same float32
  ops as the reference, so the codes are equal) and never write codes to memory. Every program of a K share
  repeats that rounding, which is free at M = 1 and not at M = 16: :data:`QUANT_IN_MAX_M` is where
  :class:`quota.quantize.linear.QuantLinear` switches to the second form.
- :func:`w4_gemv_codes`: codes and scales already made by :mod:`quota.kernels.act_quant` (the path with an
  online Hadamard, and for larger M), the contract of :func:`quota.kernels.w4a4_gemm.w4a4_matmul`.

The integer sums are exact; the epilogue is the reference's float32 ``(acc * a_scale) * w_scale + bias``, so
the result equals :func:`w4_gemv_reference` (and ``QuantLinear``'s reference path) bit for bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from quota.kernels._env import INTERPRET, check_device, next_power_of_2, pick_configs, settled_bench
from quota.kernels.act_quant import quantize_activation_reference
from quota.kernels.w4a4_gemm import (
    MAX_K_INT4, USE_ASM_UNPACK, _unpack_x16, epilogue_store, splitk_reduce, splitk_workspace,
)  # fmt: skip
from quota.quant.int4 import unpack_int4

MAX_M = 16  # rows of one tl.dot tile: the GEMV's domain
QUANT_IN_MAX_M = 4  # QuantLinear quantizes inside the GEMV up to this many rows (a guess until measured)


def _config(bn, bkb, split_k, warps=4, stages=4):
    return triton.Config({"BLOCK_N": bn, "BLOCK_KB": bkb, "SPLIT_K": split_k}, num_warps=warps, num_stages=stages)


_CONFIGS = [  # BLOCK_KB counts weight bytes (two int4 codes each)
    _config(32, 256, 1),
    _config(64, 256, 1),
    _config(32, 512, 1, stages=3),
    _config(32, 256, 2),
    _config(64, 256, 2),
    _config(32, 256, 4),
    _config(64, 128, 4),
    _config(64, 256, 4, stages=3),
    _config(128, 128, 4),
    _config(32, 128, 8),
    _config(64, 128, 8),
]
_INTERPRET_CONFIG = _config(32, 32, 1, stages=1)


def _prune(configs, named_args, **kwargs):
    """Drop splits that would leave a program fewer than two K blocks."""
    if INTERPRET:
        return configs
    kb = named_args["KB"]
    keep = [c for c in configs if triton.cdiv(kb, c.kwargs["BLOCK_KB"]) >= 2 * c.kwargs["SPLIT_K"]]
    return keep or configs[:1]


@triton.jit
def _quantize_tile(y, scale, inv):
    """int4 codes ``clamp(round_half_even(y / scale), -8, 7)`` of a float32 tile as int8.

    ``y * inv`` is within 2^-23 relative of the quotient; where it lies within 2^-20 of a rounding boundary
    anywhere in the tile (or ``inv`` overflowed), the tile is redone with IEEE division: the reference's codes."""
    q = tl.minimum(tl.maximum(y * inv, -8.0), 7.0)
    t = q + 12582912.0  # 1.5 * 2^23: rounds half to even
    near = 0.5 - tl.abs(q - (t - 12582912.0)) <= tl.abs(q) * 9.5367431640625e-07 + 1e-30
    need = tl.max(tl.max((near | (inv > 1e38)).to(tl.int32), axis=1), axis=0)
    if need > 0:
        q = tl.minimum(tl.maximum(tl.math.div_rn(y, scale), -8.0), 7.0)
        t = q + 12582912.0
    return (t - 12582912.0).to(tl.int8)


@triton.jit
def _row_scale_kernel(x_ptr, scale_ptr, K, stride_xm, clip, BLOCK: tl.constexpr):
    """Program ``m``: ``scale[m] = clip * max|x[m]| / 7`` (1 for a zero row), the reference's float32 ops."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    amax = tl.zeros((BLOCK,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK):
        x = tl.load(x_ptr + row * stride_xm + k0 + offs, mask=k0 + offs < K, other=0.0)
        amax = tl.maximum(amax, tl.abs(x.to(tl.float32)))
    scale = tl.math.div_rn(tl.max(amax, axis=0) * clip, 7.0)
    tl.store(scale_ptr + row, tl.where(scale > 0.0, scale, 1.0))


@triton.autotune(
    configs=pick_configs(_CONFIGS, _INTERPRET_CONFIG),
    key=["M_BUCKET", "N", "KB", "QUANT_IN"],
    prune_configs_by={"early_config_prune": _prune},
    do_bench=None if INTERPRET else settled_bench(),  # waits for queued work first
)
@triton.jit
def _gemv_kernel(
    x_ptr, a_scale_ptr, w_ptr, w_scale_ptr, bias_ptr, c_ptr, ws_ptr, lock_ptr,
    M, N, KB, M_BUCKET,
    stride_xm, stride_wn, stride_cm,
    QUANT_IN: tl.constexpr, HAS_BIAS: tl.constexpr, USE_ASM: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_KB: tl.constexpr, SPLIT_K: tl.constexpr,
):  # fmt: skip
    """Program ``(n tile, K share)``. ``x``: bf16/fp16/fp32 ``[M, 2 KB]`` (``QUANT_IN``) or packed int4 codes
    ``[M, KB]``; ``w``: packed ``[N, KB]``; ``a_scale``: ``[M]`` float32; ``c``: ``[M, N]``."""
    BLOCK_M: tl.constexpr = 16
    pid_n = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)  # [BM]
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    rm = offs_m % M  # rows past M re-read row < M (their results are never stored)
    rn = tl.max_contiguous(tl.multiple_of(offs_n % N, BLOCK_N), BLOCK_N)
    blocks = tl.cdiv(KB, BLOCK_KB)
    per = tl.cdiv(blocks, SPLIT_K)
    kb0 = tl.program_id(1) * per
    kb1 = tl.minimum(kb0 + per, blocks)
    offs_k = tl.arange(0, BLOCK_KB)  # [BKB] bytes
    w_ptrs = w_ptr + rn[:, None] * stride_wn + kb0 * BLOCK_KB + offs_k[None, :]  # [BN, BKB]
    if QUANT_IN:
        a_s = tl.load(a_scale_ptr + rm)  # [BM] fp32
        inv = tl.math.div_rn(1.0, a_s)[:, None]  # [BM, 1]
        two = tl.arange(0, 2)
        x_ptrs = x_ptr + rm[:, None, None] * stride_xm + 2 * (kb0 * BLOCK_KB + offs_k)[None, :, None] + two  # [BM, BKB, 2]
    else:
        x_ptrs = x_ptr + rm[:, None] * stride_xm + kb0 * BLOCK_KB + offs_k[None, :]  # [BM, BKB]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for kb in range(kb0, kb1):
        k_ok = offs_k < KB - kb * BLOCK_KB  # [BKB]
        w = tl.load(w_ptrs, mask=k_ok[None, :], other=0)
        w_lo, w_hi = _unpack_x16(w, USE_ASM)  # [BN, BKB] int8: 16 x element 2j, 16 x element 2j + 1
        if QUANT_IN:
            x = tl.load(x_ptrs, mask=k_ok[None, :, None], other=0.0).to(tl.float32)  # [BM, BKB, 2]
            x_even, x_odd = tl.split(x)  # [BM, BKB] each
            a_lo = _quantize_tile(x_even, a_s[:, None], inv)
            a_hi = _quantize_tile(x_odd, a_s[:, None], inv)
            x_ptrs += 2 * BLOCK_KB
        else:
            a = tl.load(x_ptrs, mask=k_ok[None, :], other=0)
            a_lo, a_hi = _unpack_x16(a, USE_ASM)
            x_ptrs += BLOCK_KB
        acc = tl.dot(a_lo, tl.trans(w_lo), acc, out_dtype=tl.int32)
        acc = tl.dot(a_hi, tl.trans(w_hi), acc, out_dtype=tl.int32)
        w_ptrs += BLOCK_KB

    inv_scale: tl.constexpr = 0.0625 if QUANT_IN else 0.00390625  # 1/16 (weights x16) or 1/256 (both)
    if SPLIT_K == 1:
        epilogue_store(acc, offs_m, offs_n, M, N, a_scale_ptr, w_scale_ptr, bias_ptr, c_ptr, stride_cm, True,
                       HAS_BIAS, inv_scale)  # fmt: skip
    else:
        total, last = splitk_reduce(acc, ws_ptr, lock_ptr, pid_n, offs_m, offs_n, M, N, SPLIT_K)
        epilogue_store(total, offs_m, offs_n, M, N, a_scale_ptr, w_scale_ptr, bias_ptr, c_ptr, stride_cm, last,
                       HAS_BIAS, inv_scale)  # fmt: skip


def _m_bucket(m: int) -> int:
    return next_power_of_2(m)


def row_scales(x: torch.Tensor, clip_ratio: float = 1.0) -> torch.Tensor:
    """float32 ``[M]`` per-token int4 scales of ``x`` ``[M, K]`` (unit stride along K): the first pass of
    :func:`w4_gemv`, equal to ``quantize_activation(x, 4, clip_ratio)[1]``."""
    m, k = x.shape
    scale = torch.empty((m,), dtype=torch.float32, device=x.device)
    _row_scale_kernel[(m,)](x, scale, k, x.stride(0), float(clip_ratio), BLOCK=min(next_power_of_2(k), 2048))
    return scale


def _check(x, w_packed, w_scale, bias, out_dtype, quant_in: bool, name: str) -> tuple[int, int, int]:
    if x.dim() != 2 or w_packed.dim() != 2:
        raise ValueError(f"{name}: need x [M, K] and w_packed [N, K/2], got {list(x.shape)} {list(w_packed.shape)}")
    m, n, kb = x.shape[0], w_packed.shape[0], w_packed.shape[1]
    if not 1 <= m <= MAX_M:
        raise ValueError(f"{name}: the GEMV takes 1 to {MAX_M} rows, got M={m}; use w4a4_matmul")
    if w_packed.dtype != torch.int8 or w_packed.stride(1) != 1 or n == 0 or kb == 0:
        raise ValueError(f"{name}: w_packed must be non-empty K-major int8 [N, K/2], got {w_packed.dtype}")
    if quant_in:
        if x.dtype not in (torch.bfloat16, torch.float16, torch.float32) or x.shape[1] != 2 * kb:
            raise ValueError(f"{name}: x must be a float [M, K={2 * kb}] tensor, got {x.dtype} {list(x.shape)}")
    elif x.dtype != torch.int8 or x.shape[1] != kb:
        raise ValueError(f"{name}: codes must be int8 [M, K/2={kb}], got {x.dtype} {list(x.shape)}")
    if x.stride(1) != 1:
        raise ValueError(f"{name}: x must have unit stride along K")
    if 2 * kb > MAX_K_INT4:
        raise ValueError(f"{name}: K={2 * kb} exceeds the exact int32 accumulation limit {MAX_K_INT4}")
    if w_scale.dtype != torch.float32 or w_scale.numel() != n:
        raise ValueError(f"{name}: w_scale must be float32 [N={n}], got {w_scale.dtype} {tuple(w_scale.shape)}")
    if bias is not None and (bias.dim() != 1 or bias.numel() != n or not bias.is_floating_point()):
        raise ValueError(f"{name}: bias must be a float [N={n}] vector")
    if out_dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"{name}: out_dtype must be bfloat16, float16 or float32, got {out_dtype}")
    return m, n, kb


def _launch(x, a_scale, w_packed, w_scale, bias, out_dtype, out, quant_in, config, name) -> torch.Tensor:
    m, n, kb = _check(x, w_packed, w_scale, bias, out_dtype, quant_in, name)
    device = check_device(name, *[t for t in (x, a_scale, w_packed, w_scale, bias) if t is not None])
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=device)
    elif out.shape != (m, n) or out.dtype != out_dtype or out.device != device or out.stride(1) != 1:
        raise ValueError(f"{name}: out must be {out_dtype} [{m}, {n}] on {device} with unit column stride")
    ws, locks = splitk_workspace(device, m * n, triton.cdiv(n, 32))

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])

    kernel, extra = _gemv_kernel, {}
    if config is not None:  # a fixed configuration (tests, benchmarks), past the autotuner
        kernel, extra = _gemv_kernel.fn, {**config.all_kwargs()}
    kernel[grid](
        x, a_scale, w_packed, w_scale.reshape(n).contiguous(), bias if bias is not None else a_scale, out, ws, locks,
        m, n, kb, _m_bucket(m),
        x.stride(0), w_packed.stride(0), out.stride(0),
        QUANT_IN=quant_in, HAS_BIAS=bias is not None, USE_ASM=USE_ASM_UNPACK and not INTERPRET, **extra,
    )  # fmt: skip
    return out


def w4_gemv(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    clip_ratio: float = 1.0,
    out_dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
    config: triton.Config | None = None,
) -> torch.Tensor:
    """``[M, N]`` W4A4 product of a float input quantized inside the kernel (no online Hadamard here).

    - ``x``: ``[M, K]`` bfloat16, float16 or float32, ``1 <= M <= 16``, unit stride along K;
    - ``w_packed``: int8 ``[N, K/2]`` (``pack_int4`` layout, K-major), ``w_scale``: float32 ``[N]`` (or ``[N, 1]``);
    - ``bias``: float ``[N]`` or None; ``clip_ratio``: the activation clip, in (0, 1];
    - ``out_dtype``: defaults to ``x.dtype``; ``out``: optional preallocated ``[M, N]``;
    - ``config``: a fixed ``triton.Config`` instead of the autotuner's choice.
    """
    if not 0.0 < float(clip_ratio) <= 1.0:
        raise ValueError(f"w4_gemv: clip_ratio must lie in (0, 1], got {clip_ratio}")
    if x.dim() == 2 and x.shape[0] >= 1 and x.stride(-1) == 1:
        check_device("w4_gemv", x)
        a_scale = row_scales(x, clip_ratio)  # [M]
    else:
        a_scale = torch.ones(x.shape[:1], dtype=torch.float32, device=x.device)  # _check names the problem
    return _launch(x, a_scale, w_packed, w_scale, bias, out_dtype or x.dtype, out, True, config, "w4_gemv")


def w4_gemv_codes(
    a_packed: torch.Tensor,
    a_scale: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    out: torch.Tensor | None = None,
    config: triton.Config | None = None,
) -> torch.Tensor:
    """:func:`quota.kernels.w4a4_gemm.w4a4_matmul`'s contract for ``1 <= M <= 16`` rows, through the split-K GEMV:
    ``a_packed`` int8 ``[M, K/2]`` codes and ``a_scale`` float32 ``[M, 1]`` from ``act_quant``."""
    if a_scale.dtype != torch.float32 or a_scale.numel() != a_packed.shape[0]:
        raise ValueError(f"w4_gemv_codes: a_scale must be float32 [M, 1], got {a_scale.dtype} {tuple(a_scale.shape)}")
    a_scale = a_scale.reshape(-1).contiguous()
    return _launch(a_packed, a_scale, w_packed, w_scale, bias, out_dtype, out, False, config, "w4_gemv_codes")


def w4_gemv_reference(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    clip_ratio: float = 1.0,
    hadamard_block: int | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Reference for :func:`w4_gemv` (and, with ``hadamard_block``, for act_quant + :func:`w4_gemv_codes`):
    codes of ``quantize_activation_reference``, an exact integer product (float64), then the float32 epilogue
    ``(acc * a_scale) * w_scale + bias`` as ``QuantLinear``'s reference path, cast to ``out_dtype``."""
    packed, a_scale = quantize_activation_reference(x, 4, clip_ratio, hadamard_block)  # [M, K/2], [M, 1]
    acc = (unpack_int4(packed).double() @ unpack_int4(w_packed).double().T).float()  # [M, N], exact below 2^24
    y = acc * a_scale * w_scale.float().reshape(1, -1)
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype or x.dtype)
