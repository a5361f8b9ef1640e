"""Fused RMSNorm + activation quantization: each activation row is read once and leaves as int4 (or int8) codes.

``y = rstd * T(w * x)`` with ``rstd = 1 / sqrt(mean(x^2) + eps)``, ``w`` the norm weight (optional: with QuaRot
rotation, :func:`quota.quantize.rotation.fold_norms` folds it into the next linears and leaves 1) and ``T`` the
optional online block-Hadamard; then ``scale = clip * max|y| / qmax`` and ``codes = clamp(round_half_even(y /
scale))``, exactly :func:`quota.kernels.act_quant.quantize_activation_triton`'s output format (``pack_int4``
layout, float32 ``[M, 1]`` scales), which :func:`quota.kernels.w4a4_gemm.w4a4_matmul` (and
:func:`quota.kernels.w4_gemv.w4_gemv_codes`) consume.

The kernel is :mod:`quota.kernels.act_quant`'s with ``NORM`` on (same tiles, same autotuning): one read of
``x`` for rows that fit a tile, two for longer ones. Everything is float32; unlike a bf16 ``LlamaRMSNorm``
followed by a quantizer, the normalized row is not rounded to bf16 in between (one rounding fewer). The sum of
squares runs in another order than ``torch.mean``, so ``rstd`` may differ in its last bit from the reference's
and a code may then move across a rounding tie (as with the in-kernel Hadamard).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import triton

from quota.kernels._env import check_device
from quota.kernels.act_quant import _check, launch_act_quant
from quota.quant.hadamard import apply_block_hadamard
from quota.quant.int4 import pack_int4
from quota.quant.quantizers import quantize_activation


def _check_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float, name: str) -> None:
    if weight is not None and (weight.dim() != 1 or weight.numel() != x.shape[-1] or not weight.is_floating_point()):
        raise ValueError(f"{name}: weight must be a float [K={x.shape[-1]}] vector, got {tuple(weight.shape)}")
    if not float(eps) >= 0.0:
        raise ValueError(f"{name}: eps must be >= 0, got {eps}")


def rmsnorm_quantize_triton(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float,
    bits: int = 4,
    clip_ratio: float = 1.0,
    hadamard_block: int | None = None,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
    config: triton.Config | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMS-normalize each row of ``x``, optionally rotate it, and quantize it per token.

    - ``x``: ``[..., K]`` bfloat16, float16 or float32 (leading dims flattened to M rows);
    - ``weight``: float ``[K]`` norm weight, or None (a folded norm); ``eps``: the norm's epsilon;
    - ``bits``, ``clip_ratio``, ``hadamard_block``: as :func:`quota.kernels.act_quant.quantize_activation_triton`;
    - returns ``codes`` int8 ``[..., K/2]`` (bits=4) or ``[..., K]`` (bits=8), and ``scale`` float32 ``[..., 1]``;
    - ``out``: optional preallocated contiguous ``(codes [M, K/2 or K], scale [M, 1])``;
    - ``config``: a fixed ``triton.Config`` (``TILE``, ``PPS``, warps) instead of the autotuner's choice.
    """
    name = "rmsnorm_quantize_triton"
    k = _check(x, bits, clip_ratio, hadamard_block, name)
    _check_norm(x, weight, eps, name)
    device = check_device(name, x, *([weight] if weight is not None else []))
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
        launch_act_quant(x2, codes, scale, bits, clip_ratio, hadamard_block, weight, float(eps), config)
    return codes.reshape(*lead, -1), scale.reshape(*lead, 1)


def rmsnorm_transform_reference(
    x: torch.Tensor, weight: torch.Tensor | None, eps: float, hadamard_block: int | None = None
) -> torch.Tensor:
    """The float32 row the kernel quantizes: ``rstd * T(w * x)`` (``[..., K]``)."""
    xf = x.float()
    rstd = 1.0 / torch.sqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)  # [..., 1]
    z = xf * weight.float() if weight is not None else xf
    if hadamard_block is not None:
        z = apply_block_hadamard(z, hadamard_block)
    return z * rstd


def rmsnorm_quantize_reference(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float,
    bits: int = 4,
    clip_ratio: float = 1.0,
    hadamard_block: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for :func:`rmsnorm_quantize_triton` (same contract), in float32 PyTorch."""
    _check(x, bits, clip_ratio, hadamard_block, "rmsnorm_quantize_reference")
    _check_norm(x, weight, eps, "rmsnorm_quantize_reference")
    codes, scale = quantize_activation(rmsnorm_transform_reference(x, weight, eps, hadamard_block), bits, clip_ratio)
    return (pack_int4(codes) if bits == 4 else codes), scale


class FusedNormQuant(nn.Module):
    """An RMSNorm whose output is the quantized activation the next W4A4 linears read: ``forward(x)`` returns
    ``(codes, scale)`` in :func:`rmsnorm_quantize_triton`'s format (``impl="triton"``, or ``"auto"`` on CUDA
    tensors) or from the reference (``impl="reference"``, and ``"auto"`` elsewhere).

    Build it from a model's norm with :meth:`from_rmsnorm`; the readers' online Hadamard block and the clipping
    ratio they were calibrated with must be passed, since the codes are made here instead of in each linear.
    """

    def __init__(self, hidden_size: int, eps: float, bits: int = 4, clip_ratio: float = 1.0,
                 hadamard_block: int | None = None, weight: bool = True, impl: str = "auto") -> None:  # fmt: skip
        super().__init__()
        if impl not in ("reference", "triton", "auto"):
            raise ValueError(f"impl must be reference, triton or auto, got {impl!r}")
        self.hidden_size, self.eps, self.bits = hidden_size, float(eps), bits
        self.clip_ratio, self.hadamard_block, self.impl = float(clip_ratio), hadamard_block, impl
        self.register_buffer("weight", torch.ones(hidden_size) if weight else None)

    @classmethod
    def from_rmsnorm(cls, norm: nn.Module, bits: int = 4, clip_ratio: float = 1.0,
                     hadamard_block: int | None = None, impl: str = "auto") -> "FusedNormQuant":  # fmt: skip
        """From an ``RMSNorm``-like module (``weight`` ``[K]``, ``variance_epsilon`` or ``eps``). A weight of
        all ones (a folded norm) is dropped, which saves its load in the kernel."""
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
        if eps is None:
            raise ValueError("from_rmsnorm: the norm has neither variance_epsilon nor eps")
        w = norm.weight.detach()
        folded = bool((w == 1).all())
        mod = cls(w.numel(), eps, bits, clip_ratio, hadamard_block, weight=not folded, impl=impl)
        if not folded:
            mod.weight.copy_(w.float())
        return mod.to(w.device)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        use_triton = self.impl == "triton" or (self.impl == "auto" and x.is_cuda)
        fn = rmsnorm_quantize_triton if use_triton else rmsnorm_quantize_reference
        return fn(x, self.weight, self.eps, self.bits, self.clip_ratio, self.hadamard_block)

    def extra_repr(self) -> str:
        return (f"{self.hidden_size}, eps={self.eps}, bits={self.bits}, clip={self.clip_ratio:.3f}, "
                f"hadamard_block={self.hadamard_block}, weight={self.weight is not None}, impl={self.impl}")  # fmt: skip
