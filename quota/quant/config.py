"""QuantConfig: one configuration shared by the simulated (reference) and the kernel paths."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from quota.versioned import VersionError, stamp, unstamp

CONFIG_TYPE = "quota.QuantConfig"
CONFIG_VERSION = 1

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_full_precision", tuple(self.keep_full_precision))
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
        return self.w_bits != FULL_PRECISION

    @property
    def quantizes_activations(self) -> bool:
        return self.a_bits != FULL_PRECISION

    @property
    def quantizes_kv(self) -> bool:
        return self.kv_bits != FULL_PRECISION

    @property
    def is_identity(self) -> bool:
        """True when nothing is quantized and nothing is rotated: applying it leaves the model unchanged."""
        return not (self.quantizes_weights or self.quantizes_activations or self.quantizes_kv or self.rotate)

    def short_name(self) -> str:
        """``W4A4-KV4`` style label."""
        parts = [f"W{self.w_bits}A{self.a_bits}" if self.quantizes_weights or self.quantizes_activations else "BF16"]
        if self.quantizes_kv:
            parts.append(f"KV{self.kv_bits}")
        return "-".join(parts)

    def replace(self, **changes: Any) -> "QuantConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["keep_full_precision"] = list(self.keep_full_precision)
        return stamp(CONFIG_TYPE, CONFIG_VERSION, d)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantConfig":
        """A config from :meth:`to_dict`'s form; a missing ``type`` is accepted (a config embedded in a recipe
        or a profile), another type, an unknown version or an unknown field is refused."""
        try:
            _, body = unstamp(data, CONFIG_TYPE, (CONFIG_VERSION,), "QuantConfig", default_type=True)
        except VersionError as err:
            raise QuantConfigError(str(err)) from None
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(body) - fields)
        if unknown:
            raise QuantConfigError(f"unknown QuantConfig field(s) {unknown}; known fields: {sorted(fields)}")
        if "keep_full_precision" in body:
            body["keep_full_precision"] = tuple(body["keep_full_precision"])
        return cls(**body)


def _check_in(name: str, value: Any, allowed) -> None:
    if isinstance(value, bool) or value not in allowed:
        raise QuantConfigError(f"{name}={value!r} is not supported; choose one of {sorted(allowed, key=str)}")


BF16 = QuantConfig(w_bits=16, a_bits=16, kv_bits=16, rotate=False, online_hadamard=False, kv_hadamard=False)
"""The identity configuration: nothing quantized, nothing rotated."""
