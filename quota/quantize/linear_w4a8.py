""":class:`W4A8Linear`: int4 weights (GPTQ/RTN, per output channel) with 8-bit per-token activations, FP8 e4m3
(precision ``w4a8``) or int8 (precision ``w4a8_int8``), with a reference and a kernel path.

It is a :class:`~quota.quantize.linear.QuantLinear` with ``w_bits=4, a_bits=8`` and the same storage (packed int4
weights ``[N, K/2]`` int8, float32 scales ``[N, 1]``), so everything that reads a QuantLinear's weights, clipping
ratio or online Hadamard reads this one too; only the activation format and the forward differ:

- ``act_format="fp8"``: ``x -> [H] -> quantize_fp8(clip) -> (A_e4m3 @ W_int4^T) * s_a * s_w + b``; kernel
  :func:`quota.kernels.w4a8_gemm.w4a8_fp8_matmul` (FP8 tensor cores, compute capability >= 8.9);
- ``act_format="int8"``: ``x -> [H] -> int8 codes (clip) -> ...``; kernel
  :func:`quota.kernels.w4a8_gemm.w4a8_int8_matmul` (int8 tensor cores); its reference is QuantLinear's W4A8.
"""

from __future__ import annotations

import torch

from quota.kernels import act_quant, w4a8_gemm
from quota.kernels.fp8_gemm import has_fp8
from quota.kernels.fp8_quant import dequantize_fp8, quantize_fp8_reference, quantize_fp8_triton
from quota.quant.hadamard import apply_block_hadamard
from quota.quant.int4 import pack_int4
from quota.quant.quantizers import QuantizedWeight, fake_quantize_activation
from quota.quantize.linear import QuantLinear

ACT_FORMATS = ("fp8", "int8")


class W4A8Linear(QuantLinear):
    """``y = Q8(T(x)) @ Q4(W T)^T + b``; build it with :meth:`from_quantized` (4-bit per-channel weights)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        act_format: str = "fp8",
        a_clip_ratio: float = 1.0,
        hadamard_block: int | None = None,
        bias: bool = False,
        impl: str = "reference",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if act_format not in ACT_FORMATS:
            raise ValueError(f"act_format must be one of {ACT_FORMATS}, got {act_format!r}")
        if in_features % 2:
            raise ValueError(f"W4A8Linear packs two int4 weights per byte: in_features must be even, got {in_features}")
        super().__init__(in_features, out_features, 4, 8, a_clip_ratio, hadamard_block, None, bias, impl, dtype)
        self.act_format = act_format

    @classmethod
    def from_quantized(
        cls,
        weight: QuantizedWeight,
        bias: torch.Tensor | None,
        act_format: str = "fp8",
        a_clip_ratio: float = 1.0,
        hadamard_block: int | None = None,
        impl: str = "reference",
        dtype: torch.dtype | None = None,
    ) -> "W4A8Linear":
        """From 4-bit per-channel weight codes ``[N, K]`` (``QuantizedWeight``), already in the transformed basis."""
        if not isinstance(weight, QuantizedWeight) or weight.bits != 4 or weight.group_size is not None:
            raise ValueError("W4A8Linear needs 4-bit per-channel quantized weights (QuantizedWeight, bits=4, no groups)")
        n, k = weight.codes.shape
        dtype = dtype or (bias.dtype if bias is not None else torch.float32)
        mod = cls(k, n, act_format, a_clip_ratio, hadamard_block, bias is not None, impl, dtype)
        mod.weight.copy_(pack_int4(weight.codes.to(torch.int8)))
        mod.weight_scale.copy_(weight.scale.float())
        if bias is not None:
            mod.bias.copy_(bias)
        return mod

    def fake_quantize_input(self, x: torch.Tensor, clip_ratio: float) -> torch.Tensor:
        """Quantize-dequantize ``x`` ``[n, K]`` (already transformed) as this module's activation quantizer would
        with ``clip_ratio`` (the calibration's clipping search)."""
        if self.act_format == "fp8":
            return dequantize_fp8(*quantize_fp8_reference(x, clip_ratio)).to(x.dtype)
        return fake_quantize_activation(x, 8, clip_ratio)

    # -- forward -----------------------------------------------------------------------------------
    def _use_kernels(self, x: torch.Tensor) -> bool:
        if self.impl == "reference":
            return False
        if self.impl == "auto":
            return x.is_cuda and (self.act_format == "int8" or has_fp8(x.device))
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)  # [M, K]
        out = self._forward_kernel(x2) if self._use_kernels(x2) else self._forward_reference(x2)
        return out.reshape(*shape[:-1], self.out_features)

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_format == "int8":
            return super()._forward_reference(x)
        xt = apply_block_hadamard(x, self.hadamard_block) if self.hadamard_block else x
        codes, scale = quantize_fp8_reference(xt, self.a_clip_ratio)  # [M, K] e4m3, [M, 1]
        acc = codes.float() @ self.weight_codes().float().T  # [M, N]: products exact, float32 sums
        y = acc * scale * self.weight_scale.view(1, -1)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(x.dtype)

    def _forward_kernel(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.float32
        w_scale = self.weight_scale.view(-1)
        if self.act_format == "int8":
            codes, scale = act_quant.quantize_activation_triton(x, 8, self.a_clip_ratio, self.hadamard_block)
            return w4a8_gemm.w4a8_int8_matmul(codes, scale, self.weight, w_scale, self.bias, out_dtype=out_dtype)
        xt = apply_block_hadamard(x, self.hadamard_block) if self.hadamard_block else x
        codes, scale = quantize_fp8_triton(xt, self.a_clip_ratio)
        return w4a8_gemm.w4a8_fp8_matmul(codes, scale, self.weight, w_scale, self.bias, out_dtype=out_dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", act_format={self.act_format}"
