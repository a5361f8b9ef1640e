"""Quantized-model cache: GPTQ and the clipping searches are the slow part of preparing a low-bit model
(minutes on a GPU, more when several processes share it). Their result depends only on the model, the
config, the calibration data, the device and the library versions, so it is computed once, stored as
safetensors (no pickle) plus a JSON header, and loaded by every later process with the same key.

An entry's header records the settings that produced it (:func:`cache_settings`: the config, dtype, device,
the versions of torch, transformers, triton and quota, and the caller's identity of model and calibration
data) and the sha256 of its tensor data. An entry is used only when both check out and every tensor,
clipping ratio and report field fits the model; anything else (a damaged file, an entry of other settings, a
header that does not fit) is recomputed, and the caller's model is not touched until the entry has proved
to fit, also with ``inplace=True``.

Concurrent processes asking for the same key (``torchrun`` ranks, parallel evaluations) serialize on a
lock file: the first computes and writes, the others wait and load, so every one of them runs the very
same quantized weights. The cache folder is ``$QUOTA_QUANT_CACHE`` (``off`` disables it), else
``~/.cache/quota/quantized``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import struct
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn as nn

from quota.atomic import atomic_path, first_difference, runtime_record, show_value, sweep_stale_temporaries
from quota.quant.config import QuantConfig
from quota.quantize.linear import QuantLinear
from quota.quantize.model import QuantReport, needs_calibration, quantize_model

CACHE_ENV = "QUOTA_QUANT_CACHE"
CACHE_FORMAT = 2  # 2: settings record and data checksum in the header
CHECKSUM_FIELD = "quota_data_sha256"
_PLACEHOLDER = "0" * 64


class CacheEntryError(ValueError):
    """A cache entry is unreadable, damaged, of other settings or does not fit the model (it is recomputed,
    never trusted)."""


def cache_dir(folder: str | os.PathLike | None = None) -> Path | None:
    """The cache folder: ``folder``, else ``$QUOTA_QUANT_CACHE``, else ``~/.cache/quota/quantized``;
    ``None`` when the cache is turned off (``off``, ``0`` or ``none``)."""
    value = str(folder) if folder is not None else os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("off", "0", "none", ""):
        return None
    return Path(value) if value is not None else Path.home() / ".cache" / "quota" / "quantized"


def cache_settings(config: QuantConfig, device: torch.device, dtype: torch.dtype, identity: dict[str, Any]) -> dict:
    """Everything a quantized model depends on: the entry format, the config, the dtype, the device name, the
    versions of torch, transformers, triton and quota (an entry outliving an upgrade would hide any change in
    GPTQ or the reference path; keying on them costs one recomputation per upgrade) and ``identity`` (what
    identifies the model's weights and its calibration data; JSON-serializable)."""
    env = runtime_record(torch.device(device))
    return {"format": CACHE_FORMAT, "config": config.to_dict(), "dtype": str(dtype), "device": env["device"],
            "versions": env["versions"], "identity": identity}


def cache_key(config: QuantConfig, device: torch.device, dtype: torch.dtype, identity: dict[str, Any]) -> str:
    """16 hex digits identifying a quantized model: the sha256 of :func:`cache_settings`."""
    data = cache_settings(config, device, dtype, identity)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (no-op where ``fcntl`` does not exist)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent processes may both compute; the atomic write keeps it sound
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _header_length(f) -> int:
    """Length of a safetensors file's JSON header (the 8 bytes before it, little-endian)."""
    raw = f.read(8)
    if len(raw) != 8:
        raise CacheEntryError("shorter than a safetensors header")
    return struct.unpack("<Q", raw)[0]


def data_checksum(path: str | os.PathLike) -> str:
    """sha256 of a safetensors file's tensor data (everything after its header)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(8 + _header_length(f))
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _stamp_checksum(path: Path) -> None:
    """Write the tensor data's sha256 into the header's placeholder (same length: no offset moves)."""
    digest = data_checksum(path)
    with open(path, "r+b") as f:
        n = _header_length(f)
        header = f.read(n)
        field = f'"{CHECKSUM_FIELD}":"{_PLACEHOLDER}"'.encode()
        at = header.find(field)
        if at < 0 or header.find(field, at + 1) >= 0:
            raise RuntimeError(f"{path}: the checksum placeholder is not in the header exactly once")
        f.seek(8 + at + len(field) - 65)
        f.write(digest.encode())


def save_quantized(model: nn.Module, path: str | os.PathLike, key: str, settings: dict | None = None) -> Path:
    """Write a quantized model's state atomically to ``path``: tensors in safetensors; clipping ratios, the
    report, the cache ``key``, the ``settings`` record and the tensor data's sha256 in its header."""
    from safetensors.torch import save_model

    report = getattr(model, "quota_report", None)
    header = {
        "quota_cache_key": key,
        "quota_settings": json.dumps(settings if settings is not None else {}, sort_keys=True),
        "act_clip": json.dumps({n: m.a_clip_ratio for n, m in model.named_modules() if isinstance(m, QuantLinear)}),
        "report": json.dumps(dataclasses.asdict(report) if report is not None else {}),
        CHECKSUM_FIELD: _PLACEHOLDER,
    }
    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata=header)
        _stamp_checksum(tmp)
    return Path(path)


