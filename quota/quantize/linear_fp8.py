""":class:`Fp8Linear`: W8A8 FP8 e4m3 (precision ``fp8``): per-output-channel weight scales, per-token dynamic
activation scales, with a reference and a kernel path.

``y = (Q_fp8(T(x)) @ Q_fp8(W T)^T) * s_a * s_w + b`` where ``T`` is the optional online block-Hadamard (the
``down_proj`` input of a rotated model) and ``Q_fp8`` rounds to the nearest e4m3 value after dividing by the
scale (``absmax * clip / 448``). Kernel path: :func:`quota.kernels.fp8_quant.quantize_fp8_triton` then
:func:`quota.kernels.fp8_gemm.fp8_matmul` (``torch._scaled_mm``); the reference emulates the same rounding with
``.to(torch.float8_e4m3fn)`` casts (which run on the CPU) and a float32 product.

A subclass of :class:`~quota.quantize.linear.QuantLinear` (``w_bits=8, a_bits=8``) so that code reading a quantized
linear's clipping ratio, online Hadamard and bits reads this one too; its ``weight`` buffer is
``float8_e4m3fn`` ``[N, K]`` and ``weight_scale`` float32 ``[N, 1]``.
"""

from __future__ import annotations

import torch

from quota.kernels.fp8_gemm import fp8_matmul, fp8_shapes_supported, has_fp8
from quota.kernels.fp8_quant import dequantize_fp8, quantize_fp8_reference, quantize_fp8_triton, quantize_weight_fp8
from quota.quant.hadamard import apply_block_hadamard
from quota.quantize.linear import QuantLinear


class Fp8Linear(QuantLinear):
    """W8A8 FP8 linear; build it with :meth:`from_float` (a float weight in the transformed basis)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        a_clip_ratio: float = 1.0,
        hadamard_block: int | None = None,
        bias: bool = False,
        impl: str = "reference",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(in_features, out_features, 8, 8, a_clip_ratio, hadamard_block, None, bias, impl, dtype)
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.float8_e4m3fn))

    @classmethod
    def from_float(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        a_clip_ratio: float = 1.0,
        hadamard_block: int | None = None,
        impl: str = "reference",
        dtype: torch.dtype | None = None,
    ) -> "Fp8Linear":
        """From a float weight ``[N, K]`` in the transformed basis (``W H`` for an online Hadamard), quantized to
        e4m3 per output channel (:func:`~quota.kernels.fp8_quant.quantize_weight_fp8`)."""
        n, k = weight.shape
        dtype = dtype or (bias.dtype if bias is not None else torch.float32)
        mod = cls(k, n, a_clip_ratio, hadamard_block, bias is not None, impl, dtype)
        codes, scale = quantize_weight_fp8(weight)  # [N, K] e4m3, [N, 1] fp32
        mod.weight.copy_(codes)
        mod.weight_scale.copy_(scale)
        if bias is not None:
            mod.bias.copy_(bias)
        return mod

    def weight_codes(self) -> torch.Tensor:
        """The e4m3 weight codes ``[N, K]``."""
        return self.weight

    def dequantized_weight(self) -> torch.Tensor:
        """``[N, K]`` float32 weight in the transformed basis."""
        return dequantize_fp8(self.weight, self.weight_scale)

    def fake_quantize_input(self, x: torch.Tensor, clip_ratio: float) -> torch.Tensor:
        """Quantize-dequantize ``x`` ``[n, K]`` (already transformed) as the activation quantizer would."""
        return dequantize_fp8(*quantize_fp8_reference(x, clip_ratio)).to(x.dtype)

    # -- forward -----------------------------------------------------------------------------------
    def _use_kernels(self, x: torch.Tensor) -> bool:
        if self.impl == "reference":
            return False
        if self.impl == "auto":
            return x.is_cuda and has_fp8(x.device) and fp8_shapes_supported(self.in_features, self.out_features)
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)  # [M, K]
        out = self._forward_kernel(x2) if self._use_kernels(x2) else self._forward_reference(x2)
        return out.reshape(*shape[:-1], self.out_features)

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        xt = apply_block_hadamard(x, self.hadamard_block) if self.hadamard_block else x
        codes, scale = quantize_fp8_reference(xt, self.a_clip_ratio)  # [M, K] e4m3, [M, 1]
        acc = codes.float() @ self.weight.float().T  # [M, N]: e4m3 products exact, float32 sums
        y = acc * scale * self.weight_scale.view(1, -1)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(x.dtype)

    def _forward_kernel(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.float32
        xt = apply_block_hadamard(x, self.hadamard_block) if self.hadamard_block else x
        quantize = quantize_fp8_triton if x.is_cuda else quantize_fp8_reference  # bit-identical codes
        codes, scale = quantize(xt, self.a_clip_ratio)
        return fp8_matmul(codes, scale, self.weight, self.weight_scale.view(-1), self.bias, out_dtype=out_dtype)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, fp8 e4m3 W8A8, a_clip={self.a_clip_ratio:.3f}, "
                f"hadamard_block={self.hadamard_block}, impl={self.impl}")
