"""Quantized modules: :class:`QuantLinear` (W4A4 and friends) with a reference and a Triton path.

Both paths share one configuration and one storage format, so a simulated run and a kernel run of the
same module agree within the kernel tolerance rule:

- weights: symmetric codes, packed two per byte along K for 4 bits (``[N, K/2]`` int8, the
  ``nn.Linear`` layout) or one per byte otherwise (``[N, K]`` int8); float32 scales ``[N, 1]`` or
  ``[N, K/group]``;
- inputs: optionally transformed by an online block-Hadamard (its matrix is folded into the weight
  when the module is built), then quantized per token with the module's calibrated clipping ratio;
- output: ``(codes_x @ codes_w^T) * scale_x * scale_w + bias``, the integer product exact.
"""

from __future__ import annotations

import threading

import torch
import torch.nn as nn

from quota.quant.config import FULL_PRECISION
from quota.quant.hadamard import apply_block_hadamard
from quota.quant.int4 import pack_int4, unpack_int4
from quota.quant.quantizers import QuantizedWeight, expand_group_scale, quantize_activation
from quota.kernels import act_quant, w4_gemv, w4a4_gemm

IMPLS = ("reference", "triton", "auto")
GEMV_MAX_M = w4_gemv.MAX_M
"""Up to this many rows the Triton path runs the split-K decode GEMV (:mod:`quota.kernels.w4_gemv`)."""
GEMV_QUANT_IN_MAX_M = w4_gemv.QUANT_IN_MAX_M
"""Up to this many rows (and without an online Hadamard) the GEMV quantizes the input itself; above, the
activation codes come from ``act_quant`` (shared by the linears that read one input)."""


def triton_available() -> bool:
    return torch.cuda.is_available()


_last_input = threading.local()


def _quantized_input(x: torch.Tensor, source: torch.Tensor, clip_ratio: float, hadamard_block: int | None):
    """``act_quant.quantize_activation_triton(x, 4, clip_ratio, hadamard_block)`` (``x``: ``[M, K]``, a view of the module
    input ``source``), computed once for linears that read the same input tensor one after the other with the
    same settings (q/k/v, gate/up): the last input is kept (so that no other tensor can take its memory) with
    its version counter (an in-place change recomputes). Tensors made under ``torch.inference_mode`` have no
    version counter: they are quantized at every call."""
    if source.is_inference():
        return act_quant.quantize_activation_triton(x, 4, clip_ratio, hadamard_block)
    key = (source._version, tuple(x.shape), float(clip_ratio), hadamard_block)
    if getattr(_last_input, "source", None) is source and _last_input.key == key:
        return _last_input.value
    value = act_quant.quantize_activation_triton(x, 4, clip_ratio, hadamard_block)
    _last_input.source, _last_input.key, _last_input.value = source, key, value
    return value


