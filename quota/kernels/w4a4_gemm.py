"""W4A4 (and W8A8) GEMM: int8 tensor-core dot with exact int32 accumulation, scales in the epilogue.

``out[m, n] = a_scale[m] * w_scale[n] * sum_k a[m, k] * w[n, k] (+ bias[n])``

Hopper has no int4 MMA, so 4-bit codes are unpacked to int8 in registers and fed to the int8
``tl.dot`` (``wgmma ... s32.s8.s8`` on sm_90). Both operands stay K-major (activations ``[M, K/2]``,
weights ``[N, K/2]``, the ``nn.Linear`` layout): an int8 ``[K, N]`` operand runs at a tenth of peak.

The unpack costs two bitwise operations per byte and no sign extension: a byte ``b`` holding
nibbles ``(lo, hi)`` gives ``b << 4 == 16 * lo`` and ``b & 0xF0 == 16 * hi`` as signed int8. Since a
dot sums over K, the low and high nibbles of A and W are multiplied as two dots of K/2 each (no
interleave), and the int32 sum is ``256 *`` the true one, exact while ``K <= 131072``
(``|16 a * 16 w| <= 2^14``). The epilogue divides by 256 (exact in float32 while ``K < 2^18``).

Packing is :func:`quota.quant.int4.pack_int4`'s: element ``2i`` in the low nibble of byte ``i``.

Split-K (configurations with ``SPLIT_K > 1``, offered for 64 <= M <= 1024, where a prefill's tiles fill less
than a wave): program ``(tile, s)`` sums the ``s``-th share of K's blocks, adds its int32 tile into a zeroed
int32 workspace with integer atomics (order-free, so exact and deterministic) and counts itself on the tile's
counter; the last program of a tile reads the sum, applies the epilogue and zeroes the workspace tile and the
counter again, so the cached buffers are ready for the next launch without a memset (:func:`splitk_reduce`).
Launches that share a workspace must run in one stream.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from quota.kernels._env import (
    INTERPRET, check_device, configs_among, m_bucket, next_power_of_2, pick_configs, settled_bench,
)
from quota.quant.int4 import unpack_int4

MAX_K_INT4 = 131072  # 2^31 / 2^14: the x16 unpack keeps int32 accumulation exact below this
MAX_K_INT8 = 131072  # 2^31 / 2^14 as well (|a|, |w| <= 128)

USE_ASM_UNPACK = True
"""Unpack 4 bytes per 32-bit PTX instruction on CUDA (plain Triton ops in the interpreter)."""


def _config(bm, bn, bkb, group_m, warps, stages, split_k=1):
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_KB": bkb, "GROUP_M": group_m, "SPLIT_K": split_k},
        num_warps=warps, num_stages=stages,
    )  # fmt: skip


# Block sizes: BLOCK_KB counts bytes of K (two int4 codes per byte, one int8 code per byte).
_PREFILL = [  # M >= 256: compute-bound, large tiles so the unpack is amortized over BM * BN
    _config(128, 256, 128, 8, 8, 3),
    _config(256, 128, 128, 8, 8, 3),
    _config(256, 128, 128, 8, 8, 4),
    _config(256, 128, 64, 8, 8, 5),
    _config(128, 256, 64, 8, 8, 4),
]
_MID = [  # 16 < M < 256
    _config(64, 128, 128, 8, 4, 4),
    _config(128, 128, 128, 8, 8, 3),
    _config(64, 64, 256, 8, 4, 4),
]
_SPLIT = [  # 64 <= M <= 1024: split-K and smaller tiles, so that a prefill's tiles make more than one wave
    _config(128, 128, 128, 8, 8, 3, split_k=2),
    _config(128, 256, 128, 8, 8, 3, split_k=2),
    _config(64, 256, 128, 8, 4, 4, split_k=2),
    _config(128, 128, 128, 8, 8, 3, split_k=4),
    _config(64, 128, 128, 8, 4, 4, split_k=4),
    _config(64, 128, 256, 8, 4, 3),
    _config(64, 64, 256, 4, 4, 4, split_k=2),
]
_DECODE = [  # M <= 16: bandwidth-bound on the weights: narrow tiles for enough programs, deep pipelines
    _config(16, 32, 512, 1, 4, 4),
    _config(16, 64, 256, 1, 4, 4),
    _config(16, 64, 512, 1, 4, 3),
    _config(16, 32, 256, 1, 4, 6),
    _config(16, 32, 1024, 1, 4, 3),
]
_INTERPRET_CONFIG = _config(16, 32, 32, 2, 4, 1)


def _prune(configs, named_args, **kwargs):
    if INTERPRET:
        return configs
    return configs_among(configs, configs_for_bucket(named_args["M_BUCKET"]))


def configs_for_bucket(m_bucket: int) -> list:
    """The autotune candidates for an M bucket (:func:`~quota.kernels._env.m_bucket`)."""
    if m_bucket <= 16:
        return _DECODE
    if m_bucket < 64:
        return _MID
    if m_bucket < 256:
        return _MID + _SPLIT
    if m_bucket <= 1024:  # the large tiles alone fill under a wave of a 132-SM GPU (640 x 4096: 80 tiles)
        return _PREFILL + _MID + _SPLIT
    return _PREFILL


def uses_split_k(m_bucket: int) -> bool:
    """Whether some candidate of this bucket splits K (the launcher then provides the workspace)."""
    return any(c.kwargs["SPLIT_K"] > 1 for c in configs_for_bucket(m_bucket)) and not INTERPRET


@triton.jit
def _unpack_x16(packed, USE_ASM: tl.constexpr):
    """int8 bytes -> (16 * low nibble, 16 * high nibble), both int8 and sign-correct."""
    if USE_ASM:
        lo, hi = tl.inline_asm_elementwise(
            asm="{ .reg .b32 t; shl.b32 t, $2, 4; and.b32 $0, t, -252645136; and.b32 $1, $2, -252645136; }",
            constraints="=r,=r,r",
            args=[packed],
            dtype=(tl.int8, tl.int8),
            is_pure=True,
            pack=4,
        )
    else:
        lo = (packed << 4).to(tl.int8)
        hi = (packed & -16).to(tl.int8)
    return lo, hi


@triton.jit
def epilogue_store(acc, offs_m, offs_n, M, N, a_scale_ptr, w_scale_ptr, bias_ptr, c_ptr, stride_cm, store_ok,
                   HAS_BIAS: tl.constexpr, INV_SCALE: tl.constexpr):  # fmt: skip
    """``c[m, n] = acc * INV_SCALE * a_scale[m] * w_scale[n] (+ bias[n])`` in float32, cast to ``c``'s dtype.

    ``acc``: ``[BM, BN]`` int32; ``INV_SCALE`` a power of two undoing the x16 unpacks; ``store_ok``: a scalar
    (or tile) mask ANDed with the bounds."""
    m_ok = offs_m < M
    n_ok = offs_n < N
    a_s = tl.load(a_scale_ptr + offs_m, mask=m_ok, other=0.0)  # [BM] fp32
    w_s = tl.load(w_scale_ptr + offs_n, mask=n_ok, other=0.0)  # [BN] fp32
    out = acc.to(tl.float32)  # exact: |acc| < 2^24 * 256 and a multiple of 256 (int4)
    if INV_SCALE != 1.0:
        out = out * INV_SCALE  # a power of two: exact
    out = out * a_s[:, None] * w_s[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :] & store_ok)


@triton.jit
def splitk_reduce(acc, ws_ptr, lock_ptr, tile_id, offs_m, offs_n, M, N, SPLIT_K: tl.constexpr):
    """Sum the ``SPLIT_K`` int32 partial tiles of tile ``tile_id``; returns ``(total, last)``.

    ``ws_ptr``: int32 ``[M, N]`` workspace, zero outside a launch; ``lock_ptr``: int32 counters, zero outside a
    launch. Every program adds its tile with integer atomics, then counts itself; the last one (``last`` true)
    gets the full sum and restores zeros in both buffers. Other programs get a zero tile. ``last`` is an
    ``[BM, BN]`` boolean tile, all true in the last program, all false elsewhere."""
    ok = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    ptrs = ws_ptr + offs_m[:, None] * N + offs_n[None, :]  # [BM, BN]
    tl.atomic_add(ptrs, acc, mask=ok, sem="relaxed")
    tl.debug_barrier()  # every thread's adds are issued before the counter's release
    count = tl.atomic_add(lock_ptr + tile_id, 1, sem="acq_rel")
    tl.debug_barrier()
    last = (count + tl.zeros_like(acc)) == SPLIT_K - 1  # [BM, BN] (a tile: the interpreter wants one as a mask)
    total = tl.load(ptrs, mask=ok & last, other=0, cache_modifier=".cg")  # from L2: the other SMs' adds
    tl.store(ptrs, tl.zeros_like(total), mask=ok & last)
    tl.atomic_add(lock_ptr + tile_id, tl.where(count == SPLIT_K - 1, -SPLIT_K, 0), sem="relaxed")  # back to 0
    return total, last


@triton.autotune(
    configs=pick_configs(_PREFILL + _MID + _SPLIT + _DECODE, _INTERPRET_CONFIG),
    key=["M_BUCKET", "N", "KB", "INT4"],
    prune_configs_by={"early_config_prune": _prune},
    do_bench=None if INTERPRET else settled_bench(),  # waits for queued work first
)
@triton.heuristics({"EVEN_K": lambda args: args["KB"] % args["BLOCK_KB"] == 0})
@triton.jit
def _gemm_kernel(
    a_ptr, a_scale_ptr, w_ptr, w_scale_ptr, bias_ptr, c_ptr, ws_ptr, lock_ptr,
    M, N, KB, M_BUCKET,
    stride_am, stride_wn, stride_cm,
    HAS_BIAS: tl.constexpr, INT4: tl.constexpr, USE_ASM: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KB: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr,
):  # fmt: skip
    # grouped program order: GROUP_M row tiles share each weight tile while it is in L2
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    rm = tl.max_contiguous(tl.multiple_of(offs_m % M, BLOCK_M), BLOCK_M)  # rows past M re-read row < M
    rn = tl.max_contiguous(tl.multiple_of(offs_n % N, BLOCK_N), BLOCK_N)
    # split s sums K blocks [s * per, min((s + 1) * per, blocks)) (all of them when SPLIT_K == 1)
    blocks = tl.cdiv(KB, BLOCK_KB)
    per = tl.cdiv(blocks, SPLIT_K)
    kb0 = tl.program_id(1) * per
    kb1 = tl.minimum(kb0 + per, blocks)
    offs_k = tl.arange(0, BLOCK_KB)  # [BKB] bytes
    a_ptrs = a_ptr + rm[:, None] * stride_am + kb0 * BLOCK_KB + offs_k[None, :]  # [BM, BKB]
    w_ptrs = w_ptr + rn[:, None] * stride_wn + kb0 * BLOCK_KB + offs_k[None, :]  # [BN, BKB]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for kb in range(kb0, kb1):
        if EVEN_K:
            a = tl.load(a_ptrs)
            w = tl.load(w_ptrs)
        else:
            k_ok = offs_k[None, :] < KB - kb * BLOCK_KB
            a = tl.load(a_ptrs, mask=k_ok, other=0)
            w = tl.load(w_ptrs, mask=k_ok, other=0)
        if INT4:
            a_lo, a_hi = _unpack_x16(a, USE_ASM)  # [BM, BKB] int8 each
            w_lo, w_hi = _unpack_x16(w, USE_ASM)  # [BN, BKB] int8 each
            acc = tl.dot(a_lo, tl.trans(w_lo), acc, out_dtype=tl.int32)
            acc = tl.dot(a_hi, tl.trans(w_hi), acc, out_dtype=tl.int32)
        else:
            acc = tl.dot(a, tl.trans(w), acc, out_dtype=tl.int32)
        a_ptrs += BLOCK_KB
        w_ptrs += BLOCK_KB

    inv: tl.constexpr = 0.00390625 if INT4 else 1.0  # 1 / 256 undoes the two x16 unpacks
    if SPLIT_K == 1:
        epilogue_store(acc, offs_m, offs_n, M, N, a_scale_ptr, w_scale_ptr, bias_ptr, c_ptr, stride_cm, True,
                       HAS_BIAS, inv)  # fmt: skip
    else:
        total, last = splitk_reduce(acc, ws_ptr, lock_ptr, pid, offs_m, offs_n, M, N, SPLIT_K)
        epilogue_store(total, offs_m, offs_n, M, N, a_scale_ptr, w_scale_ptr, bias_ptr, c_ptr, stride_cm, last,
                       HAS_BIAS, inv)  # fmt: skip


_WORKSPACES: dict = {}


def splitk_workspace(device: torch.device, numel: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached zeroed int32 buffers of at least ``numel`` (the ``[M, N]`` sums) and ``tiles`` (counters) elements
    on ``device``; the split-K kernels leave them zeroed. Grown (never shrunk) in powers of two: a first call
    of a larger shape must come before any CUDA graph capture (as the autotuning must)."""
    key = (device.type, device.index)
    ws, locks = _WORKSPACES.get(key, (None, None))
    if ws is None or ws.numel() < numel:
        ws = torch.zeros(next_power_of_2(max(numel, 1)), dtype=torch.int32, device=device)
    if locks is None or locks.numel() < tiles:
        locks = torch.zeros(next_power_of_2(max(tiles, 1)), dtype=torch.int32, device=device)
    _WORKSPACES[key] = (ws, locks)
    return ws, locks


