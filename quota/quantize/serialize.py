"""Quantized models as data: what :func:`~quota.quantize.model.quantize_model` puts into a model, written as JSON
records plus a flat dict of tensors, and rebuilt from them without calibrating again.

Three things are recorded:

- **modules** (:func:`module_record`, :func:`build_module`): each :class:`QuantLinear` (its bits, group size,
  clipping ratio, online Hadamard block, bias, kernel choice, float dtype), each :class:`W4A8Linear` (the same
  plus its activation format) and :class:`Fp8Linear` (a per-layer precision's modules), and each
  :class:`~quota.quantize.rotation.RotatedOutput` wrapper (the rotated projector). A record rebuilds an *empty*
  module of the same shapes (zeros; build it under ``torch.device("meta")`` to allocate nothing), which the
  stored tensors then fill;
- **attention** (:func:`kv_records`, :func:`install_kv_records`, :func:`attention_implementations`): the
  :class:`KVQuantizer` of each attention module (by dotted path) and the attention implementation selected on
  each config of the model (``quota`` for the language model after quantization);
- **tensors** (:func:`model_tensors`, :func:`assign_tensors`): every parameter and buffer by its state-dict name,
  including non-persistent buffers (RoPE frequencies, position ids) so that a model built on the meta device
  comes back whole; a tensor shared by two names (tied weights) is stored once and the second name recorded as
  its alias.

Every reader checks what it reads and raises :class:`SerializeError` (a ``ValueError``) naming the record and the
field. Nothing here pickles: records are JSON values, tensors go to safetensors.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from quota.models.registry import spec_for
from quota.models.spec import get_submodule
from quota.quant.config import FULL_PRECISION
from quota.quantize.attention import ATTENTION_NAME, KVQuantizer, install_kv_quantizer, use_quota_attention
from quota.quantize.linear import IMPLS, QuantLinear
from quota.quantize.linear_fp8 import Fp8Linear
from quota.quantize.linear_w4a8 import ACT_FORMATS, W4A8Linear
from quota.quantize.model import QuantReport
from quota.quantize.rotation import RotatedOutput


class SerializeError(ValueError):
    """A record of a quantized module, a KV quantizer or a tensor layout is malformed or does not fit the model."""


_DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64)}
CONFIG_ROLES = ("", "text_config", "vision_config")
"""The configs whose attention implementation is recorded: the model's own (``""``) and its sub-configs."""


def dtype_name(dtype: torch.dtype) -> str:
    """``"torch.bfloat16"`` for ``torch.bfloat16`` (the form :func:`dtype_of` reads)."""
    return str(dtype)


