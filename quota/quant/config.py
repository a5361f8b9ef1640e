"""QuantConfig: one configuration shared by the simulated (reference) and the kernel paths."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from quota.quant.precision import PRECISIONS, PrecisionError, validate_layer_precision
from quota.versioned import VersionError, stamp, unstamp

CONFIG_TYPE = "quota.QuantConfig"
CONFIG_VERSION = 2  # 2: layer_precision and layer_kv_bits (version 1 configs load with both None)
_READ_VERSIONS = (1, 2)

FULL_PRECISION = 16  # bits value meaning "not quantized"
_WEIGHT_BITS = {2, 3, 4, 5, 6, 7, 8, FULL_PRECISION}
_ACT_BITS = {4, 5, 6, 7, 8, FULL_PRECISION}
_KV_BITS = {4, 8, FULL_PRECISION}
_WEIGHT_METHODS = ("rtn", "gptq")
_IMPLS = ("reference", "triton", "auto")
_ROLES = ("vision_tower", "projector", "embeddings", "lm_head")


class QuantConfigError(ValueError):
    """A QuantConfig field (or a serialized config) is invalid; the message names the field."""


@dataclass(frozen=True)
class QuantConfig:
    """How a model is quantized. ``16`` bits means "kept in full precision" for that tensor kind.

    Weights: symmetric, per output channel (``w_group_size=None``) or per group of K columns,
    round-to-nearest (``rtn``, with an optional per-channel clipping search) or ``gptq``.
    Activations: per-token dynamic symmetric, absmax scaled by a clipping ratio: searched per linear on
    the calibration data (``a_clip_search``) or the fixed ``a_clip_ratio``.
    KV cache: asymmetric, per token and head, in groups of ``kv_group_size`` along head_dim; keys are
    quantized after RoPE, optionally after a Hadamard on head_dim (``kv_hadamard``).
    Rotation (``rotate``): QuaRot-style residual-stream rotation folded into the weights, plus an online
    block-Hadamard on the ``down_proj`` input (``online_hadamard``). For hidden sizes that are not powers of
    two the residual rotation is ``kron(O, H_b)``: ``rotation_mix_blocks`` mixes the Hadamard blocks with a
    seeded random orthogonal ``O`` (off: block-diagonal).
    ``keep_full_precision`` names model parts (roles of the architecture description) left untouched.
    ``impl`` selects the simulated PyTorch path, the Triton kernels, or Triton on CUDA and the
    reference elsewhere (``auto``).

    Per decoder layer (both ``None``: uniform, from the fields above):
    ``layer_precision``: one name of :data:`quota.quant.precision.PRECISIONS` per decoder layer (``w4a4``,
    ``w4a8``, ``w4a8_int8``, ``fp8``, ``bf16``); it replaces ``w_bits``/``a_bits`` for the decoder layers'
    linears, which keep applying to the parts outside them (lm_head, vision tower, projector, embeddings when
    not kept in full precision). ``weight_method`` and the clipping searches apply to 4-bit weights; rotation
    stays global. ``layer_kv_bits``: the KV cache bits (4, 8 or 16) of each decoder layer, replacing
    ``kv_bits``. The lengths are checked against the model by ``quantize_model``.
    """

    w_bits: int = 4
    a_bits: int = 4
    kv_bits: int = 4
    w_group_size: int | None = None
    kv_group_size: int = 64
    weight_method: str = "gptq"
    w_clip_search: bool = True
    a_clip_ratio: float = 0.9
    a_clip_search: bool = True
    kv_clip_ratio: float = 1.0
    rotate: bool = True
    rotation_seed: int = 0
    rotation_mix_blocks: bool = True
    online_hadamard: bool = True
    kv_hadamard: bool = True
    gptq_damp: float = 0.01
    gptq_act_order: bool = True
    gptq_block_size: int = 128
    keep_full_precision: tuple[str, ...] = field(default=_ROLES)
    impl: str = "reference"
    layer_precision: tuple[str, ...] | None = None
    layer_kv_bits: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_full_precision", tuple(self.keep_full_precision))
        if self.layer_precision is not None:
            try:
                object.__setattr__(self, "layer_precision", validate_layer_precision(self.layer_precision))
            except PrecisionError as err:
                raise QuantConfigError(f"layer_precision: {err}") from None
        if self.layer_kv_bits is not None:
            object.__setattr__(self, "layer_kv_bits", _layer_kv_bits(self.layer_kv_bits))
        _check_in("w_bits", self.w_bits, _WEIGHT_BITS)
        _check_in("a_bits", self.a_bits, _ACT_BITS)
        _check_in("kv_bits", self.kv_bits, _KV_BITS)
        _check_in("weight_method", self.weight_method, _WEIGHT_METHODS)
        _check_in("impl", self.impl, _IMPLS)
        if self.w_group_size is not None and (not isinstance(self.w_group_size, int) or self.w_group_size < 2):
            raise QuantConfigError(f"w_group_size must be None or an integer >= 2, got {self.w_group_size!r}")
        for name in ("kv_group_size", "gptq_block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise QuantConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("a_clip_ratio", "kv_clip_ratio"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
                raise QuantConfigError(f"{name} must lie in (0, 1], got {value!r}")
        if not isinstance(self.gptq_damp, (int, float)) or not 0.0 <= float(self.gptq_damp) < 1.0:
            raise QuantConfigError(f"gptq_damp must lie in [0, 1), got {self.gptq_damp!r}")
        unknown = [r for r in self.keep_full_precision if r not in _ROLES]
        if unknown:
            raise QuantConfigError(f"keep_full_precision has unknown roles {unknown}; known roles: {list(_ROLES)}")

    @property
    def quantizes_weights(self) -> bool:
        """Whether the uniform ``w_bits`` quantize weights (with ``layer_precision``: the parts outside the
        decoder layers; see :meth:`quantizes_any`)."""
        return self.w_bits != FULL_PRECISION

    @property
    def quantizes_activations(self) -> bool:
        return self.a_bits != FULL_PRECISION

    @property
    def quantizes_kv(self) -> bool:
        """Whether some decoder layer's KV cache is quantized."""
        if self.layer_kv_bits is not None:
            return any(b != FULL_PRECISION for b in self.layer_kv_bits)
        return self.kv_bits != FULL_PRECISION

    @property
    def is_mixed(self) -> bool:
        """Whether the decoder layers' precision or KV bits are given per layer."""
        return self.layer_precision is not None or self.layer_kv_bits is not None

    def quantizes_any(self) -> bool:
        """Whether any decoder-layer linear is quantized (weights or activations)."""
        if self.layer_precision is not None:
            return any(PRECISIONS[p].quantized for p in self.layer_precision)
        return self.quantizes_weights or self.quantizes_activations

    @property
    def is_identity(self) -> bool:
        """True when nothing is quantized and nothing is rotated: applying it leaves the model unchanged."""
        outside = self.layer_precision is not None and bool(set(_ROLES) - set(self.keep_full_precision)) and (
            self.quantizes_weights or self.quantizes_activations)  # lm_head etc. under the uniform bits
        return not (self.quantizes_any() or outside or self.quantizes_kv or self.rotate)

    def precision_of_layer(self, index: int) -> str | None:
        """The precision name of decoder layer ``index``, or ``None`` when the config is uniform."""
        return None if self.layer_precision is None else self.layer_precision[index]

    def kv_bits_of_layer(self, index: int) -> int:
        """The KV cache bits of decoder layer ``index``."""
        return self.kv_bits if self.layer_kv_bits is None else self.layer_kv_bits[index]

    def short_name(self) -> str:
        """``W4A4-KV4`` style label; per-layer configs count their options, ``MIXED(w4a4x20,bf16x2)-KV4/8``."""
        if self.layer_precision is not None:
            counts: dict[str, int] = {}
            for p in self.layer_precision:
                counts[p] = counts.get(p, 0) + 1
            parts = ["MIXED(" + ",".join(f"{p}x{n}" for p, n in counts.items()) + ")"]
        else:
            parts = [f"W{self.w_bits}A{self.a_bits}" if self.quantizes_weights or self.quantizes_activations
                     else "BF16"]
        if self.quantizes_kv:
            kv = sorted(set(self.layer_kv_bits)) if self.layer_kv_bits is not None else [self.kv_bits]
            parts.append("KV" + "/".join(str(b) for b in kv))
        return "-".join(parts)

    def replace(self, **changes: Any) -> "QuantConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["keep_full_precision"] = list(self.keep_full_precision)
        for name in ("layer_precision", "layer_kv_bits"):
            if d[name] is not None:
                d[name] = list(d[name])
        return stamp(CONFIG_TYPE, CONFIG_VERSION, d)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantConfig":
        """A config from :meth:`to_dict`'s form; a missing ``type`` is accepted (a config embedded in a recipe
        or a profile), another type, an unknown version or an unknown field is refused. Version 1 (before the
        per-layer fields) loads with ``layer_precision`` and ``layer_kv_bits`` ``None``."""
        try:
            version, body = unstamp(data, CONFIG_TYPE, _READ_VERSIONS, "QuantConfig", default_type=True)
        except VersionError as err:
            raise QuantConfigError(str(err)) from None
        fields = {f.name for f in dataclasses.fields(cls)}
        if version == 1:
            fields -= {"layer_precision", "layer_kv_bits"}
        unknown = sorted(set(body) - fields)
        if unknown:
            raise QuantConfigError(f"unknown QuantConfig field(s) {unknown}; known fields: {sorted(fields)}")
        for name in ("keep_full_precision", "layer_precision", "layer_kv_bits"):
            if isinstance(body.get(name), list):
                body[name] = tuple(body[name])
        return cls(**body)

    def check_layers(self, layers: int) -> None:
        """Raise :class:`QuantConfigError` naming the field when a per-layer list does not have ``layers``
        entries (one per decoder layer of the model it is applied to)."""
        for name in ("layer_precision", "layer_kv_bits"):
            value = getattr(self, name)
            if value is not None and len(value) != layers:
                raise QuantConfigError(f"{name} has {len(value)} entries but the model has {layers} decoder layers "
                                       f"(one per layer)")


def _layer_kv_bits(value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise QuantConfigError(f"layer_kv_bits must be a sequence of bits per layer, got {value!r}")
    bits = tuple(value)
    if not bits:
        raise QuantConfigError("layer_kv_bits must not be empty")
    for i, b in enumerate(bits):
        if isinstance(b, bool) or b not in _KV_BITS:
            raise QuantConfigError(f"layer_kv_bits[{i}]={b!r} is not supported; choose one of {sorted(_KV_BITS)}")
    return bits


def _check_in(name: str, value: Any, allowed) -> None:
    if isinstance(value, bool) or value not in allowed:
        raise QuantConfigError(f"{name}={value!r} is not supported; choose one of {sorted(allowed, key=str)}")


BF16 = QuantConfig(w_bits=16, a_bits=16, kv_bits=16, rotate=False, online_hadamard=False, kv_hadamard=False)
"""The identity configuration: nothing quantized, nothing rotated."""
