"""``quota_checkpoint.json``: the manifest of a saved quantized model, a versioned JSON file
(:mod:`quota.versioned`, type ``quota.checkpoint``, version 1).

Fields (all required):

- ``quota_version``, ``versions``: the quota that wrote it and the library versions (torch, transformers, triton);
- ``source``: the model it was quantized from: ``kind`` (``checkpoint`` or ``testbed``), ``model_id``,
  ``model_hash`` (:func:`quota.models.checkpoint.checkpoint_hash` of the folder, or the testbed's
  :func:`~quota.testbed.model.model_hash`) and ``model_class``;
- ``quant_config``: the :class:`~quota.quant.config.QuantConfig` (``to_dict``) it was quantized with;
- ``recipe``: the :class:`~quota.recipe.Recipe` (``to_dict``) to run it with, or ``null``;
- ``report``: ``model.quota_report`` (activation clipping ratios, rotation);
- ``architecture``: how to rebuild the quantized model from ``config.json`` (:mod:`quota.saved.architecture`):
  the model class, float dtype, the ordered module edits, KV quantizers, attention implementations, config
  overrides and the tensor layout (aliases, non-persistent buffers);
- ``shards``: the safetensors files with their sha256 and sizes, the index file and the split tensors
  (:mod:`quota.saved.shards`);
- ``files``: ``{name: sha256}`` of ``config.json`` and the processor files beside it.

Reading refuses another type, another version, a missing field or an unknown one, each in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quota.versioned import VersionError, read_json, stamp, unstamp

MANIFEST_NAME = "quota_checkpoint.json"
CHECKPOINT_TYPE = "quota.checkpoint"
CHECKPOINT_VERSION = 1
FIELDS = ("quota_version", "versions", "source", "quant_config", "recipe", "report", "architecture", "shards", "files")
SOURCE_FIELDS = ("kind", "model_id", "model_hash", "model_class")
SOURCE_KINDS = ("checkpoint", "testbed")


class SavedCheckpointError(ValueError):
    """A saved quantized checkpoint cannot be written or read; the message is one line naming the folder and
    what is wrong."""


def manifest_dict(body: dict[str, Any]) -> dict[str, Any]:
    """The manifest's JSON object: ``body`` (exactly :data:`FIELDS`) stamped with type and version."""
    if tuple(body) != FIELDS:
        raise ValueError(f"a manifest body has the fields {list(FIELDS)} in order, got {list(body)}")
    return stamp(CHECKPOINT_TYPE, CHECKPOINT_VERSION, body)


def check_source(source: Any, where: str) -> dict[str, str]:
    """``source`` when it has :data:`SOURCE_FIELDS`, each a string, and a known kind."""
    if not isinstance(source, dict) or set(source) != set(SOURCE_FIELDS):
        raise SavedCheckpointError(f"{where}: source must have the fields {list(SOURCE_FIELDS)}")
    if not all(isinstance(source[k], str) for k in SOURCE_FIELDS) or source["kind"] not in SOURCE_KINDS:
        raise SavedCheckpointError(f"{where}: source fields must be strings and kind one of {list(SOURCE_KINDS)}")
    return source


def parse_manifest(data: Any, where: str) -> dict[str, Any]:
    """The manifest's body (without type and version), its fields checked for presence and basic types."""
    try:
        _, body = unstamp(data, CHECKPOINT_TYPE, (CHECKPOINT_VERSION,), where)
    except VersionError as err:
        raise SavedCheckpointError(f"{err}: not a checkpoint this quota can load") from None
    missing = [f for f in FIELDS if f not in body]
    unknown = sorted(set(body) - set(FIELDS))
    if missing or unknown:
        raise SavedCheckpointError(f"{where}: missing field(s) {missing}, unknown field(s) {unknown}")
    check_source(body["source"], where)
    for name in ("versions", "quant_config", "report", "architecture", "shards", "files"):
        if not isinstance(body[name], dict):
            raise SavedCheckpointError(f"{where}: {name} must be an object")
    if body["recipe"] is not None and not isinstance(body["recipe"], dict):
        raise SavedCheckpointError(f"{where}: recipe must be an object or null")
    shards = body["shards"]
    if not (isinstance(shards.get("files"), list) and isinstance(shards.get("index"), dict)
            and isinstance(shards.get("split"), dict)):
        raise SavedCheckpointError(f"{where}: shards must hold files, index and split")
    return body


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The checked manifest body of the saved checkpoint ``folder``; :class:`SavedCheckpointError` for a folder
    that is not one, and for a manifest of another type or version."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SavedCheckpointError(f"{folder} is not a folder")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise SavedCheckpointError(f"{folder} is not a saved quota checkpoint (no {MANIFEST_NAME})")
    return parse_manifest(read_json(path, "manifest", SavedCheckpointError), str(path))