def dtype_of(name: Any, where: str = "dtype") -> torch.dtype:
    """The float dtype written by :func:`dtype_name`; :class:`SerializeError` for anything else."""
    if name not in _DTYPES:
        raise SerializeError(f"{where}: {name!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[name]


# --------------------------------------------------------------------------------------------- modules


def linear_record(module: QuantLinear) -> dict[str, Any]:
    """The non-tensor state of a :class:`QuantLinear` (its tensors are ``weight`` ``[N, K/2]`` int8 for 4 bits or
    ``[N, K]``, ``weight_scale`` ``[N, 1 or K/group]`` float32, ``bias`` ``[N]``)."""
    float_dtype = module.bias.dtype if module.bias is not None else (
        module.weight.dtype if module.w_bits == FULL_PRECISION else torch.float32)
    return {"kind": "QuantLinear", "in_features": module.in_features, "out_features": module.out_features,
            "w_bits": module.w_bits, "a_bits": module.a_bits, "a_clip_ratio": float(module.a_clip_ratio),
            "hadamard_block": module.hadamard_block, "group_size": module.group_size,
            "bias": module.bias is not None, "impl": module.impl, "dtype": dtype_name(float_dtype)}


def _integer(record: dict, name: str, where: str, optional: bool = False, minimum: int = 1) -> int | None:
    value = record.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SerializeError(f"{where}.{name} = {value!r} must be an integer >= {minimum}")
    return value


def empty_linear(record: dict[str, Any], where: str = "linear", impl: str | None = None) -> QuantLinear:
    """A :class:`QuantLinear` of ``record``'s shapes and settings with zero tensors (to be filled by the stored
    ones); ``impl`` replaces the recorded kernel choice."""
    ratio = record.get("a_clip_ratio")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
        raise SerializeError(f"{where}.a_clip_ratio = {ratio!r} must be a positive number")
    if not isinstance(record.get("bias"), bool):
        raise SerializeError(f"{where}.bias = {record.get('bias')!r} must be true or false")
    impl = impl if impl is not None else record.get("impl")
    if impl not in IMPLS:
        raise SerializeError(f"{where}.impl = {impl!r} must be one of {list(IMPLS)}")
    return QuantLinear(
        in_features=_integer(record, "in_features", where), out_features=_integer(record, "out_features", where),
        w_bits=_integer(record, "w_bits", where), a_bits=_integer(record, "a_bits", where), a_clip_ratio=float(ratio),
        hadamard_block=_integer(record, "hadamard_block", where, optional=True),
        group_size=_integer(record, "group_size", where, optional=True, minimum=2), bias=record["bias"], impl=impl,
        dtype=dtype_of(record.get("dtype"), f"{where}.dtype"),
    )


def _precision_linear_record(module: QuantLinear) -> dict[str, Any]:
    """The record of a :class:`W4A8Linear` (kind ``W4A8Linear``, with ``act_format``) or an :class:`Fp8Linear`
    (kind ``Fp8Linear``): :func:`linear_record`'s fields without the bits and group size, which the kind fixes."""
    record = linear_record(module)
    for name in ("w_bits", "a_bits", "group_size"):
        del record[name]
    if isinstance(module, W4A8Linear):
        return {**record, "kind": "W4A8Linear", "act_format": module.act_format}
    return {**record, "kind": "Fp8Linear"}


def _empty_precision_linear(record: dict[str, Any], where: str, impl: str | None) -> QuantLinear:
    """The empty :class:`W4A8Linear` or :class:`Fp8Linear` of :func:`_precision_linear_record`'s record."""
    base = empty_linear({**record, "w_bits": 8, "a_bits": 8, "group_size": None}, where, impl)  # checks the fields
    args = dict(a_clip_ratio=base.a_clip_ratio, hadamard_block=base.hadamard_block, bias=base.bias is not None,
                impl=base.impl, dtype=dtype_of(record.get("dtype"), f"{where}.dtype"))
    if record["kind"] == "Fp8Linear":
        return Fp8Linear(base.in_features, base.out_features, **args)
    fmt = record.get("act_format")
    if fmt not in ACT_FORMATS:
        raise SerializeError(f"{where}.act_format = {fmt!r} must be one of {list(ACT_FORMATS)}")
    if base.in_features % 2:
        raise SerializeError(f"{where}.in_features = {base.in_features} must be even (packed int4 weights)")
    return W4A8Linear(base.in_features, base.out_features, fmt, **args)


def module_record(module: nn.Module) -> dict[str, Any] | None:
    """The record of a module quantization puts into a model (:class:`QuantLinear` and its per-layer precision
    kinds :class:`W4A8Linear` and :class:`Fp8Linear`, :class:`RotatedOutput`), or ``None`` for any other module."""
    if isinstance(module, (W4A8Linear, Fp8Linear)):
        return _precision_linear_record(module)
    if isinstance(module, QuantLinear):
        return linear_record(module)
    if isinstance(module, RotatedOutput):
        return {"kind": "RotatedOutput", "size": int(module.rotation.shape[0])}
    return None


def build_module(record: dict[str, Any], current: nn.Module | None, where: str = "module",
                 impl: str | None = None) -> nn.Module:
    """The empty module of ``record``, to take the place of ``current`` (the module the architecture has there):
    a :class:`QuantLinear` replaces it, a :class:`RotatedOutput` wraps it (its rotation ``[d, d]`` zero until the
    tensors are assigned)."""
    if not isinstance(record, dict):
        raise SerializeError(f"{where}: expected an object, got {type(record).__name__}")
    kind = record.get("kind")
    if kind == "QuantLinear":
        return empty_linear(record, where, impl)
    if kind in ("W4A8Linear", "Fp8Linear"):
        return _empty_precision_linear(record, where, impl)
    if kind == "RotatedOutput":
        if current is None:
            raise SerializeError(f"{where}: a RotatedOutput needs the module it wraps, and there is none")
        size = _integer(record, "size", where)
        return RotatedOutput(current, torch.zeros(size, size))
    raise SerializeError(f"{where}.kind = {kind!r} is not QuantLinear or RotatedOutput (nor a per-layer "
                         f"precision's W4A8Linear or Fp8Linear)")


def float32_tensors(model: nn.Module) -> set[str]:
    """Names of the tensors quantized modules keep in float32 whatever the model's dtype: each
    :class:`QuantLinear`'s ``weight_scale`` and each :class:`RotatedOutput`'s ``rotation``."""
    names = set()
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, QuantLinear) and module.weight_scale is not None:
            names.add(prefix + "weight_scale")
        elif isinstance(module, RotatedOutput):
            names.add(prefix + "rotation")
    return names