class QuantLinear(nn.Module):
    """``y = Q_a(T(x)) @ Q_w(W T)^T + b`` where ``T`` is an optional online block-Hadamard.

    Build it with :meth:`from_quantized`. ``a_bits=16`` leaves activations in full precision
    (weight-only quantization); ``w_bits=16`` keeps a float weight.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        w_bits: int,
        a_bits: int,
        a_clip_ratio: float = 1.0,
        hadamard_block: int | None = None,
        group_size: int | None = None,
        bias: bool = False,
        impl: str = "reference",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.in_features, self.out_features = in_features, out_features
        self.w_bits, self.a_bits, self.a_clip_ratio = w_bits, a_bits, float(a_clip_ratio)
        self.hadamard_block, self.group_size, self.impl = hadamard_block, group_size, impl
        packed_k = in_features // 2 if w_bits == 4 else in_features
        if w_bits == FULL_PRECISION:
            self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=dtype))
            self.register_buffer("weight_scale", None)
        else:
            self.register_buffer("weight", torch.zeros(out_features, packed_k, dtype=torch.int8))
            n_scales = 1 if group_size is None else in_features // group_size
            self.register_buffer("weight_scale", torch.ones(out_features, n_scales, dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype) if bias else None)

    @classmethod
    def from_quantized(
        cls,
        weight: QuantizedWeight | torch.Tensor,
        bias: torch.Tensor | None,
        a_bits: int,
        a_clip_ratio: float = 1.0,
        hadamard_block: int | None = None,
        impl: str = "reference",
        dtype: torch.dtype | None = None,
    ) -> "QuantLinear":
        """From quantized weight codes (or a float weight for ``w_bits=16``), already in the transformed basis."""
        if isinstance(weight, QuantizedWeight):
            n, k = weight.codes.shape
            w_bits, group = weight.bits, weight.group_size
        else:
            n, k = weight.shape
            w_bits, group = FULL_PRECISION, None
        dtype = dtype or (bias.dtype if bias is not None else torch.float32)
        mod = cls(k, n, w_bits, a_bits, a_clip_ratio, hadamard_block, group, bias is not None, impl, dtype)
        if isinstance(weight, QuantizedWeight):
            codes = weight.codes.to(torch.int8)
            mod.weight.copy_(pack_int4(codes) if w_bits == 4 else codes)
            mod.weight_scale.copy_(weight.scale.float())
        else:
            mod.weight.copy_(weight)
        if bias is not None:
            mod.bias.copy_(bias)
        return mod

    # -- weights -----------------------------------------------------------------------------------
    def weight_codes(self) -> torch.Tensor:
        """Unpacked int8 codes ``[N, K]``."""
        return unpack_int4(self.weight) if self.w_bits == 4 else self.weight

    def dequantized_weight(self) -> torch.Tensor:
        """``[N, K]`` weight in the transformed basis (float32, or float64 for a float64 full-precision weight)."""
        if self.w_bits == FULL_PRECISION:
            return self.weight if self.weight.dtype == torch.float64 else self.weight.float()
        return self.weight_codes().float() * expand_group_scale(self.weight_scale, self.group_size, self.in_features)

    # -- forward -----------------------------------------------------------------------------------
    def _use_triton(self, x: torch.Tensor) -> bool:
        if self.impl == "reference":
            return False
        if self.impl == "auto":
            return x.is_cuda and self._kernel_supported()
        if not self._kernel_supported():
            raise ValueError(
                f"the Triton W{self.w_bits}A{self.a_bits} path needs 4-bit weights and activations with "
                f"per-channel scales (got group_size={self.group_size}); use impl='reference'"
            )
        return True

    def _kernel_supported(self) -> bool:
        return self.w_bits == 4 and self.a_bits == 4 and self.group_size is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)  # [M, K]
        if self._use_triton(x2):
            out = self._forward_triton(x2, x)
        else:
            out = self._forward_reference(x2)
        return out.reshape(*shape[:-1], self.out_features)

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        if self.hadamard_block:
            x = apply_block_hadamard(x, self.hadamard_block)
        if self.a_bits == FULL_PRECISION:
            ct = torch.promote_types(x.dtype, torch.float32)
            y = x.to(ct) @ self.dequantized_weight().to(ct).T
        elif self.group_size is None and self.w_bits != FULL_PRECISION:
            codes, scale = quantize_activation(x, self.a_bits, self.a_clip_ratio)  # [M, K], [M, 1]
            acc = codes.float() @ self.weight_codes().float().T  # exact integer sums (|acc| < 2^24)
            y = acc * scale * self.weight_scale.view(1, -1)
        else:
            codes, scale = quantize_activation(x, self.a_bits, self.a_clip_ratio)
            y = (codes.float() * scale) @ self.dequantized_weight().T
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(x.dtype)

    def _forward_triton(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """``x``: ``[M, K]``, a view of the module's input ``source`` (whose identity the activation memo keys on).

        Decode-sized inputs (``M <= GEMV_MAX_M``) take the split-K GEMV, quantizing in the kernel when ``M`` is
        at most ``GEMV_QUANT_IN_MAX_M`` and no Hadamard applies; larger ones the W4A4 GEMM. All paths give the
        same codes and the same float32 epilogue."""
        m = x.shape[0]
        w_scale = self.weight_scale.view(-1)
        if 0 < m <= GEMV_MAX_M and self.hadamard_block is None and m <= GEMV_QUANT_IN_MAX_M:
            x = x if x.stride(-1) == 1 else x.contiguous()
            return w4_gemv.w4_gemv(x, self.weight, w_scale, self.bias, self.a_clip_ratio, out_dtype=x.dtype)
        codes, scale = _quantized_input(x, source, self.a_clip_ratio, self.hadamard_block)
        if 0 < m <= GEMV_MAX_M:
            return w4_gemv.w4_gemv_codes(codes, scale, self.weight, w_scale, self.bias, out_dtype=x.dtype)
        return w4a4_gemm.w4a4_matmul(codes, scale, self.weight, w_scale, self.bias, out_dtype=x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, w_bits={self.w_bits}, a_bits={self.a_bits}, "
            f"a_clip={self.a_clip_ratio:.3f}, hadamard_block={self.hadamard_block}, group={self.group_size}, "
            f"impl={self.impl}"
        )
