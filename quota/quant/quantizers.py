"""Reference quantizers (pure PyTorch): the test oracle for every kernel and the CPU path.

Conventions every kernel reproduces bit for bit on the integer side:
- rounding is round-half-to-even (``torch.round``), on float32 values, after a true division by the scale;
- symmetric b-bit codes lie in ``[-2^(b-1), 2^(b-1) - 1]`` with ``scale = clip * absmax / (2^(b-1) - 1)``;
- asymmetric (KV) b-bit codes lie in ``[0, 2^b - 1]`` with ``scale = (max - min) / (2^b - 1)`` and
  ``x ~ code * scale + min``;
- a scale that would be 0 (an all-zero row or group) is replaced by 1, so codes are 0 and dequantize to 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_CLIP_GRID = tuple(round(1.0 - 0.025 * i, 3) for i in range(21))  # 1.0 ... 0.5


def signed_range(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _safe(scale: torch.Tensor) -> torch.Tensor:
    return torch.where(scale > 0, scale, torch.ones_like(scale))


# ----------------------------------------------------------------------------- symmetric (weights, activations)


def symmetric_scale(absmax: torch.Tensor, bits: int, clip: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Scale of symmetric b-bit quantization for a given absmax (float32, zero-safe)."""
    _, qmax = signed_range(bits)
    return _safe(absmax.float() * clip / qmax)


