"""Quantized-model cache: GPTQ and the clipping searches are the slow part of preparing a low-bit model
(minutes on a GPU, more when several processes share it). Their result depends only on the model, the
config, the calibration data, the device and the library versions, so it is computed once, stored as
safetensors (no pickle) plus a JSON header, and loaded by every later process with the same key.

Concurrent processes asking for the same key (``torchrun`` ranks, parallel evaluations) serialize on a
lock file: the first computes and writes, the others wait and load, so every one of them runs the very
same quantized weights. The cache folder is ``$QUOTA_QUANT_CACHE`` (``off`` disables it), else
``~/.cache/quota/quantized``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn as nn

from quota.quant.config import QuantConfig
from quota.quantize.linear import QuantLinear
from quota.quantize.model import QuantReport, needs_calibration, quantize_model

CACHE_ENV = "QUOTA_QUANT_CACHE"
CACHE_FORMAT = 1


class CacheEntryError(ValueError):
    """A cache entry is unreadable or belongs to another key (it is recomputed, never trusted)."""


def cache_dir(folder: str | os.PathLike | None = None) -> Path | None:
    """The cache folder: ``folder``, else ``$QUOTA_QUANT_CACHE``, else ``~/.cache/quota/quantized``;
    ``None`` when the cache is turned off (``off``, ``0`` or ``none``)."""
    value = str(folder) if folder is not None else os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("off", "0", "none", ""):
        return None
    return Path(value) if value is not None else Path.home() / ".cache" / "quota" / "quantized"


def cache_key(config: QuantConfig, device: torch.device, dtype: torch.dtype, identity: dict[str, Any]) -> str:
    """16 hex digits identifying a quantized model: the config, the device kind, the dtype, the library
    versions and ``identity`` (what identifies the model and its calibration data; JSON-serializable)."""
    import triton  # the kernels' version changes nothing in GPTQ, but a cache entry outliving an upgrade
    # would hide any change in the reference path too; keying on it costs one recomputation per upgrade

    device = torch.device(device)
    data = {
        "format": CACHE_FORMAT, "config": config.to_dict(), "dtype": str(dtype),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "triton": triton.__version__, "identity": identity,
    }
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


def save_quantized(model: nn.Module, path: str | os.PathLike, key: str) -> Path:
    """Write a quantized model's state (tensors in safetensors; clipping ratios and the report in its
    header) atomically to ``path``."""
    from safetensors.torch import save_model


    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = getattr(model, "quota_report", None)
    header = {
        "quota_cache_key": key,
        "act_clip": json.dumps({n: m.a_clip_ratio for n, m in model.named_modules() if isinstance(m, QuantLinear)}),
        "report": json.dumps(vars(report) if report is not None else {}),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_model(model, str(tmp), metadata=header)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_quantized(model: nn.Module, config: QuantConfig, path: str | os.PathLike, key: str,
                   inplace: bool = False) -> nn.Module:
    """``model`` (full precision, as it was given to :func:`quantize_model`) with the quantized state of
    ``path`` loaded. The structure is rebuilt without calibration (round-to-nearest, no searches), then every
    tensor and clipping ratio is replaced by the stored ones. Raises :class:`CacheEntryError` (before
    touching the model) if ``path`` is unreadable or was written for another key, ``ValueError`` if its
    tensors do not fit the model."""
    from safetensors import safe_open
    from safetensors.torch import load_model


    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        clips = json.loads(header["act_clip"])
        report = json.loads(header["report"])
    except Exception as exc:  # truncated file, foreign file, damaged header
        raise CacheEntryError(f"{path} is not a readable quantized-model entry ({exc})") from exc
    if header.get("quota_cache_key") != key:
        raise CacheEntryError(f"{path} holds quantized model {header.get('quota_cache_key')!r}, not {key!r}")
    skeleton = config.replace(weight_method="rtn", w_clip_search=False, a_clip_search=False)
    model = quantize_model(model, skeleton, None, inplace=inplace)
    missing, unexpected = load_model(model, str(path), strict=False, device=str(next(model.parameters()).device))
    if missing or unexpected:
        raise ValueError(f"{path} does not fit the model: missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}")
    modules = dict(model.named_modules())
    for name, ratio in clips.items():
        if not isinstance(modules.get(name), QuantLinear):
            raise ValueError(f"{path} has a clipping ratio for {name!r}, which is not a quantized linear here")
        modules[name].a_clip_ratio = ratio
    model.quota_report = QuantReport(**report)
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
    key = cache_key(config, param.device, param.dtype, identity)
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only home, say: quantize without the cache rather than fail
        print(f"[quota] quantized-model cache {where} unusable ({exc}); quantizing without it", file=sys.stderr)
        return quantize_model(model, config, calibration(), inplace=inplace)
    path = where / f"{key}.safetensors"
    with _locked(where / f"{key}.lock"):
        if path.is_file():
            try:
                return load_quantized(model, config, path, key, inplace=inplace)
            except CacheEntryError as exc:  # a damaged entry is recomputed, never trusted
                print(f"[quota] quantized-model cache entry {path} unusable ({exc}); recomputing", file=sys.stderr)
        quantized = quantize_model(model, config, calibration(), inplace=inplace)
        save_quantized(quantized, path, key)
        return quantized
