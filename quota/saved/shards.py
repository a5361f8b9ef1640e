"""Tensors as safetensors shards of bounded size, each file's sha256 recorded, read back only when it matches.

Writing (:func:`write_shards`): tensors go into files ``model-00001-of-0000N.safetensors`` in the given order,
a file closed when the next tensor would take it over ``max_bytes`` (header included). A tensor larger than a
file on its own is stored flattened in parts named ``<name>.__part<i>__``, each in its own file, and recorded in
the layout's ``split`` entry with its shape. ``model.safetensors.index.json`` maps every stored key to its file.

Reading (:func:`read_shards`): each file is read once, its bytes hashed and compared with the recorded sha256
before safetensors parses them, so what is loaded is what was checked. A missing file, a sha256 mismatch or a
file whose keys are not those of the index is a :class:`ShardError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch

SHARD_NAME = "model-{:05d}-of-{:05d}.safetensors"
INDEX_NAME = "model.safetensors.index.json"
MAX_SHARD_BYTES = 16 * 2**20 - 2**16
"""Default file size limit: 64 KiB under 16 MiB, so every file is under 16 MiB whatever the file system rounds."""
MIN_SHARD_BYTES = 4096
_FIXED_OVERHEAD = 8 + 64  # the length prefix, the metadata entry and the header's padding
PART_KEY = "{}.__part{}__"


class ShardError(ValueError):
    """A shard file is missing, damaged or does not hold what the index says."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _entry_bytes(key: str, tensor: torch.Tensor) -> int:
    """An upper bound of what one tensor adds to a file: its data and its header entry."""
    return tensor.numel() * tensor.element_size() + len(key.encode()) + 128 + 12 * tensor.dim()


def _split(name: str, tensor: torch.Tensor, max_bytes: int) -> list[tuple[str, torch.Tensor]]:
    """``tensor`` flattened into parts that each fit a file of ``max_bytes`` alone."""
    room = max_bytes - _FIXED_OVERHEAD - len(PART_KEY.format(name, 10**6).encode()) - 160
    per_part = max(room // tensor.element_size(), 1)
    flat = tensor.reshape(-1)  # [numel]
    count = math.ceil(flat.numel() / per_part)
    return [(PART_KEY.format(name, i), flat[i * per_part:(i + 1) * per_part].clone()) for i in range(count)]


def plan_shards(tensors: dict[str, torch.Tensor], max_bytes: int
                ) -> tuple[list[dict[str, torch.Tensor]], dict[str, dict[str, Any]]]:
    """``(shards, split)``: the tensors grouped into files of at most ``max_bytes``, in order; ``split`` records
    ``{name: {"shape": [...], "parts": [keys]}}`` for each tensor stored in parts."""
    if max_bytes < MIN_SHARD_BYTES:
        raise ValueError(f"max_shard_bytes must be at least {MIN_SHARD_BYTES}, got {max_bytes}")
    shards: list[dict[str, torch.Tensor]] = [{}]
    split: dict[str, dict[str, Any]] = {}
    size = _FIXED_OVERHEAD
    for name, tensor in tensors.items():
        if _FIXED_OVERHEAD + _entry_bytes(name, tensor) > max_bytes:
            parts = _split(name, tensor, max_bytes)
            split[name] = {"shape": list(tensor.shape), "parts": [key for key, _ in parts]}
            for key, part in parts:  # each part alone in a file
                if shards[-1]:
                    shards.append({})
                shards[-1][key] = part
            shards.append({})
            size = _FIXED_OVERHEAD
            continue
        entry = _entry_bytes(name, tensor)
        if shards[-1] and size + entry > max_bytes:
            shards.append({})
            size = _FIXED_OVERHEAD
        shards[-1][name] = tensor
        size += entry
    return [s for s in shards if s], split


def write_shards(tensors: dict[str, torch.Tensor], folder: Path, max_bytes: int = MAX_SHARD_BYTES
                 ) -> dict[str, Any]:
    """Write ``tensors`` (CPU, contiguous) into ``folder`` as shards and their index; returns the layout record
    ``{"index": {"file", "sha256"}, "files": [{"file", "sha256", "bytes"}], "split": {...}}``."""
    from safetensors.torch import save

    shards, split = plan_shards(tensors, max_bytes)
    files, weight_map, total = [], {}, 0
    for i, shard in enumerate(shards):
        name = SHARD_NAME.format(i + 1, len(shards))
        data = save(shard, metadata={"format": "pt"})
        if len(data) > max_bytes:
            raise RuntimeError(f"shard {name} came out at {len(data)} bytes, over the limit {max_bytes}")
        (folder / name).write_bytes(data)
        files.append({"file": name, "sha256": sha256_bytes(data), "bytes": len(data)})
        weight_map.update({key: name for key in shard})
        total += sum(t.numel() * t.element_size() for t in shard.values())
    index = json.dumps({"metadata": {"total_size": total, "format": "quota"}, "weight_map": weight_map}, indent=2)
    (folder / INDEX_NAME).write_text(index + "\n")
    return {"index": {"file": INDEX_NAME, "sha256": sha256_file(folder / INDEX_NAME)}, "files": files, "split": split}


def _read_checked(path: Path, sha256: str, what: str) -> bytes:
    if not path.is_file():
        raise ShardError(f"{path.parent}: {what} {path.name} is missing")
    data = path.read_bytes()
    actual = sha256_bytes(data)
    if actual != sha256:
        raise ShardError(f"{path.parent}: {what} {path.name} is corrupted (sha256 {actual[:12]} is not the recorded "
                         f"{sha256[:12]})")
    return data


def read_shards(folder: Path, layout: dict[str, Any], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of :func:`write_shards`' layout record, on ``device``, split tensors joined again."""
    from safetensors.torch import load

    index = json.loads(_read_checked(folder / layout["index"]["file"], layout["index"]["sha256"], "index"))
    weight_map: dict[str, str] = index["weight_map"]
    tensors: dict[str, torch.Tensor] = {}
    for entry in layout["files"]:
        loaded = load(_read_checked(folder / entry["file"], entry["sha256"], "shard"))
        expected = {k for k, f in weight_map.items() if f == entry["file"]}
        if set(loaded) != expected:
            raise ShardError(f"{folder}: shard {entry['file']} holds other tensors than the index lists")
        tensors.update({k: v.to(device) for k, v in loaded.items()})
    if set(tensors) != set(weight_map):
        missing = sorted(set(weight_map) - set(tensors))[:3]
        raise ShardError(f"{folder}: the index lists tensors in no recorded shard: {missing}")
    for name, info in layout["split"].items():
        try:
            parts = [tensors.pop(key) for key in info["parts"]]
        except KeyError as err:
            raise ShardError(f"{folder}: part {err} of the split tensor {name} is not stored") from None
        tensors[name] = torch.cat(parts).view(info["shape"])  # [numel] -> the recorded shape
    return tensors