# ------------------------------------------------------------------------------------------- attention


def kv_records(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{dotted path of an attention module: its KVQuantizer's fields}`` for every module that has one."""
    return {name: dataclasses.asdict(module.quota_kv) for name, module in model.named_modules()
            if isinstance(getattr(module, "quota_kv", None), KVQuantizer)}


def kv_quantizer(record: dict[str, Any], where: str = "kv") -> KVQuantizer:
    """The :class:`KVQuantizer` of a record written by :func:`kv_records`."""
    fields = {f.name for f in dataclasses.fields(KVQuantizer)}
    if not isinstance(record, dict) or set(record) != fields:
        got = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise SerializeError(f"{where}: a KV quantizer has the fields {sorted(fields)}, got {got}")
    _integer(record, "bits", where)
    _integer(record, "group_size", where)
    if not isinstance(record["hadamard"], bool):
        raise SerializeError(f"{where}.hadamard = {record['hadamard']!r} must be true or false")
    ratio = record["clip_ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise SerializeError(f"{where}.clip_ratio = {ratio!r} must lie in (0, 1]")
    return KVQuantizer(**record)


def head_dim_of(model: nn.Module) -> int:
    """The language model's attention head size (``head_dim``, else hidden size / heads), as quantize_model uses."""
    config = spec_for(model).text_config_of(model)
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def install_kv_records(model: nn.Module, records: dict[str, dict[str, Any]]) -> None:
    """Attach the recorded KV quantizers to ``model``'s attention modules (checked against its head size)."""
    if not isinstance(records, dict):
        raise SerializeError(f"kv_quantizers: expected an object, got {type(records).__name__}")
    head_dim = head_dim_of(model)
    for path, record in records.items():
        try:
            attention = get_submodule(model, path)
        except AttributeError as err:
            raise SerializeError(f"kv_quantizers.{path}: {err}") from None
        try:
            install_kv_quantizer(attention, kv_quantizer(record, f"kv_quantizers.{path}"), head_dim)
        except SerializeError:
            raise
        except ValueError as err:
            raise SerializeError(f"kv_quantizers.{path}: {err}") from None


def _configs(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    found = {"": config} if config is not None else {}
    for role in CONFIG_ROLES[1:]:
        sub = getattr(config, role, None)
        if sub is not None:
            found[role] = sub
    return found


def attention_implementations(model: nn.Module) -> dict[str, str]:
    """``{config role: attention implementation}`` of the model's config and its text and vision sub-configs
    (:data:`CONFIG_ROLES`; ``""`` is the model's own)."""
    return {role: c._attn_implementation for role, c in _configs(model).items()
            if getattr(c, "_attn_implementation", None) is not None}


def set_attention_implementations(model: nn.Module, implementations: dict[str, str]) -> None:
    """Select the recorded attention implementations (the model's own config first, then its sub-configs);
    ``quota`` also registers the quota attention function with transformers."""
    configs = _configs(model)
    if not isinstance(implementations, dict):
        raise SerializeError(f"attention: expected an object, got {type(implementations).__name__}")
    for role in sorted(implementations, key=len):
        name = implementations[role]
        if role not in configs or not isinstance(name, str):
            raise SerializeError(f"attention.{role or '(model)'} = {name!r} does not fit this model's configs "
                                 f"{sorted(configs)}")
        if name == ATTENTION_NAME:
            use_quota_attention(configs[role])
        else:
            configs[role]._attn_implementation = name


# --------------------------------------------------------------------------------------------- reports


def report_record(model: nn.Module) -> dict[str, Any] | None:
    """``model.quota_report`` (what :func:`quantize_model` chose) as a JSON object, or ``None`` without one."""
    report = getattr(model, "quota_report", None)
    return dataclasses.asdict(report) if report is not None else None


def report_of(record: Any) -> QuantReport:
    """The :class:`QuantReport` of :func:`report_record`'s object."""
    fields = {f.name for f in dataclasses.fields(QuantReport)}
    if not isinstance(record, dict) or "config" not in record or set(record) - fields:
        got = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise SerializeError(f"report: expected the fields {sorted(fields)}, got {got}")
    if not isinstance(record["config"], dict) or not isinstance(record.get("act_clip", {}), dict):
        raise SerializeError("report: config and act_clip must be objects")
    return QuantReport(**record)


# --------------------------------------------------------------------------------------------- tensors


@dataclass
class TensorLayout:
    """How :func:`model_tensors` flattened a model: ``aliases`` ``{name: the stored name it shares its tensor
    with}`` (tied weights, stored once) and ``non_persistent`` (buffers outside the state dict, stored too)."""

    aliases: dict[str, str] = field(default_factory=dict)
    non_persistent: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"aliases": dict(self.aliases), "non_persistent": list(self.non_persistent)}

    @classmethod
    def from_dict(cls, data: Any) -> "TensorLayout":
        if not isinstance(data, dict) or set(data) != {"aliases", "non_persistent"}:
            raise SerializeError(f"tensor layout: expected the fields aliases and non_persistent, got {data!r:.80}")
        aliases, non_persistent = data["aliases"], data["non_persistent"]
        if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
            raise SerializeError("tensor layout: aliases must map names to names")
        if not isinstance(non_persistent, list) or not all(isinstance(v, str) for v in non_persistent):
            raise SerializeError("tensor layout: non_persistent must be a list of names")
        return cls(dict(aliases), list(non_persistent))


def _non_persistent_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    found = {}
    for prefix, module in model.named_modules():
        for name in module._non_persistent_buffers_set:
            buffer = module._buffers.get(name)
            if buffer is not None:
                found[f"{prefix}.{name}" if prefix else name] = buffer
    return found


def model_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], TensorLayout]:
    """``(tensors, layout)``: every tensor of ``model`` by name (state dict, then non-persistent buffers), each
    contiguous and on the CPU, a tensor shared by several names kept under the first only. A view that
    overlaps another tensor without being the same tensor is stored as a copy of its own."""
    named = {**model.state_dict(keep_vars=False), **_non_persistent_buffers(model)}
    layout = TensorLayout(non_persistent=sorted(_non_persistent_buffers(model)))
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, tensor in named.items():
        tensor = tensor.detach()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
               tuple(tensor.stride()), tensor.dtype, tensor.device)
        if tensor.numel() and key in seen:
            layout.aliases[name] = seen[key]
            continue
        seen[key] = name
        ptr = tensor.untyped_storage().data_ptr()
        shared = tensor.numel() > 0 and ptr in storages
        storages.add(ptr)
        tensor = tensor.to("cpu")
        tensors[name] = tensor.clone() if shared or not tensor.is_contiguous() else tensor
    return tensors, layout


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    try:
        return (get_submodule(model, path) if path else model), attr
    except AttributeError as err:
        raise SerializeError(f"tensor {name}: {err}") from None


