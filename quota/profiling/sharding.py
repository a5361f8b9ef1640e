"""The (layer, keep) grid of a profile is embarrassingly parallel: shard it over ``torch.distributed``
ranks (``torchrun``; NCCL with one GPU per rank, gloo on CPUs or when ranks share GPUs), each rank
checkpointing what it finished so an interrupted run resumes, and gather everything on rank 0.

Checkpoint files: ``<stem>.rank<r>of<w>.partial.json``, a JSON object ``{key: value}`` rewritten
atomically after each finished item. A resumed run loads every partial file of the same stem (any
world size), so no finished item is computed twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import torch.distributed as dist

from quota.atomic import write_json_atomic


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is not initialized."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(backend: str | None = None) -> bool:
    """Initialize the process group when launched by torchrun (``WORLD_SIZE`` set); True if distributed."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return dist.is_initialized()
    import torch

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    # NCCL needs one GPU per rank; more ranks than GPUs (several processes sharing one GPU, which pays off
    # for a small model whose forward is launch-bound) gather their results over gloo instead.
    backend = backend or ("nccl" if gpus >= local_size else "gloo")
    dist.init_process_group(backend)
    if gpus:
        torch.cuda.set_device(local_rank % gpus)
    return True


def item_key(item: Hashable) -> str:
    return json.dumps(item)


def load_partials(stem: Path) -> dict[str, Any]:
    done: dict[str, Any] = {}
    for path in sorted(stem.parent.glob(f"{stem.name}.rank*.partial.json")):
        try:
            done.update(json.loads(path.read_text()))
        except json.JSONDecodeError:
            continue  # a partial file is always written atomically; a corrupt one is ignored, its items redone
    return done


def run_sharded(
    items: Sequence[Hashable],
    compute: Callable[[Hashable], Any],
    checkpoint_stem: str | Path | None = None,
    resume: bool = False,
    on_item: Callable[[int, int], None] | None = None,
) -> dict[str, Any] | None:
    """Compute ``compute(item)`` for every item, items split round-robin over ranks.

    Returns ``{item_key(item): value}`` for all items on rank 0 and ``None`` on other ranks.
    Values must be JSON-serializable. With ``checkpoint_stem``, each rank saves its finished items
    after each one; with ``resume`` they (from any earlier world size) are loaded and skipped.
    """
    rank, size = world()
    stem = Path(checkpoint_stem) if checkpoint_stem is not None else None
    done = load_partials(stem) if (stem is not None and resume) else {}
    mine = {k: v for k, v in done.items()}
    todo = [it for i, it in enumerate(items) if i % size == rank and item_key(it) not in done]
    partial_path = stem.parent / f"{stem.name}.rank{rank}of{size}.partial.json" if stem is not None else None
    for n, item in enumerate(todo):
        mine[item_key(item)] = compute(item)
        if partial_path is not None:
            write_json_atomic(partial_path, {k: v for k, v in mine.items()})
        if on_item is not None:
            on_item(n + 1, len(todo))
    if size > 1:
        gathered: list[dict[str, Any] | None] = [None] * size if rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        if rank != 0:
            return None
        merged: dict[str, Any] = {}
        for part in gathered:
            merged.update(part or {})
        mine = merged
    missing = [item_key(it) for it in items if item_key(it) not in mine]
    if missing:
        raise RuntimeError(f"{len(missing)} grid items have no result after gathering (first: {missing[0]})")
    return {item_key(it): mine[item_key(it)] for it in items}


def run_shared(items: Sequence[Hashable], compute: Callable[[Hashable], Any]) -> dict[str, Any]:
    """Like :func:`run_sharded` without checkpoints, but every rank gets every result (``all_gather``): for
    the small decisions all ranks must share before the grid, such as the score weights."""
    rank, size = world()
    mine = {item_key(it): compute(it) for i, it in enumerate(items) if i % size == rank}
    if size > 1:
        gathered: list[dict[str, Any] | None] = [None] * size
        dist.all_gather_object(gathered, mine)
        mine = {k: v for part in gathered for k, v in (part or {}).items()}
    return {item_key(it): mine[item_key(it)] for it in items}


def clear_partials(checkpoint_stem: str | Path) -> None:
    stem = Path(checkpoint_stem)
    for path in stem.parent.glob(f"{stem.name}.rank*.partial.json"):
        path.unlink()