def _launch(a, a_scale, w, w_scale, bias, out_dtype, out, int4: bool, name: str, config=None) -> torch.Tensor:
    if a.dtype != torch.int8 or w.dtype != torch.int8:
        raise ValueError(f"{name}: operands must be int8, got {a.dtype} and {w.dtype}")
    if a.dim() != 2 or w.dim() != 2 or a.shape[1] != w.shape[1]:
        raise ValueError(f"{name}: need a [M, KB] and w [N, KB] with the same KB, got {list(a.shape)} {list(w.shape)}")
    m, kb = a.shape
    n = w.shape[0]
    k = 2 * kb if int4 else kb
    if m == 0 or n == 0 or kb == 0:
        raise ValueError(f"{name}: empty operand, a {tuple(a.shape)}, w {tuple(w.shape)}")
    if k > (MAX_K_INT4 if int4 else MAX_K_INT8):
        raise ValueError(f"{name}: K={k} exceeds the exact int32 accumulation limit {MAX_K_INT4}")
    if a.stride(1) != 1 or w.stride(1) != 1:
        raise ValueError(f"{name}: operands must be K-major (unit stride along K)")
    if a_scale.dtype != torch.float32 or a_scale.numel() != m:
        raise ValueError(f"{name}: a_scale must be float32 [M={m}, 1], got {a_scale.dtype} {tuple(a_scale.shape)}")
    if w_scale.dtype != torch.float32 or w_scale.numel() != n:
        raise ValueError(f"{name}: w_scale must be float32 [N={n}], got {w_scale.dtype} {tuple(w_scale.shape)}")
    if bias is not None and (bias.dim() != 1 or bias.numel() != n or not bias.is_floating_point()):
        raise ValueError(f"{name}: bias must be a float [N={n}] vector, got {bias.dtype} {tuple(bias.shape)}")
    if out_dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"{name}: out_dtype must be bfloat16, float16 or float32, got {out_dtype}")
    tensors = [a, a_scale, w, w_scale] + ([bias] if bias is not None else [])
    device = check_device(name, *tensors)
    a_scale = a_scale.reshape(m).contiguous()
    w_scale = w_scale.reshape(n).contiguous()
    if out is None:
        out = torch.empty((m, n), device=device, dtype=out_dtype)
    elif out.shape != (m, n) or out.dtype != out_dtype or out.device != device or out.stride(1) != 1:
        raise ValueError(f"{name}: out must be {out_dtype} [{m}, {n}] on {device} with unit column stride")

    bucket = m_bucket(m)
    if uses_split_k(bucket) or (config is not None and config.kwargs["SPLIT_K"] > 1):
        ws, locks = splitk_workspace(device, m * n, triton.cdiv(m, 16) * triton.cdiv(n, 32))
    else:
        ws = locks = a_scale  # never read

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])

    kernel, extra = _gemm_kernel, {}
    if config is not None:  # a fixed configuration (tests), past the autotuner
        kernel, extra = _gemm_kernel.fn, {**config.all_kwargs()}
    kernel[grid](
        a, a_scale, w, w_scale, bias if bias is not None else a_scale, out, ws, locks,
        m, n, kb, bucket,
        a.stride(0), w.stride(0), out.stride(0),
        HAS_BIAS=bias is not None, INT4=int4, USE_ASM=USE_ASM_UNPACK and not INTERPRET, **extra,
    )  # fmt: skip
    return out


