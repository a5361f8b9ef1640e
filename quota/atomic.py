"""Atomic file writes, and the settings record that lets a resumed run trust what an earlier run wrote.

Writes go to a temporary file ``.<name>.<8 random chars>.tmp`` in the target's folder, are flushed to disk,
then renamed over the target, so a reader never sees a half-written file and an interrupted run leaves the
old file intact. The new file gets the mode a plain ``open(path, "w")`` would give it: the existing file's
mode when it is replaced, else ``0o666`` less the umask. The temporary file is removed on every error this
module sees; one left behind by a killed process (after an hour without change) is removed by the next
write to the same target.

Resumable outputs (profile partial files, suite rows, quantized-model cache entries) store the settings
that produced them; :func:`first_difference` and :class:`ResumeMismatchError` turn a mismatch into one line
that names the field.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

STALE_TEMP_AGE_S = 3600.0
"""A temporary file of this module's naming that has not changed for this long belongs to a dead writer."""

_TEMP_CHARS = "[a-z0-9_]{8}"  # what tempfile.mkstemp puts between prefix and suffix


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only for an instant)
    os.umask(mask)
    return mask


def target_mode(path: str | os.PathLike) -> int:
    """Permission bits a plain ``open(path, "w")`` would leave: the existing file's, else ``0o666 & ~umask``."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def temp_name_pattern(target_name: str | None = None) -> re.Pattern[str]:
    """The names of this module's temporary files for a target named ``target_name`` (any target: ``None``)."""
    name = re.escape(target_name) if target_name is not None else ".+"
    return re.compile(rf"\.{name}\.{_TEMP_CHARS}\.tmp")