def read_entry_header(path: str | os.PathLike, key: str, settings: dict | None = None) -> dict[str, str]:
    """The header of a verified entry: written for ``key`` (and, when given, exactly ``settings``), with tensor
    data whose sha256 is the one recorded. Raises :class:`CacheEntryError` naming what fails."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
    except Exception as exc:  # truncated file, foreign file, damaged header
        raise CacheEntryError(f"{path} is not a readable quantized-model entry ({exc})") from exc
    if header.get("quota_cache_key") != key:
        raise CacheEntryError(f"{path} holds quantized model {header.get('quota_cache_key')!r}, not {key!r}")
    if settings is not None:
        try:
            stored = json.loads(header.get("quota_settings", "null"))
        except json.JSONDecodeError as exc:
            raise CacheEntryError(f"{path}: unreadable settings record ({exc})") from exc
        diff = first_difference(stored, settings) if isinstance(stored, dict) else ("settings", None, "a record")
        if diff is not None:
            raise CacheEntryError(f"{path} was quantized with {diff[0]}={show_value(diff[1])}, this run has "
                                  f"{show_value(diff[2])}")
    recorded = header.get(CHECKSUM_FIELD)
    if not isinstance(recorded, str) or len(recorded) != 64:
        raise CacheEntryError(f"{path} records no checksum of its tensors")
    try:
        actual = data_checksum(path)
    except (OSError, CacheEntryError) as exc:
        raise CacheEntryError(f"{path}: cannot read its tensor data ({exc})") from exc
    if actual != recorded:
        raise CacheEntryError(f"{path}: tensor data sha256 {actual[:12]} is not the recorded {recorded[:12]} (damaged)")
    return header


def _parse_clips(header: dict[str, str], path) -> dict[str, float]:
    """The entry's activation clipping ratios ``{module name: ratio}``, each a finite number > 0."""
    try:
        clips = json.loads(header["act_clip"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CacheEntryError(f"{path}: unreadable act_clip field ({exc})") from exc
    if not isinstance(clips, dict):
        raise CacheEntryError(f"{path}: act_clip is not an object")
    for name, ratio in clips.items():
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
            raise CacheEntryError(f"{path}: act_clip.{name} = {ratio!r} is not a positive number")
    return {name: float(ratio) for name, ratio in clips.items()}


def _parse_report(header: dict[str, str], path) -> QuantReport:
    """The entry's :class:`QuantReport`, each field of the right type."""
    try:
        data = json.loads(header["report"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CacheEntryError(f"{path}: unreadable report field ({exc})") from exc
    fields = {f.name for f in dataclasses.fields(QuantReport)}
    if not isinstance(data, dict) or set(data) - fields or "config" not in data:
        raise CacheEntryError(f"{path}: report fields {sorted(data) if isinstance(data, dict) else data!r} are not "
                              f"those of a QuantReport {sorted(fields)}")
    act_clip = data.get("act_clip", {})
    if (not isinstance(data["config"], dict) or not isinstance(data.get("rotated", False), bool)
            or not isinstance(act_clip, dict)
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in act_clip.values())):
        raise CacheEntryError(f"{path}: a report field has the wrong type")
    return QuantReport(**data)


def load_quantized(model: nn.Module, config: QuantConfig, path: str | os.PathLike, key: str,
                   inplace: bool = False, settings: dict | None = None) -> nn.Module:
    """``model`` (full precision, as it was given to :func:`quantize_model`) with the quantized state of
    ``path`` loaded. The entry is verified first (:func:`read_entry_header`), then a copy of the model is
    given the quantized structure without calibration (round-to-nearest, no searches) and every tensor,
    clipping ratio and report field is replaced by the stored ones. Raises :class:`CacheEntryError` if any
    of that fails; the caller's model is then untouched. With ``inplace``, the caller's model object takes
    the loaded state once everything fits (the copy costs the model's memory once more while loading)."""
    from safetensors.torch import load_model

    header = read_entry_header(path, key, settings)
    clips, report = _parse_clips(header, path), _parse_report(header, path)
    skeleton = config.replace(weight_method="rtn", w_clip_search=False, a_clip_search=False)
    work = quantize_model(model, skeleton, None, inplace=False)  # a copy: nothing of the caller's is touched yet
    try:
        missing, unexpected = load_model(work, str(path), strict=False, device=str(next(work.parameters()).device))
    except Exception as exc:  # shapes or dtypes that do not fit, a file changed meanwhile
        raise CacheEntryError(f"{path} does not fit the model ({' '.join(str(exc).split())[:200]})") from exc
    if missing or unexpected:
        raise CacheEntryError(f"{path} does not fit the model: missing {sorted(missing)[:3]}, "
                              f"unexpected {sorted(unexpected)[:3]}")
    modules = dict(work.named_modules())
    for name in clips:
        if not isinstance(modules.get(name), QuantLinear):
            raise CacheEntryError(f"{path} has a clipping ratio for {name!r}, which is not a quantized linear here")
    for name, ratio in clips.items():
        modules[name].a_clip_ratio = ratio
    work.quota_report = report
    if not inplace:
        return work
    model.__dict__.clear()  # the caller's object becomes the loaded model (same class: work is its copy)
    model.__dict__.update(work.__dict__)
    return model


def quantize_cached(
    model: nn.Module, config: QuantConfig, calibration: Callable[[], Iterable[Any] | None], identity: dict[str, Any],
    folder: str | os.PathLike | None = None, inplace: bool = False,
) -> nn.Module:
    """:func:`~quota.quantize.model.quantize_model` through the cache. ``calibration()`` builds the
    calibration batches (called only on a miss); ``identity`` must identify the model's weights and the
    calibration data (a model hash, a data version, a question count). Configs that need no calibration
    (nothing slow to save) and a turned-off cache go straight to ``quantize_model``."""

    where = cache_dir(folder)
    if where is None or config.is_identity or not needs_calibration(config):
        return quantize_model(model, config, calibration() if needs_calibration(config) else None, inplace=inplace)
    param = next(model.parameters())
    settings = cache_settings(config, param.device, param.dtype, identity)
    key = cache_key(config, param.device, param.dtype, identity)
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only home, say: quantize without the cache rather than fail
        print(f"[quota] quantized-model cache {where} unusable ({exc}); quantizing without it", file=sys.stderr)
        return quantize_model(model, config, calibration(), inplace=inplace)
    sweep_stale_temporaries(where, all_targets=True)  # entries of killed writers (hundreds of MB each)
    path = where / f"{key}.safetensors"
    with _locked(where / f"{key}.lock"):
        if path.is_file():
            try:
                return load_quantized(model, config, path, key, inplace=inplace, settings=settings)
            except CacheEntryError as exc:  # damaged, of other settings or not fitting: recomputed, never trusted
                print(f"[quota] quantized-model cache entry {path.name} unusable ({exc}); recomputing",
                      file=sys.stderr)
        quantized = quantize_model(model, config, calibration(), inplace=inplace)
        save_quantized(quantized, path, key, settings)
        return quantized