def w4a4_matmul(
    a_packed: torch.Tensor,
    a_scale: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    out: torch.Tensor | None = None,
    config: triton.Config | None = None,
) -> torch.Tensor:
    """``[M, N] = (a_scale * w_scale) * (A_int4 @ W_int4^T) (+ bias)``.

    - ``a_packed``: int8 ``[M, K/2]``, per-token int4 activation codes (``pack_int4`` layout), K-major;
    - ``a_scale``: float32 ``[M, 1]`` (or ``[M]``), one scale per token;
    - ``w_packed``: int8 ``[N, K/2]``, int4 weight codes, K-major (``nn.Linear`` layout);
    - ``w_scale``: float32 ``[N]`` (or ``[N, 1]``), one scale per output channel;
    - ``bias``: ``[N]`` float or None;
    - ``out``: optional preallocated ``[M, N]`` ``out_dtype`` result;
    - ``config``: a fixed ``triton.Config`` instead of the autotuner's choice (tests, benchmarks);
    - returns ``[M, N]`` in ``out_dtype`` (bfloat16, float16 or float32).

    The integer part is exact (int32 accumulation, split-K included); the epilogue is float32.
    """
    return _launch(a_packed, a_scale, w_packed, w_scale, bias, out_dtype, out, True, "w4a4_matmul", config)


