"""Per-token FP8 e4m3 activation quantization (Triton) and the FP8 weight quantizer (PyTorch).

``scale[m] = clip * max_k |x[m, k]| / 448`` (float32; 1 for an all-zero row) and
``codes[m, k] = e4m3(clamp(x[m, k] / scale[m], -448, 448))``, rounded to the nearest e4m3 value, ties to even,
as PyTorch's ``.to(torch.float8_e4m3fn)`` rounds. The kernel does not rely on the hardware float-to-FP8 cast:
it rounds in float32 with integer operations on the exponent (ulp ``2^(e - 3)``, subnormals below ``2^-6``
sharing ulp ``2^-9``), then casts the exact value. The result is bit-identical to the reference on every
device, the Triton interpreter included (whose float32-to-FP8 cast truncates, measured with triton 3.x).

One program per row: pass 1 finds the absmax, pass 2 re-reads the row (from L2) and writes the codes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from quota.kernels._env import check_device, next_power_of_2

E4M3_MAX = 448.0
"""Largest finite float8_e4m3fn value."""
BLOCK_K_MAX = 2048


@triton.jit
def _round_e4m3(y):
    """``y`` (float32, ``|y| <= 448``) rounded to the nearest e4m3 value, ties to even (exact float32 ops)."""
    bits = y.to(tl.int32, bitcast=True)
    exp = tl.maximum((bits >> 23) & 0xFF, 121)  # 121 = 127 - 6: below 2^-6 the ulp stays 2^-9 (subnormals)
    ulp = ((exp - 3) << 23).to(tl.float32, bitcast=True)  # 2^(e - 3): three mantissa bits
    inv_ulp = ((257 - exp) << 23).to(tl.float32, bitcast=True)  # 2^-(e - 3), exact
    t = y * inv_ulp  # exact (power of two), |t| < 16
    r = (t + 12582912.0) - 12582912.0  # 1.5 * 2^23: round half to even
    return tl.where(r == 0.0, y * 0.0, r * ulp)  # a negative value rounded to zero stays -0, as in PyTorch


@triton.jit
def _fp8_quant_kernel(x_ptr, codes_ptr, scale_ptr, K, stride_xm, clip, BLOCK_K: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_K)
    x_row = x_ptr + row * stride_xm
    amax = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_row + k0 + offs, mask=k0 + offs < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(x))
    scale = tl.math.div_rn(tl.max(amax, axis=0) * clip, 448.0)  # the reference's float32 ops, in its order
    scale = tl.where(scale > 0.0, scale, 1.0)
    tl.store(scale_ptr + row, scale)
    for k0 in range(0, K, BLOCK_K):
        ok = k0 + offs < K
        x = tl.load(x_row + k0 + offs, mask=ok, other=0.0).to(tl.float32)
        y = tl.minimum(tl.maximum(tl.math.div_rn(x, scale), -448.0), 448.0)
        tl.store(codes_ptr + row * K + k0 + offs, _round_e4m3(y).to(tl.float8e4nv), mask=ok)


def _check(x: torch.Tensor, clip_ratio: float, name: str) -> int:
    if x.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"{name}: x must be bfloat16, float16 or float32, got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"{name}: x must be [..., K] with K > 0, got {tuple(x.shape)}")
    if not 0.0 < float(clip_ratio) <= 1.0:
        raise ValueError(f"{name}: clip_ratio must lie in (0, 1], got {clip_ratio}")
    return x.shape[-1]


def quantize_fp8_triton(x: torch.Tensor, clip_ratio: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token FP8 e4m3 quantization of ``x``.

    - ``x``: ``[..., K]`` bfloat16, float16 or float32 (leading dims flattened to M rows);
    - returns ``codes``: ``torch.float8_e4m3fn`` ``[..., K]`` and ``scale``: float32 ``[..., 1]``, with
      ``x ~ codes * scale``; bit-identical to :func:`quantize_fp8_reference`.
    """
    name = "quantize_fp8_triton"
    k = _check(x, clip_ratio, name)
    device = check_device(name, x)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)  # [M, K]
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    codes = torch.empty((m, k), dtype=torch.float8_e4m3fn, device=device)
    scale = torch.empty((m, 1), dtype=torch.float32, device=device)
    if m:
        block = min(next_power_of_2(k), BLOCK_K_MAX)
        _fp8_quant_kernel[(m,)](x2, codes, scale, k, x2.stride(0), float(clip_ratio), BLOCK_K=block,
                                num_warps=4 if block <= 1024 else 8, enable_fp_fusion=False)
    return codes.reshape(*lead, k), scale.reshape(*lead, 1)


def quantize_fp8_reference(x: torch.Tensor, clip_ratio: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for :func:`quantize_fp8_triton` (same contract); runs on any device, the CPU included."""
    _check(x, clip_ratio, "quantize_fp8_reference")
    absmax = x.float().abs().amax(dim=-1, keepdim=True)  # [..., 1]
    scale = absmax * float(clip_ratio) / E4M3_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.clamp(x.float() / scale, -E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return codes, scale


def quantize_weight_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel FP8 e4m3 weights: ``w`` ``[N, K]`` -> (codes ``float8_e4m3fn`` ``[N, K]``, scale float32
    ``[N, 1]``), ``scale = max_k |w[n, k]| / 448`` (1 for a zero row), rounded to nearest even."""
    if w.dim() != 2:
        raise ValueError(f"quantize_weight_fp8: w must be [N, K], got {tuple(w.shape)}")
    return quantize_fp8_reference(w.float(), 1.0)


def dequantize_fp8(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``codes * scale`` in float32 (``scale`` broadcasts: ``[M, 1]``)."""
    return codes.float() * scale
