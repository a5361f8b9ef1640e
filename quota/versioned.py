"""One convention for quota's versioned JSON files: ``{"type": "quota.<kind>", "version": n, ...body}``.

Every file quota writes that a later quota must read (recipes, profiles, quantization configs) carries a
``type`` naming what it is and an integer ``version`` of its layout. Reading refuses another type and an
unknown version with a message that names both. Files written before this convention carried the same names
under ``schema``/``schema_version``; they are read as if they had used ``type``/``version``.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

TYPE_KEY, VERSION_KEY = "type", "version"
LEGACY_KEYS = ("schema", "schema_version")  # the keys of files written before this convention


class VersionError(ValueError):
    """A versioned file is of another type or of a version this quota does not read."""


def stamp(type_name: str, version: int, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its type and version first."""
    clash = sorted({TYPE_KEY, VERSION_KEY, *LEGACY_KEYS} & set(body))
    if clash:
        raise ValueError(f"a versioned body cannot hold the reserved key(s) {clash}")
    return {TYPE_KEY: type_name, VERSION_KEY: version, **body}


def unstamp(
    data: Any, type_name: str, versions: Collection[int], source: str, *, default_type: bool = False
) -> tuple[int, dict[str, Any]]:
    """``(version, body)`` of a versioned JSON object, ``body`` without its type and version keys.

    ``versions`` lists the versions this quota reads; ``source`` names the file in error messages.
    ``default_type``: a missing type is taken to be ``type_name`` (for objects embedded in another file).
    Raises :class:`VersionError` for another type or version, or a non-object."""
    if not isinstance(data, dict):
        raise VersionError(f"{source}: expected a JSON object, got {type(data).__name__}")
    legacy = TYPE_KEY not in data and LEGACY_KEYS[0] in data
    type_key, version_key = LEGACY_KEYS if legacy else (TYPE_KEY, VERSION_KEY)
    found = data.get(type_key, type_name if default_type else None)
    if found != type_name:
        raise VersionError(f"{source}: type is {found!r}, not {type_name!r}")
    version = data.get(version_key)
    if isinstance(version, bool) or version not in versions:
        raise VersionError(
            f"{source}: {type_name} version {version!r} is not supported (this quota reads version "
            f"{' or '.join(map(str, sorted(versions)))})"
        )
    body = {k: v for k, v in data.items() if k not in (type_key, version_key)}
    return int(version), body


def type_of(data: Any) -> str | None:
    """The type named by a versioned JSON object (either key convention), or ``None``."""
    if not isinstance(data, dict):
        return None
    return data.get(TYPE_KEY, data.get(LEGACY_KEYS[0]))


def read_json(path: str | Path, what: str, error: type[ValueError] = ValueError) -> Any:
    """The JSON document at ``path``: :class:`FileNotFoundError` naming ``what`` (``"recipe"``) when there is no
    file, ``error`` when the text is not JSON (a truncated or corrupt file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON (truncated or corrupt?): {err}") from None