def sweep_stale_temporaries(path: str | os.PathLike, max_age_s: float = STALE_TEMP_AGE_S,
                            all_targets: bool = False) -> list[Path]:
    """Remove the temporary files of earlier writes to ``path`` (this module's naming only) that have not
    changed for ``max_age_s`` seconds; returns those removed. With ``all_targets``, ``path`` is a folder and
    the stale temporaries of every target in it go (for a folder this module alone writes, such as a cache).
    Files of other names are never touched."""
    path = Path(path)
    folder, pattern = (path, temp_name_pattern()) if all_targets else (path.parent, temp_name_pattern(path.name))
    removed = []
    try:
        candidates = [p for p in folder.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return removed
    now = time.time()
    for tmp in candidates:
        try:
            if now - tmp.stat().st_mtime >= max_age_s and tmp.is_file():
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue  # removed meanwhile by another process, or not ours to remove
    return removed


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every platform opens folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write the whole output to; on a normal exit it is synced,
    given the target's mode (:func:`target_mode`) and renamed over ``path``; on an exception it is removed
    and ``path`` is left as it was. Stale temporaries of ``path`` are swept first. The temporary name ends
    in ``.tmp``: a writer that guesses the format from the suffix (``savefig``) must be told the format.

        with atomic_path("weights.safetensors") as tmp:
            save_file(tensors, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(path)
    mode = target_mode(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_files(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


@contextlib.contextmanager
def folder_atomic(out: str | os.PathLike, check: Any = None) -> Iterator[Path]:
    """A temporary folder next to ``out`` (``.<name>.<random>.tmp``, made as a plain ``mkdir`` of ``out`` would be)
    to write a whole output folder into; on a normal exit its files are synced and it is renamed to ``out``. On an
    error or an interrupt it is removed and ``out`` is left as it was. An existing ``out`` is moved aside and removed
    only after the new folder is in place (and put back if the rename fails). ``check(out)``, when given, runs
    again just before the rename (the target may have appeared meanwhile) and may raise to refuse it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    old = None
    try:
        yield tmp
        _fsync_files(tmp)
        if check is not None:
            check(out)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists() and (old / out.name).exists():
            os.replace(old / out.name, out)  # put the previous folder back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"write_bytes_atomic needs bytes, got {type(data).__name__}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    if not isinstance(text, str):
        raise TypeError(f"write_text_atomic needs a str, got {type(text).__name__}")
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON (and a final newline) to ``path`` atomically; returns ``path``.
    Serialization happens before any file is created, so unserializable data leaves nothing behind."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def savefig_atomic(figure, path: str | os.PathLike, **kwargs: Any) -> Path:
    """``figure.savefig(path, **kwargs)`` (a matplotlib figure) written atomically. The format comes from
    ``kwargs["format"]``, else from ``path``'s suffix (``.png``, ``.svg``, ``.pdf``)."""
    path = Path(path)
    fmt = kwargs.pop("format", None) or path.suffix.lstrip(".").lower() or None
    if fmt is None:
        raise ValueError(f"{path}: give format= or a file suffix (.png, .svg, .pdf) for the figure")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=fmt, **kwargs)
    return path


# ----------------------------------------------------------------------------- settings of resumable outputs


class ResumeMismatchError(ValueError):
    """Stored results were produced under other settings than this run's. ``field`` is the dotted path of
    the first setting that differs; the message is one line and says how to discard the old results."""

    def __init__(self, message: str, field: str | None = None, stored: Any = None, wanted: Any = None) -> None:
        super().__init__(message)
        self.field, self.stored, self.wanted = field, stored, wanted


_MISSING = object()


def first_difference(stored: Any, wanted: Any, prefix: str = "", only_wanted_keys: bool = False
                     ) -> tuple[str, Any, Any] | None:
    """The first ``(dotted field, stored value, wanted value)`` at which two settings records differ, or
    ``None`` when they are equal. Dicts are compared key by key (in ``wanted``'s order, then the keys only
    ``stored`` has); any other values as wholes. A field one record lacks is reported with the value
    :data:`MISSING_TEXT`. With ``only_wanted_keys``, keys that only ``stored`` has are ignored at the top
    level (for an early check made before every field of the run is known)."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        keys = list(wanted) + ([] if only_wanted_keys else [k for k in stored if k not in wanted])
        for key in keys:
            a, b = stored.get(key, _MISSING), wanted.get(key, _MISSING)
            name = f"{prefix}.{key}" if prefix else str(key)
            if a is _MISSING or b is _MISSING:
                return (name, MISSING_TEXT if a is _MISSING else a, MISSING_TEXT if b is _MISSING else b)
            diff = first_difference(a, b, name)
            if diff is not None:
                return diff
        return None
    return None if _same(stored, wanted) else (prefix or "settings", stored, wanted)


MISSING_TEXT = "(not recorded)"


def _same(a: Any, b: Any) -> bool:
    """Equality of the JSON texts: a tuple equals the list it is written as; 1 and 1.0, or True and 1, differ."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def show_value(value: Any, width: int = 60) -> str:
    """A setting's value for a one-line message: strings bare (hashes to 12 digits), the rest as compact JSON,
    long ones cut."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str, separators=(", ", ": "))
    text = " ".join(text.split())
    if re.fullmatch(r"[0-9a-f]{32,}", text):
        return text[:12]
    return text if len(text) <= width else text[: width - 3] + "..."


def mismatch_error(what: str, where: str, diff: tuple[str, Any, Any], option: str = "--resume=recompute",
                   verb: str = "discard them") -> ResumeMismatchError:
    """The one-line refusal: ``cannot resume: <what> were measured with F=A, this run has B (rerun with
    <option> to <verb>)``; ``where`` (a file or folder) is named when given."""
    field, stored, wanted = diff
    place = f" in {where}" if where else ""
    if stored == MISSING_TEXT:
        said = f"{what}{place} do not record {field}"
    else:
        said = f"{what}{place} were measured with {field}={show_value(stored)}"
    has = f"no {field}" if wanted == MISSING_TEXT else show_value(wanted)
    return ResumeMismatchError(f"cannot resume: {said}, this run has {has} (rerun with {option} to {verb})",
                               field, stored, wanted)


def unrecorded_error(what: str, where: str, option: str = "--resume=recompute", verb: str = "discard them"
                     ) -> ResumeMismatchError:
    """The one-line refusal for stored results that record no settings (written before they were recorded)."""
    return ResumeMismatchError(f"cannot resume: {what} in {where} record no settings (written by an earlier quota); "
                               f"rerun with {option} to {verb}", "settings", None, None)


RESUME_MODES = ("strict", "recompute")
"""``strict``: reuse stored results only when their settings equal this run's, refuse otherwise;
``recompute``: reuse those that match and recompute (overwrite) the others."""


def resume_mode(resume: bool | str | None) -> str | None:
    """``None`` (start afresh), ``"strict"`` or ``"recompute"`` from ``resume`` as the APIs take it:
    ``False``/``None``, ``True`` (= strict) or one of :data:`RESUME_MODES`."""
    if resume is None or resume is False:
        return None
    if resume is True:
        return "strict"
    if isinstance(resume, str) and resume in RESUME_MODES:
        return resume
    raise ValueError(f"resume must be True, False or one of {', '.join(RESUME_MODES)}, got {resume!r}")


def runtime_record(device: Any = None) -> dict[str, Any]:
    """The library versions (torch, transformers, triton, quota) and the device name a result depends on.
    ``device``: a torch device (or its string); the CUDA device's name, else ``cpu``. Imports torch."""
    import torch

    package = sys.modules[__name__.rpartition(".")[0]]  # quota itself: imported before any of its modules
    versions = {"torch": torch.__version__, "transformers": _version_of("transformers"),
                "triton": _version_of("triton"), "quota": package.__version__}
    return {"versions": versions, "device": device_name(device)}


def device_name(device: Any = None) -> str:
    """``torch.cuda.get_device_name`` for a CUDA device, ``cpu`` otherwise."""
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def _version_of(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
