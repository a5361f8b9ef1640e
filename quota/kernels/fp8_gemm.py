"""W8A8 FP8 GEMM: e4m3 activations (per-token scales) times e4m3 weights (per-channel scales), via
``torch._scaled_mm`` (cuBLASLt FP8 on sm_89+; PyTorch also implements it on the CPU).

``out[m, n] = a_scale[m] * w_scale[n] * sum_k a[m, k] * w[n, k] (+ bias[n])``

This is the FP8 baseline a user of a Hopper GPU would choose (row-wise scaled FP8, as torchao's
``Float8DynamicActivationFloat8Weight`` with ``PerRow``). Not a Triton kernel: ``torch._scaled_mm`` is the fastest
FP8 GEMM at hand (measured 1081-1167 TOPS on the H200 at M >= 2048). With a bfloat16 output the row-wise scales
(``[M, 1]``, ``[1, N]``) and the bias are applied inside the GEMM; a float16 or float32 output runs the GEMM with
unit scales into float32 and applies the scales in a float32 epilogue (one extra pass over the output).
"""

from __future__ import annotations

import functools

import torch

ALIGN = 16
"""``torch._scaled_mm`` on CUDA needs K and N multiples of 16."""


def has_fp8(device: torch.device) -> bool:
    """Whether ``device`` has FP8 tensor cores (a CUDA GPU of compute capability >= 8.9; cached per device)."""
    device = torch.device(device)
    return device.type == "cuda" and _capability(device.index if device.index is not None else
                                                 torch.cuda.current_device()) >= (8, 9)


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def fp8_shapes_supported(k: int, n: int) -> bool:
    """Whether ``[*, K] x [N, K]^T`` fits ``torch._scaled_mm``'s alignment on CUDA."""
    return k % ALIGN == 0 and n % ALIGN == 0


def _check(a, a_scale, w, w_scale, bias, out_dtype, name: str) -> tuple[int, int, int]:
    if a.dtype != torch.float8_e4m3fn or w.dtype != torch.float8_e4m3fn:
        raise ValueError(f"{name}: a and w must be float8_e4m3fn, got {a.dtype} and {w.dtype}")
    if a.dim() != 2 or w.dim() != 2 or a.shape[1] != w.shape[1]:
        raise ValueError(f"{name}: need a [M, K] and w [N, K], got {list(a.shape)} {list(w.shape)}")
    m, k = a.shape
    n = w.shape[0]
    if m == 0 or n == 0 or k == 0:
        raise ValueError(f"{name}: empty operand, a {tuple(a.shape)}, w {tuple(w.shape)}")
    if a_scale.dtype != torch.float32 or a_scale.numel() != m:
        raise ValueError(f"{name}: a_scale must be float32 [M={m}, 1], got {a_scale.dtype} {tuple(a_scale.shape)}")
    if w_scale.dtype != torch.float32 or w_scale.numel() != n:
        raise ValueError(f"{name}: w_scale must be float32 [N={n}], got {w_scale.dtype} {tuple(w_scale.shape)}")
    if bias is not None and (bias.dim() != 1 or bias.numel() != n or not bias.is_floating_point()):
        raise ValueError(f"{name}: bias must be a float [N={n}] vector, got {bias.dtype} {tuple(bias.shape)}")
    if out_dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"{name}: out_dtype must be bfloat16, float16 or float32, got {out_dtype}")
    devices = {t.device for t in (a, a_scale, w, w_scale) + ((bias,) if bias is not None else ())}
    if len(devices) != 1:
        raise ValueError(f"{name}: all tensors must be on one device, got {sorted(map(str, devices))}")
    if a.is_cuda:
        if not fp8_shapes_supported(k, n):
            raise ValueError(f"{name}: torch._scaled_mm needs K and N multiples of {ALIGN}, got K={k}, N={n}")
        if not has_fp8(a.device):
            raise ValueError(f"{name}: FP8 GEMMs need compute capability 8.9 or newer, this GPU has "
                             f"{torch.cuda.get_device_capability(a.device)}")
    return m, k, n


def fp8_matmul(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """``[M, N] = (a_scale * w_scale) * (A_e4m3 @ W_e4m3^T) (+ bias)``.

    - ``a``: ``float8_e4m3fn`` ``[M, K]`` per-token codes (:func:`quota.kernels.fp8_quant.quantize_fp8_triton`);
    - ``a_scale``: float32 ``[M, 1]`` (or ``[M]``);
    - ``w``: ``float8_e4m3fn`` ``[N, K]`` per-channel codes (:func:`quota.kernels.fp8_quant.quantize_weight_fp8`),
      row-major (the ``nn.Linear`` layout; passed to ``_scaled_mm`` as the column-major ``w.t()``);
    - ``w_scale``: float32 ``[N]`` (or ``[N, 1]``); ``bias``: ``[N]`` float or None;
    - returns ``[M, N]`` ``out_dtype`` (bfloat16, float16 or float32). On CUDA, K and N are multiples of 16.
    """
    m, _, n = _check(a, a_scale, w, w_scale, bias, out_dtype, "fp8_matmul")
    a = a.contiguous()
    w = w.contiguous()
    sa = a_scale.reshape(m, 1).contiguous()  # [M, 1]
    sw = w_scale.reshape(1, n).contiguous()  # [1, N]
    if out_dtype == torch.bfloat16:
        b = bias.to(torch.bfloat16) if bias is not None else None
        return torch._scaled_mm(a, w.t(), scale_a=sa, scale_b=sw, bias=b, out_dtype=torch.bfloat16)
    one = torch.ones((), device=a.device, dtype=torch.float32)
    acc = torch._scaled_mm(a, w.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)  # [M, N]
    out = acc * sa * sw
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


def fp8_matmul_reference(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Reference for :func:`fp8_matmul`: the product of the e4m3 values in float64 (exact for ``K < 2^20``), then
    the scales and the bias in float64, then ``out_dtype``."""
    acc = a.double() @ w.double().T  # [M, N]
    out = acc * a_scale.double().reshape(-1, 1) * w_scale.double().reshape(1, -1)
    if bias is not None:
        out = out + bias.double().reshape(1, -1)
    return out.to(out_dtype)
