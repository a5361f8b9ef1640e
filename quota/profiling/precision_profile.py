"""PrecisionProfile: a token profile plus, per decoder layer and precision option, the damage and the cost, as JSON.

Layout (type ``quota.precision_profile``, version 1)::

    {"type": "quota.precision_profile", "version": 1,
     "profile": {... a quota.profiling Profile ...},     # token curves measured under the deployed (lowest) option
     "precisions": [P option names], "reference": "bf16", "kv_bits": [P KV bits, one per option],
     "precision_damage": [[L x P]],                     # KL of lowering layer l alone from the reference to p
     "token_damage": {option: [[L x G]]},               # token curves measured under these options (uniformly)
     "latency": {"prefill": [[P x G]], "decode": [[P x G]], "method": "...", "device": "..."},  # s per layer
     "layer_weights": W,                                # weight elements of one decoder layer's linears
     "kv_bytes_per_token": [P],                         # bytes of K and V of one token in one layer, per option
     "text_tokens": T, "additivity": {...}, "timing": {...}, "extra": {...}}

``precision_damage[l, ref]`` is 0 (the reference against itself). ``token_damage`` holds the curves that were
measured (at least one option); :func:`quota.profiling.precision.token_curves` gives every option's curve,
measured or interpolated. ``latency.prefill[p, g]`` is the seconds of one decoder layer at option ``p`` over
``text_tokens + grid[g]`` tokens; ``latency.decode[p, g]`` the seconds of one decode step of one layer with a KV
cache of that many tokens. Both are non-decreasing in the keep count. ``method`` says how they were timed
(``cuda_events`` on a GPU; ``cpu_perf_counter`` on a CPU, a CPU figure, not a GPU prediction).

Loading validates every field and names the field and value that are wrong; an unknown version is refused.
The embedded ``profile`` keeps its own type and version, so a plain profile of any version can be embedded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from quota.atomic import write_json_atomic
from quota.profiling.profile import Profile, ProfileError
from quota.quant.precision import PRECISIONS, PrecisionError, validate_layer_precision
from quota.versioned import VersionError, read_json, stamp, type_of, unstamp

PRECISION_PROFILE_TYPE = "quota.precision_profile"
PRECISION_PROFILE_VERSION = 1
READ_VERSIONS = (1,)
LATENCY_METHODS = ("cuda_events", "cpu_perf_counter", "synthetic")
KV_BITS = (4, 8, 16)


class PrecisionProfileError(ValueError):
    """A precision profile is malformed; the message names the field and the offending value."""


def default_kv_bits(name: str, base_kv_bits: int = 4) -> int:
    """The KV bits a layer of option ``name`` gets by default: ``base_kv_bits`` (the profiled config's, 4 by
    default) for ``w4a4``, 8 for the other quantized options, 16 for ``bf16``."""
    p = PRECISIONS[name]
    if not p.quantized:
        return 16
    return base_kv_bits if p.act_bits == 4 else 8


@dataclass(frozen=True, eq=False)
class PrecisionProfile:
    """A token :class:`Profile` with the per-layer precision table, measured token curves and per-option
    latencies of the same model on one device (see the module docstring for the fields). Validated on
    construction; arrays are stored as float64."""

    profile: Profile
    precisions: tuple[str, ...]
    precision_damage: np.ndarray  # [L, P]
    token_damage: dict[str, np.ndarray]  # option -> [L, G]
    latency: dict[str, Any]  # prefill [P, G], decode [P, G], method, device
    layer_weights: float
    kv_bytes_per_token: np.ndarray  # [P]
    kv_bits: tuple[int, ...]
    reference: str = "bf16"
    text_tokens: float = 0.0
    additivity: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    # ---- sizes
    @property
    def n_layers(self) -> int:
        return self.profile.n_layers

    @property
    def grid(self) -> tuple[int, ...]:
        return self.profile.grid

    @property
    def n_visual_tokens(self) -> int:
        return self.profile.n_visual_tokens

    @property
    def device(self) -> str:
        return str(self.latency.get("device", "")) or self.profile.device

    def index(self, name: str) -> int:
        """Position of option ``name`` in :attr:`precisions`; ``PrecisionProfileError`` when it was not profiled."""
        if name not in self.precisions:
            raise PrecisionProfileError(f"precision {name!r} was not profiled (profiled: {', '.join(self.precisions)})")
        return self.precisions.index(name)

    # ---- files
    def to_dict(self) -> dict[str, Any]:
        body = {
            "profile": self.profile.to_dict(), "precisions": list(self.precisions), "reference": self.reference,
            "kv_bits": list(self.kv_bits), "precision_damage": self.precision_damage.tolist(),
            "token_damage": {k: v.tolist() for k, v in self.token_damage.items()},
            "latency": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.latency.items()},
            "layer_weights": self.layer_weights, "kv_bytes_per_token": self.kv_bytes_per_token.tolist(),
            "text_tokens": self.text_tokens, "additivity": self.additivity, "timing": self.timing, "extra": self.extra,
        }
        return stamp(PRECISION_PROFILE_TYPE, PRECISION_PROFILE_VERSION, body)

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str = "precision profile") -> "PrecisionProfile":
        try:
            return _from_dict(cls, data)
        except (PrecisionProfileError, ProfileError) as err:
            raise PrecisionProfileError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: str | Path) -> "PrecisionProfile":
        return cls.from_dict(read_json(path, "precision profile", PrecisionProfileError), str(path))


FIELDS = ("profile", "precisions", "reference", "kv_bits", "precision_damage", "token_damage", "latency",
          "layer_weights", "kv_bytes_per_token", "text_tokens", "additivity", "timing", "extra")
REQUIRED = ("profile", "precisions", "precision_damage", "token_damage", "latency", "layer_weights",
            "kv_bytes_per_token", "kv_bits")


def _from_dict(cls, data: Any) -> PrecisionProfile:
    try:
        _, body = unstamp(data, PRECISION_PROFILE_TYPE, READ_VERSIONS, "precision profile")
    except VersionError as err:
        raise PrecisionProfileError(str(err).removeprefix("precision profile: ")) from None
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise PrecisionProfileError(f"unknown field(s) {unknown}; known fields: {sorted(FIELDS)}")
    missing = [k for k in REQUIRED if k not in body]
    if missing:
        raise PrecisionProfileError(f"missing field(s) {missing}")
    try:
        profile = Profile.from_dict(body["profile"], "profile")
    except ProfileError as err:
        raise PrecisionProfileError(str(err)) from None
    kw = {k: body[k] for k in FIELDS if k in body and k != "profile"}
    kw["precisions"] = tuple(kw["precisions"]) if isinstance(kw["precisions"], list) else kw["precisions"]
    kw["kv_bits"] = tuple(kw["kv_bits"]) if isinstance(kw["kv_bits"], list) else kw["kv_bits"]
    return cls(profile=profile, **kw)


def _array(name: str, value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PrecisionProfileError(f"{name} is not a numeric array") from None
    if arr.shape != shape:
        raise PrecisionProfileError(f"{name} has shape {list(arr.shape)}, expected {list(shape)} ({what})")
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        where = tuple(int(i) for i in bad[0])
        raise PrecisionProfileError(f"{name}{list(where)} is {arr[where]} (NaN or infinite)")
    return arr


def _validate(p: PrecisionProfile) -> None:
    if not isinstance(p.profile, Profile):
        raise PrecisionProfileError(f"profile must be a Profile, got {type(p.profile).__name__}")
    try:
        names = validate_layer_precision(p.precisions)
    except PrecisionError as err:
        raise PrecisionProfileError(f"precisions: {str(err).replace('layer ', 'entry ')}") from None
    if len(set(names)) != len(names):
        raise PrecisionProfileError(f"precisions must be distinct, got {list(names)}")
    object.__setattr__(p, "precisions", names)
    if p.reference not in names:
        raise PrecisionProfileError(f"reference {p.reference!r} is not among the precisions {list(names)}")
    n_l, n_p, n_g = p.profile.n_layers, len(names), len(p.profile.grid)
    if not isinstance(p.kv_bits, (tuple, list)) or len(p.kv_bits) != n_p or any(b not in KV_BITS for b in p.kv_bits):
        raise PrecisionProfileError(f"kv_bits must give one of {list(KV_BITS)} per precision ({n_p}), got {p.kv_bits!r}")
    object.__setattr__(p, "kv_bits", tuple(int(b) for b in p.kv_bits))
    pd = _array("precision_damage", p.precision_damage, (n_l, n_p), "layers x precisions")
    object.__setattr__(p, "precision_damage", pd)
    if not isinstance(p.token_damage, Mapping) or not p.token_damage:
        raise PrecisionProfileError("token_damage must map at least one profiled precision to its [L x G] curves")
    curves = {}
    for name, value in p.token_damage.items():
        if name not in names:
            raise PrecisionProfileError(f"token_damage.{name}: not among the precisions {list(names)}")
        curves[name] = _array(f"token_damage.{name}", value, (n_l, n_g), "layers x grid")
    object.__setattr__(p, "token_damage", curves)
    object.__setattr__(p, "latency", _latency(p.latency, n_p, n_g))
    if isinstance(p.layer_weights, bool) or not isinstance(p.layer_weights, (int, float)) or not p.layer_weights > 0:
        raise PrecisionProfileError(f"layer_weights must be a positive number of weight elements, got {p.layer_weights!r}")
    kvb = _array("kv_bytes_per_token", p.kv_bytes_per_token, (n_p,), "one per precision")
    if (kvb <= 0).any():
        raise PrecisionProfileError(f"kv_bytes_per_token must be positive, got {kvb.tolist()}")
    object.__setattr__(p, "kv_bytes_per_token", kvb)
    if isinstance(p.text_tokens, bool) or not isinstance(p.text_tokens, (int, float)) or p.text_tokens < 0:
        raise PrecisionProfileError(f"text_tokens must be a number >= 0, got {p.text_tokens!r}")
    for name in ("additivity", "timing", "extra"):
        if not isinstance(getattr(p, name), dict):
            raise PrecisionProfileError(f"{name} must be an object, got {getattr(p, name)!r}")


def _latency(value: Any, n_p: int, n_g: int) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise PrecisionProfileError(f"latency must be an object with prefill, decode, method and device, got {value!r}")
    unknown = sorted(set(value) - {"prefill", "decode", "method", "device", "decode_context"})
    if unknown:
        raise PrecisionProfileError(f"latency: unknown field(s) {unknown}")
    out = dict(value)
    for phase in ("prefill", "decode"):
        if phase not in value:
            raise PrecisionProfileError(f"latency.{phase} is missing")
        arr = _array(f"latency.{phase}", value[phase], (n_p, n_g), "precisions x grid, seconds per layer")
        if (arr <= 0).any():
            where = tuple(int(i) for i in np.argwhere(arr <= 0)[0])
            raise PrecisionProfileError(f"latency.{phase}{list(where)} = {arr[where]} must be positive seconds")
        drops = np.argwhere(np.diff(arr, axis=1) < -1e-12 * np.maximum(1.0, np.abs(arr[:, 1:])))
        if len(drops):
            p, g = (int(i) for i in drops[0])
            raise PrecisionProfileError(f"latency.{phase} is not non-decreasing in the keep count for precision "
                                        f"{p}: {arr[p, g]} then {arr[p, g + 1]}")
        out[phase] = arr
    if out.get("method") not in LATENCY_METHODS:
        raise PrecisionProfileError(f"latency.method must be one of {list(LATENCY_METHODS)}, got {out.get('method')!r}")
    return out


def is_precision_profile(data: Any) -> bool:
    """True when a JSON object names itself a quota precision profile."""
    return type_of(data) == PRECISION_PROFILE_TYPE


def load_any(path: str | Path) -> Profile | PrecisionProfile:
    """A :class:`PrecisionProfile` or a plain :class:`Profile`, whichever the file at ``path`` is."""
    data = read_json(path, "profile", ProfileError)
    if is_precision_profile(data):
        return PrecisionProfile.from_dict(data, str(path))
    return Profile.from_dict(data, str(path))