def w8a8_matmul(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    out: torch.Tensor | None = None,
    config: triton.Config | None = None,
) -> torch.Tensor:
    """Same contract as :func:`w4a4_matmul` with plain int8 codes: ``a`` ``[M, K]``, ``w`` ``[N, K]``."""
    return _launch(a, a_scale, w, w_scale, bias, out_dtype, out, False, "w8a8_matmul", config)


def w4a4_matmul_reference(
    a_packed: torch.Tensor,
    a_scale: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Reference for :func:`w4a4_matmul`: exact integer product (float64), then scales, then ``out_dtype``."""
    a = unpack_int4(a_packed)
    w = unpack_int4(w_packed)
    return _reference_epilogue(a, a_scale, w, w_scale, bias, out_dtype)


def w8a8_matmul_reference(a, a_scale, w, w_scale, bias=None, out_dtype=torch.bfloat16) -> torch.Tensor:
    """Reference for :func:`w8a8_matmul`."""
    return _reference_epilogue(a, a_scale, w, w_scale, bias, out_dtype)


def integer_matmul(a_codes: torch.Tensor, w_codes: torch.Tensor) -> torch.Tensor:
    """Exact ``A @ W^T`` of integer codes ``[M, K]``, ``[N, K]`` as float64 ``[M, N]`` (|sum| < 2^53)."""
    return a_codes.double() @ w_codes.double().T


def _reference_epilogue(a, a_scale, w, w_scale, bias, out_dtype):
    acc = integer_matmul(a, w)  # [M, N] float64, exact
    out = acc * a_scale.double().reshape(-1, 1) * w_scale.double().reshape(1, -1)
    if bias is not None:
        out = out + bias.double().reshape(1, -1)
    return out.to(out_dtype)
