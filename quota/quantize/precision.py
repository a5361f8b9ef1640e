"""Per-decoder-layer precision: the registry of options (re-exported from :mod:`quota.quant.precision`, where it
is pure data so that :class:`~quota.quant.config.QuantConfig` can validate names) and the module side: which
module each option builds, the uniform config a layer of that option is quantized with, and which option a
built layer has.

The API the allocation side uses::

    PRECISIONS["w4a8"]            # -> Precision(weight_bits=4, act_format="fp8_e4m3", kernel=..., bytes_per_weight=0.5)
    validate_layer_precision(["w4a4", "fp8", ...], layers=L)   # -> tuple, or PrecisionError
    QuantConfig(layer_precision=(...), layer_kv_bits=(...))    # quantize_model honours both
    layer_precisions(model)       # -> ["w4a4", "fp8", ...], what a quantized model's layers run
"""

from __future__ import annotations

import torch
import torch.nn as nn

from quota.models.registry import spec_for
from quota.models.spec import get_submodule
from quota.quant.config import FULL_PRECISION, QuantConfig
from quota.quant.precision import (  # re-exported: the registry beside the module side
    PRECISION_NAMES,
    PRECISIONS,
    Precision,
    PrecisionError,
    precision,
    validate_layer_precision,
    weight_bytes,
)
from quota.quant.quantizers import QuantizedWeight
from quota.quantize.linear import QuantLinear
from quota.quantize.linear_fp8 import Fp8Linear
from quota.quantize.linear_w4a8 import W4A8Linear

__all__ = [
    "PRECISIONS", "PRECISION_NAMES", "Precision", "PrecisionError", "precision", "validate_layer_precision",
    "weight_bytes", "layer_config", "build_linear", "precision_of_module", "layer_precisions",
]


def layer_config(config: QuantConfig, name: str) -> QuantConfig:
    """The uniform config the linears of a decoder layer of precision ``name`` are quantized with: ``config``'s
    method, clipping and rotation settings with the option's bits (per-layer fields cleared). 4-bit weights keep
    ``config.weight_method`` (GPTQ or RTN); FP8 weights are rounded per channel (no GPTQ, no clipping search)."""
    p = precision(name)
    base = config.replace(layer_precision=None, layer_kv_bits=None)
    if p.weight_int4:
        group = base.w_group_size if p.act_format == "int" and p.act_bits == 4 else None
        return base.replace(w_bits=4, a_bits=p.act_bits, w_group_size=group)
    if p.weight_format == "fp8_e4m3":
        return base.replace(w_bits=8, a_bits=8, w_group_size=None, weight_method="rtn", w_clip_search=False)
    return base.replace(w_bits=FULL_PRECISION, a_bits=FULL_PRECISION)


def build_linear(
    name: str,
    weight: QuantizedWeight | torch.Tensor,
    bias: torch.Tensor | None,
    a_clip_ratio: float,
    hadamard_block: int | None,
    impl: str,
    dtype: torch.dtype,
) -> QuantLinear:
    """The module of precision ``name`` (not ``bf16``, whose layers keep their ``nn.Linear``): ``weight`` is the
    4-bit :class:`QuantizedWeight` for ``w4a4``/``w4a8``/``w4a8_int8`` and the float ``[N, K]`` weight in the
    transformed basis for ``fp8``."""
    p = precision(name)
    if name == "w4a4":
        return QuantLinear.from_quantized(weight, bias, 4, a_clip_ratio, hadamard_block, impl, dtype=dtype)
    if p.weight_int4:
        fmt = "fp8" if p.act_format == "fp8_e4m3" else "int8"
        return W4A8Linear.from_quantized(weight, bias, fmt, a_clip_ratio, hadamard_block, impl, dtype=dtype)
    if name == "fp8":
        return Fp8Linear.from_float(weight, bias, a_clip_ratio, hadamard_block, impl, dtype=dtype)
    raise PrecisionError(f"precision {name!r} builds no quantized module (its layers keep nn.Linear)")


def precision_of_module(module: nn.Module) -> str | None:
    """The precision option a linear module runs: ``bf16`` for a plain ``nn.Linear``, ``w4a4`` / ``w4a8`` /
    ``w4a8_int8`` / ``fp8`` for the quantized modules of those options, ``None`` for any other module (a
    :class:`QuantLinear` of other bits, e.g. the uniform W8A8 or W4A16)."""
    if isinstance(module, Fp8Linear):
        return "fp8"
    if isinstance(module, W4A8Linear):
        return "w4a8" if module.act_format == "fp8" else "w4a8_int8"
    if isinstance(module, QuantLinear):
        ok = module.w_bits == 4 and module.a_bits == 4
        return "w4a4" if ok else None
    if isinstance(module, nn.Linear):
        return "bf16"
    return None


def layer_precisions(model: nn.Module) -> list[str | None]:
    """Per decoder layer of ``model`` (an architecture of the registry), the precision its linears run, or
    ``None`` where they differ from one another or match no option."""
    spec = spec_for(model)
    found: list[str | None] = []
    for layer in spec.layers_of(model):
        kinds = {precision_of_module(get_submodule(layer, path)) for path in spec.layer.linear_paths}
        found.append(kinds.pop() if len(kinds) == 1 else None)
    return found