def assign_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], layout: TensorLayout) -> None:
    """Put ``tensors`` (as :func:`model_tensors` gave them, on any device) into ``model`` as its parameters and
    buffers, by reference (``load_state_dict(assign=True)``: a model built on the meta device gets them without a
    copy). Every state-dict name must be given, and nothing else; aliases share their stored tensor (a tied
    weight is one parameter again)."""
    tensors = dict(tensors)
    for alias, stored in layout.aliases.items():
        if stored not in tensors:
            raise SerializeError(f"tensor {alias} is an alias of {stored}, which is not stored")
    extra_buffers = {}
    for name in layout.non_persistent:
        if name not in tensors:
            raise SerializeError(f"non-persistent buffer {name} is not stored")
        extra_buffers[name] = tensors.pop(name)
    state = {**tensors, **{alias: tensors[stored] for alias, stored in layout.aliases.items()}}
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:
        raise SerializeError(f"the stored tensors do not fit the model: {' '.join(str(err).split())[:300]}") from None
    if result.missing_keys or result.unexpected_keys:
        raise SerializeError(f"the stored tensors do not fit the model: missing {sorted(result.missing_keys)[:3]}, "
                             f"unexpected {sorted(result.unexpected_keys)[:3]}")
    for alias, stored in layout.aliases.items():  # one Parameter object again, as in the saved model
        owner, attr = _owner(model, alias)
        source_owner, source_attr = _owner(model, stored)
        value = source_owner._parameters.get(source_attr)
        if value is not None and attr in owner._parameters:
            owner._parameters[attr] = value
    for name, tensor in extra_buffers.items():
        owner, attr = _owner(model, name)
        if attr not in owner._non_persistent_buffers_set:
            raise SerializeError(f"{name} is not a non-persistent buffer of this model")
        owner._buffers[attr] = tensor
