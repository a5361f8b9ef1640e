"""Precision options of a decoder layer's linears, as data: the names a per-layer precision list may use.

Each option is a real kernel path with a PyTorch reference (the modules live in :mod:`quota.quantize`):

============  ================  =======================  ==========================================  =========
name          weights           activations              kernel (CUDA)                               bytes/wt
============  ================  =======================  ==========================================  =========
``w4a4``      int4, per channel int4 per token           ``kernels.w4a4_gemm`` (int8 ``tl.dot``)      0.5
``w4a8``      int4, per channel FP8 e4m3 per token       ``kernels.w4a8_gemm`` (FP8 ``tl.dot``, sm_89+) 0.5
``w4a8_int8`` int4, per channel int8 per token           ``kernels.w4a8_gemm`` (int8 ``tl.dot``)      0.5
``fp8``       FP8 e4m3, per ch. FP8 e4m3 per token       ``torch._scaled_mm`` (row-wise scales)      1
``bf16``      the model's dtype the model's dtype        ``nn.Linear`` (untouched)                   2
============  ================  =======================  ==========================================  =========

``w4a8_int8`` is the W4A8 variant for GPUs without FP8 tensor cores (before sm_89). Rotation and GPTQ apply
wherever weights are 4-bit. This module is pure data (no torch), so configs can validate names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


class PrecisionError(ValueError):
    """An unknown precision name, or a per-layer list of the wrong kind or length."""


@dataclass(frozen=True)
class Precision:
    """One precision option of a decoder layer's linears.

    - ``weight_bits``: 4, 8 or 16 (16: the model's float weights, unquantized);
    - ``weight_format``: ``int`` (symmetric integer codes), ``fp8_e4m3`` or ``float``;
    - ``act_bits`` / ``act_format``: the same for activations (per-token dynamic scales when quantized);
    - ``kernel``: the CUDA kernel path, as ``module:function`` (``torch`` for plain ``nn.Linear``);
    - ``needs_fp8``: the kernel needs FP8 tensor cores (compute capability >= 8.9);
    - ``bytes_per_weight``: storage per weight element, scales left out (bf16: 2).
    """

    name: str
    weight_bits: int
    weight_format: str
    act_bits: int
    act_format: str
    kernel: str
    needs_fp8: bool
    bytes_per_weight: float

    @property
    def weight_int4(self) -> bool:
        """Whether weights are 4-bit integers (rotation matters, GPTQ applies)."""
        return self.weight_bits == 4 and self.weight_format == "int"

    @property
    def quantized(self) -> bool:
        return self.weight_bits != 16 or self.act_bits != 16


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("w4a4", 4, "int", 4, "int", "quota.kernels.w4a4_gemm:w4a4_matmul", False, 0.5),
    Precision("w4a8", 4, "int", 8, "fp8_e4m3", "quota.kernels.w4a8_gemm:w4a8_fp8_matmul", True, 0.5),
    Precision("w4a8_int8", 4, "int", 8, "int", "quota.kernels.w4a8_gemm:w4a8_int8_matmul", False, 0.5),
    Precision("fp8", 8, "fp8_e4m3", 8, "fp8_e4m3", "quota.kernels.fp8_gemm:fp8_matmul", True, 1.0),
    Precision("bf16", 16, "float", 16, "float", "torch", False, 2.0),
)}
"""Every precision option by name."""

PRECISION_NAMES: tuple[str, ...] = tuple(PRECISIONS)


def precision(name: str) -> Precision:
    """The :class:`Precision` called ``name``; :class:`PrecisionError` naming the known ones otherwise."""
    if not isinstance(name, str) or name not in PRECISIONS:
        raise PrecisionError(f"unknown precision {name!r}; known: {', '.join(PRECISION_NAMES)}")
    return PRECISIONS[name]


def validate_layer_precision(names: Iterable[str], layers: int | None = None) -> tuple[str, ...]:
    """``names`` as a tuple after checking each is a known precision and, when ``layers`` is given, that there is
    exactly one per decoder layer. Raises :class:`PrecisionError` naming the first bad entry (its index) or the
    length mismatch."""
    if isinstance(names, str):
        raise PrecisionError(f"a per-layer precision list must be a sequence of names, got the string {names!r}")
    try:
        names = tuple(names)
    except TypeError:
        raise PrecisionError(f"a per-layer precision list must be a sequence of names, got "
                             f"{type(names).__name__}") from None
    if not names:
        raise PrecisionError("a per-layer precision list must not be empty")
    for i, name in enumerate(names):
        if not isinstance(name, str) or name not in PRECISIONS:
            raise PrecisionError(f"layer {i}: unknown precision {name!r}; known: {', '.join(PRECISION_NAMES)}")
    if layers is not None and len(names) != layers:
        raise PrecisionError(f"{len(names)} precisions given for {layers} decoder layers (one per layer)")
    return names


def weight_bytes(names: Iterable[str], weights_per_layer: int) -> float:
    """Bytes of the decoder layers' linear weights under a per-layer precision list (scales left out), for
    layers of ``weights_per_layer`` weight elements each."""
    return sum(precision(n).bytes_per_weight for n in names) * weights_per_layer
