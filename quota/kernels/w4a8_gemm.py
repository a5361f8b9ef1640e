"""W4A8 GEMM: int4 weights, 8-bit activations (FP8 e4m3 or int8), per-token x per-channel scales in the epilogue.

``out[m, n] = a_scale[m] * w_scale[n] * sum_k a[m, k] * w[n, k] (+ bias[n])``

Weights are :class:`~quota.quantize.linear.QuantLinear`'s int4 codes, packed two per byte along K (``[N, K/2]``
int8, ``pack_int4``: element ``2i`` in the low nibble of byte ``i``), K-major as the ``nn.Linear`` layout. The
unpack is a sign-extending shift per nibble; since a dot sums over K, the low nibbles meet the even columns of
A and the high nibbles the odd ones, as two dots of K/2 (no interleave): A is read as two stride-2 halves.

- **FP8** (:func:`w4a8_fp8_matmul`, sm_89+, FP8 ``wgmma`` on sm_90): A holds ``float8_e4m3fn`` codes; every int4
  value is exact in e4m3 (three mantissa bits cover ``|w| <= 8``), so the weight nibbles are converted exactly
  (int8 -> float16 -> e4m3) and fed to the FP8 ``tl.dot`` with float32 accumulation. Each product of an e4m3 code
  and an int4 value has at most 7 significant bits, so products are exact; the sum is float32 (the hardware's
  FP8 accumulation order and width are the GPU's).
- **int8** (:func:`w4a8_int8_matmul`, any GPU with int8 tensor cores): A holds int8 codes; ``tl.dot`` on int8
  with int32 accumulation is exact while ``K <= 2^21`` (``|a * w| <= 128 * 8``).

References (:func:`w4a8_matmul_reference`) compute the product exactly in float64 (both operands' values are
exact in float64) and apply the scales after it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from quota.kernels._env import INTERPRET, check_device, configs_among, m_bucket, pick_configs, settled_bench
from quota.kernels.fp8_gemm import has_fp8
from quota.quant.int4 import unpack_int4

MAX_K_INT8 = 1 << 21  # |a * w| <= 2^10: int32 accumulation stays exact below this K


def _config(bm, bn, bkb, group_m, warps, stages):
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_KB": bkb, "GROUP_M": group_m}, num_warps=warps, num_stages=stages
    )


# BLOCK_KB counts bytes of packed weights: each step covers 2 * BLOCK_KB columns of K.
_PREFILL = [
    _config(128, 256, 64, 8, 8, 3),
    _config(256, 128, 64, 8, 8, 3),
    _config(128, 128, 64, 8, 8, 4),
    _config(128, 256, 32, 8, 8, 4),
]
_MID = [
    _config(64, 128, 64, 8, 4, 4),
    _config(128, 128, 64, 8, 8, 3),
    _config(64, 64, 128, 8, 4, 4),
]
_DECODE = [
    _config(16, 32, 256, 1, 4, 4),
    _config(16, 64, 128, 1, 4, 4),
    _config(16, 64, 256, 1, 4, 3),
    _config(16, 32, 512, 1, 4, 3),
]
_INTERPRET_CONFIG = _config(16, 32, 32, 2, 4, 1)


def _prune(configs, named_args, **kwargs):
    if INTERPRET:
        return configs
    m = named_args["M_BUCKET"]
    wanted = _DECODE if m <= 16 else _MID if m < 256 else (_PREFILL if m > 1024 else _PREFILL + _MID)
    return configs_among(configs, wanted)


@triton.autotune(
    configs=pick_configs(_PREFILL + _MID + _DECODE, _INTERPRET_CONFIG),
    key=["M_BUCKET", "N", "KB", "FP8"],
    prune_configs_by={"early_config_prune": _prune},
    do_bench=None if INTERPRET else settled_bench(),  # waits for queued work first
)
@triton.heuristics({"EVEN_K": lambda args: args["KB"] % args["BLOCK_KB"] == 0})
@triton.jit
def _w4a8_kernel(
    a_ptr, a_scale_ptr, w_ptr, w_scale_ptr, bias_ptr, c_ptr,
    M, N, KB, M_BUCKET,
    stride_am, stride_wn, stride_cm,
    HAS_BIAS: tl.constexpr, FP8: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KB: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
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
    rm = tl.max_contiguous(tl.multiple_of(offs_m % M, BLOCK_M), BLOCK_M)  # rows past M re-read a row < M
    rn = tl.max_contiguous(tl.multiple_of(offs_n % N, BLOCK_N), BLOCK_N)
    offs_kb = tl.arange(0, BLOCK_KB)  # [BKB] bytes of W = pairs of columns of A
    a_even = a_ptr + rm[:, None] * stride_am + 2 * offs_kb[None, :]  # [BM, BKB] columns 2j
    w_ptrs = w_ptr + rn[:, None] * stride_wn + offs_kb[None, :]  # [BN, BKB]

    if FP8:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for kb in range(0, tl.cdiv(KB, BLOCK_KB)):
        if EVEN_K:
            a_lo = tl.load(a_even)
            a_hi = tl.load(a_even + 1)
            w = tl.load(w_ptrs)
        else:
            k_ok = offs_kb[None, :] < KB - kb * BLOCK_KB
            a_lo = tl.load(a_even, mask=k_ok, other=0.0)
            a_hi = tl.load(a_even + 1, mask=k_ok, other=0.0)
            w = tl.load(w_ptrs, mask=k_ok, other=0)
        w_lo = ((w << 4).to(tl.int8) >> 4).to(tl.int8)  # [BN, BKB] sign-extended low nibbles (even columns)
        w_hi = (w >> 4).to(tl.int8)  # [BN, BKB] high nibbles (odd columns)
        if FP8:
            w_lo = w_lo.to(tl.float16).to(tl.float8e4nv)  # exact: |w| <= 8
            w_hi = w_hi.to(tl.float16).to(tl.float8e4nv)
            acc = tl.dot(a_lo, tl.trans(w_lo), acc, out_dtype=tl.float32)
            acc = tl.dot(a_hi, tl.trans(w_hi), acc, out_dtype=tl.float32)
        else:
            acc = tl.dot(a_lo, tl.trans(w_lo), acc, out_dtype=tl.int32)
            acc = tl.dot(a_hi, tl.trans(w_hi), acc, out_dtype=tl.int32)
        a_even += 2 * BLOCK_KB
        w_ptrs += BLOCK_KB

    m_ok = offs_m < M
    n_ok = offs_n < N
    a_s = tl.load(a_scale_ptr + offs_m, mask=m_ok, other=0.0)  # [BM] fp32
    w_s = tl.load(w_scale_ptr + offs_n, mask=n_ok, other=0.0)  # [BN] fp32
    out = acc.to(tl.float32) * a_s[:, None] * w_s[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def _check(a, a_scale, w, w_scale, bias, out_dtype, a_dtype: torch.dtype, name: str) -> tuple[int, int, int]:
    if a.dtype != a_dtype or w.dtype != torch.int8:
        raise ValueError(f"{name}: a must be {a_dtype} and w int8 (packed int4), got {a.dtype} and {w.dtype}")
    if a.dim() != 2 or w.dim() != 2 or a.shape[1] != 2 * w.shape[1]:
        raise ValueError(f"{name}: need a [M, K] and w [N, K/2], got {list(a.shape)} {list(w.shape)}")
    m, k = a.shape
    n = w.shape[0]
    if m == 0 or n == 0 or k == 0:
        raise ValueError(f"{name}: empty operand, a {tuple(a.shape)}, w {tuple(w.shape)}")
    if a_dtype == torch.int8 and k > MAX_K_INT8:
        raise ValueError(f"{name}: K={k} exceeds the exact int32 accumulation limit {MAX_K_INT8}")
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
    return m, k, n


def _launch(a, a_scale, w, w_scale, bias, out_dtype, fp8: bool, name: str) -> torch.Tensor:
    m, k, n = _check(a, a_scale, w, w_scale, bias, out_dtype, torch.float8_e4m3fn if fp8 else torch.int8, name)
    device = check_device(name, a, a_scale, w, w_scale, *([bias] if bias is not None else []))
    if fp8 and device.type == "cuda" and not has_fp8(device):
        raise ValueError(f"{name}: FP8 tensor cores need compute capability 8.9 or newer, this GPU has "
                         f"{torch.cuda.get_device_capability(device)}; use w4a8_int8_matmul (precision w4a8_int8)")
    a_scale = a_scale.reshape(m).contiguous()
    w_scale = w_scale.reshape(n).contiguous()
    out = torch.empty((m, n), device=device, dtype=out_dtype)

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    _w4a8_kernel[grid](
        a, a_scale, w, w_scale, bias if bias is not None else a_scale, out,
        m, n, k // 2, m_bucket(m),
        a.stride(0), w.stride(0), out.stride(0),
        HAS_BIAS=bias is not None, FP8=fp8,
    )  # fmt: skip
    return out


def w4a8_fp8_matmul(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """``[M, N] = (a_scale * w_scale) * (A_e4m3 @ W_int4^T) (+ bias)`` on FP8 tensor cores.

    - ``a``: ``float8_e4m3fn`` ``[M, K]`` per-token activation codes (:func:`quota.kernels.fp8_quant.quantize_fp8_triton`),
      K-major, K even;
    - ``a_scale``: float32 ``[M, 1]`` (or ``[M]``);
    - ``w_packed``: int8 ``[N, K/2]``, int4 weight codes (``pack_int4`` layout), K-major;
    - ``w_scale``: float32 ``[N]`` (or ``[N, 1]``), one scale per output channel;
    - ``bias``: ``[N]`` float or None; returns ``[M, N]`` ``out_dtype`` (bfloat16, float16 or float32).
    """
    return _launch(a, a_scale, w_packed, w_scale, bias, out_dtype, True, "w4a8_fp8_matmul")


def w4a8_int8_matmul(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Same contract as :func:`w4a8_fp8_matmul` with int8 activation codes ``a`` ``[M, K]``
    (:func:`quota.kernels.act_quant.quantize_activation_triton` with ``bits=8``); the integer part is exact."""
    return _launch(a, a_scale, w_packed, w_scale, bias, out_dtype, False, "w4a8_int8_matmul")


def w4a8_matmul_reference(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Reference of both W4A8 kernels (``a``: e4m3 or int8 ``[M, K]``): the product of the operands' exact values
    in float64, then the scales and the bias in float64, then ``out_dtype``."""
    acc = a.double() @ unpack_int4(w_packed).double().T  # [M, N] exact: e4m3 * int4 sums fit float64
    out = acc * a_scale.double().reshape(-1, 1) * w_scale.double().reshape(1, -1)
    if bias is not None:
        out = out + bias.double().reshape(1, -1)
    return out.to(out_dtype)