def quantize_symmetric(x: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """int8 codes ``round(x / scale)`` clamped to the signed b-bit range; ``scale`` broadcasts against ``x``."""
    qmin, qmax = signed_range(bits)
    return torch.clamp(torch.round(x.float() / scale), qmin, qmax).to(torch.int8)


def dequantize_symmetric(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return codes.float() * scale


def quantize_activation(x: torch.Tensor, bits: int = 4, clip_ratio: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token dynamic symmetric quantization.

    ``x``: ``[..., K]`` (any float dtype). Returns codes int8 ``[..., K]`` and scale float32 ``[..., 1]``
    with ``scale = clip_ratio * max|x_token| / (2^(b-1) - 1)``.
    """
    scale = symmetric_scale(x.float().abs().amax(dim=-1, keepdim=True), bits, clip_ratio)
    return quantize_symmetric(x, scale, bits), scale


def fake_quantize_activation(x: torch.Tensor, bits: int = 4, clip_ratio: float = 1.0) -> torch.Tensor:
    """Quantize-dequantize per token; returns ``x``'s dtype."""
    codes, scale = quantize_activation(x, bits, clip_ratio)
    return dequantize_symmetric(codes, scale).to(x.dtype)


# ----------------------------------------------------------------------------- weights


@dataclass
class QuantizedWeight:
    """Symmetric weight codes ``[N, K]`` (int8 values in the b-bit range) and float32 scales.

    ``scale`` is ``[N, 1]`` per output channel, or ``[N, K // group_size]`` per group.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    bits: int
    group_size: int | None = None

    def dequantize(self) -> torch.Tensor:
        return dequantize_symmetric(self.codes, expand_group_scale(self.scale, self.group_size, self.codes.shape[-1]))


def expand_group_scale(scale: torch.Tensor, group_size: int | None, k: int) -> torch.Tensor:
    """``[N, G]`` group scales -> ``[N, K]`` (or ``[N, 1]`` unchanged for per-channel)."""
    if group_size is None:
        return scale
    return scale.repeat_interleave(group_size, dim=-1)[..., :k]


def _grouped_absmax(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    w = w.float()
    if group_size is None:
        return w.abs().amax(dim=-1, keepdim=True)  # [N, 1]
    n, k = w.shape
    if k % group_size != 0:
        raise ValueError(f"group size {group_size} does not divide K={k}")
    return w.view(n, k // group_size, group_size).abs().amax(dim=-1)  # [N, G]


def weight_scale(w: torch.Tensor, bits: int, group_size: int | None = None, clip: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Symmetric scales for ``w`` ``[N, K]``: ``[N, 1]`` or ``[N, K // group_size]``."""
    return symmetric_scale(_grouped_absmax(w, group_size), bits, clip)


def search_weight_clip(
    w: torch.Tensor,
    bits: int,
    group_size: int | None = None,
    input_sq_norm: torch.Tensor | None = None,
    grid: tuple[float, ...] = _CLIP_GRID,
) -> torch.Tensor:
    """Per-row (per-group) clipping ratio from ``grid`` that minimizes the rounding error.

    The error of row ``n`` is ``sum_k d_k (w_nk - q(w_nk))^2`` with ``d_k = input_sq_norm[k]`` (the diagonal
    of the inputs' second moment, so channels that see large inputs count more) or 1. Returns float32
    ratios shaped like :func:`weight_scale`'s output. Ties go to the larger ratio.
    """
    w = w.float()
    absmax = _grouped_absmax(w, group_size)
    d = torch.ones(w.shape[-1], device=w.device) if input_sq_norm is None else input_sq_norm.float().to(w.device)
    best_err = torch.full_like(absmax, float("inf"))
    best = torch.ones_like(absmax)
    for ratio in grid:
        scale = symmetric_scale(absmax, bits, ratio)
        full = expand_group_scale(scale, group_size, w.shape[-1])
        err = (w - dequantize_symmetric(quantize_symmetric(w, full, bits), full)).pow(2) * d
        if group_size is not None:
            err = err.view(w.shape[0], -1, group_size).sum(-1)
        else:
            err = err.sum(-1, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, torch.full_like(best, ratio), best)
    return best


def quantize_weight_rtn(
    w: torch.Tensor, bits: int = 4, group_size: int | None = None, clip: float | torch.Tensor = 1.0
) -> QuantizedWeight:
    """Round-to-nearest symmetric weight quantization of ``w`` ``[N, K]``."""
    scale = weight_scale(w, bits, group_size, clip)
    codes = quantize_symmetric(w, expand_group_scale(scale, group_size, w.shape[-1]), bits)
    return QuantizedWeight(codes, scale, bits, group_size)


# ----------------------------------------------------------------------------- asymmetric (KV cache)


def quantize_asymmetric(
    x: torch.Tensor, bits: int, group_size: int, clip_ratio: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric min/max quantization in groups of ``group_size`` along the last dimension.

    ``x``: ``[..., D]`` with ``D % group_size == 0``. Returns codes uint8 ``[..., D]`` in ``[0, 2^b - 1]``,
    scale float32 ``[..., D // group_size]`` and zero (the group minimum, float32) of the same shape.
    With ``clip_ratio < 1`` the range ``[min, max]`` is shrunk by that factor around its midpoint.
    """
    d = x.shape[-1]
    if d % group_size != 0:
        raise ValueError(f"KV group size {group_size} does not divide head_dim {d}")
    levels = 2**bits - 1
    xg = x.float().reshape(*x.shape[:-1], d // group_size, group_size)  # [..., G, g]
    lo, hi = xg.amin(-1), xg.amax(-1)  # [..., G]
    if clip_ratio != 1.0:
        mid, half = (hi + lo) / 2, (hi - lo) / 2 * clip_ratio
        lo, hi = mid - half, mid + half
    scale = _safe((hi - lo) / levels)
    codes = torch.clamp(torch.round((xg - lo.unsqueeze(-1)) / scale.unsqueeze(-1)), 0, levels)
    return codes.to(torch.uint8).reshape(x.shape), scale, lo


def dequantize_asymmetric(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`quantize_asymmetric` (float32 ``[..., D]``)."""
    d = codes.shape[-1]
    groups = scale.shape[-1]
    cg = codes.float().reshape(*codes.shape[:-1], groups, d // groups)
    return (cg * scale.unsqueeze(-1) + zero.unsqueeze(-1)).reshape(codes.shape)


def fake_quantize_kv(x: torch.Tensor, bits: int, group_size: int, clip_ratio: float = 1.0) -> torch.Tensor:
    """Quantize-dequantize ``[..., D]`` per token and head; returns ``x``'s dtype."""
    return dequantize_asymmetric(*quantize_asymmetric(x, bits, group_size, clip_ratio)).to(x.dtype)
