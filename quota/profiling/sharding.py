"""The (layer, keep) grid of a profile is embarrassingly parallel: shard it over ``torch.distributed``
ranks (``torchrun``; NCCL with one GPU per rank, gloo on CPUs or when ranks share GPUs), each rank
checkpointing what it finished so an interrupted run resumes, and gather everything on rank 0.

Checkpoint files: ``<stem>.rank<r>of<w>.partial.json``, rewritten atomically after each finished item::

    {"type": "quota.partial", "version": 2, "settings": {...}, "items": {key: value}}

``settings`` is the caller's record of everything the values depend on (model hash, quantization, data,
grid, library versions, device). A resumed run loads every partial file of the same stem (any world size)
whose settings equal its own, so no finished item is computed twice; a file of other settings is refused
(``resume="strict"``, one line naming the first field that differs) or discarded (``resume="recompute"``).
Files of the first format (a bare ``{key: value}`` object) record no settings: they are treated as
belonging to other settings.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import torch.distributed as dist

from quota.device import placement

from quota.atomic import first_difference, mismatch_error, resume_mode, unrecorded_error, write_json_atomic

PARTIAL_TYPE, PARTIAL_VERSION = "quota.partial", 2
_NO_SETTINGS = object()  # a partial file of the first format


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is not initialized."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_placement(device: str | None = None):
    """``(device, dtype)`` of this process as :func:`quota.device.placement` gives them, except that under torchrun
    a plain ``"cuda"`` becomes this rank's own GPU (``cuda:<current device>``, set by :func:`init_from_env`)."""
    import torch

    device, dtype = placement(device)
    if device == "cuda" and world()[1] > 1:
        device = f"cuda:{torch.cuda.current_device()}"
    return device, dtype


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


def partial_files(stem: Path) -> list[Path]:
    """Every partial file of ``stem`` (any rank, any world size), sorted by name."""
    return sorted(stem.parent.glob(f"{stem.name}.rank*.partial.json"))


def _read_partial(path: Path) -> tuple[Any, dict[str, Any]] | None:
    """``(settings, items)`` of a partial file (settings ``_NO_SETTINGS`` for the first format), or ``None``
    when it is unreadable (partial files are written atomically: a damaged one is ignored, its items redone)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("type") == PARTIAL_TYPE and isinstance(data.get("items"), dict):
        return data.get("settings"), data["items"]
    return _NO_SETTINGS, data


def load_partials(stem: Path, settings: dict[str, Any] | None = None, resume: bool | str = "strict",
                  only_given_fields: bool = False, may_delete: Callable[[str], bool] | None = None
                  ) -> dict[str, Any]:
    """The finished items of every partial file of ``stem`` whose settings equal ``settings``.

    With ``settings=None`` nothing is checked (every readable file counts). Otherwise a file of other
    settings (or of none) raises :class:`quota.atomic.ResumeMismatchError` when ``resume`` is strict
    (``True``), and is skipped when it is ``"recompute"``; then it is also deleted if ``may_delete(name)``.
    ``only_given_fields``: compare only the fields ``settings`` has (an early check, made before every
    setting is known)."""
    mode = resume_mode(resume) or "strict"
    done: dict[str, Any] = {}
    for path in partial_files(stem):
        read = _read_partial(path)
        if read is None:
            continue
        stored, items = read
        if settings is not None:
            unrecorded = stored is _NO_SETTINGS or not isinstance(stored, dict)
            diff = None if unrecorded else first_difference(stored, settings, only_wanted_keys=only_given_fields)
            if unrecorded or diff is not None:
                if mode == "strict":
                    raise (unrecorded_error("the partial results", path.name) if unrecorded
                           else mismatch_error("the partial results", path.name, diff))
                if may_delete is not None and may_delete(path.name):
                    with contextlib.suppress(OSError):
                        path.unlink()
                continue
        done.update(items)
    return done


def check_partials(checkpoint_stem: str | Path, settings: dict[str, Any], resume: bool | str) -> None:
    """Refuse early (before loading or quantizing a model) to resume from partial files of other settings:
    compares the fields ``settings`` has; a no-op unless ``resume`` is strict."""
    if resume_mode(resume) == "strict":
        load_partials(Path(checkpoint_stem), settings, "strict", only_given_fields=True)


def partial_path(stem: Path, rank: int, size: int) -> Path:
    return stem.parent / f"{stem.name}.rank{rank}of{size}.partial.json"


def _deletable_by(stem: Path, rank: int, size: int) -> Callable[[str], bool]:
    """Which stale partial files a rank removes under ``resume="recompute"``: its own, and on rank 0 also
    those of no live rank (earlier world sizes); never another live rank's, which that rank handles."""
    live = {partial_path(stem, r, size).name for r in range(size)}
    own = partial_path(stem, rank, size).name
    return lambda name: name == own or (rank == 0 and name not in live)


def run_sharded(
    items: Sequence[Hashable],
    compute: Callable[[Hashable], Any],
    checkpoint_stem: str | Path | None = None,
    resume: bool | str = False,
    on_item: Callable[[int, int], None] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Compute ``compute(item)`` for every item, items split round-robin over ranks.

    Returns ``{item_key(item): value}`` for all items on rank 0 and ``None`` on other ranks.
    Values must be JSON-serializable. With ``checkpoint_stem``, each rank saves its finished items and
    ``settings`` (a JSON-serializable record of what the values depend on) after each one. ``resume``:
    ``False`` starts afresh; ``True`` or ``"strict"`` loads and skips the items of earlier partial files (of
    any world size) whose settings equal ``settings``, and raises
    :class:`quota.atomic.ResumeMismatchError` (before computing anything) if any file has other settings;
    ``"recompute"`` skips the matching ones and deletes the others.
    """
    rank, size = world()
    mode = resume_mode(resume)
    stem = Path(checkpoint_stem) if checkpoint_stem is not None else None
    deletable = _deletable_by(stem, rank, size) if stem is not None else None
    done = load_partials(stem, settings, mode, may_delete=deletable) if (stem is not None and mode) else {}
    mine = {k: v for k, v in done.items()}
    todo = [it for i, it in enumerate(items) if i % size == rank and item_key(it) not in done]
    own_file = partial_path(stem, rank, size) if stem is not None else None
    for n, item in enumerate(todo):
        mine[item_key(item)] = compute(item)
        if own_file is not None:
            write_json_atomic(own_file, {"type": PARTIAL_TYPE, "version": PARTIAL_VERSION, "settings": settings,
                                         "items": mine})
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


class RanksDisagreeError(RuntimeError):
    """Ranks measured different values of what must be one value (the same model on the same data)."""


def check_ranks_agree(value: float, what: str, rtol: float = 1e-3) -> None:
    """Raise :class:`RanksDisagreeError` unless every rank's ``value`` lies within ``rtol`` (relative to the largest
    magnitude) of every other's; a no-op in one process. Each rank's value is named in the message."""
    rank, size = world()
    if size == 1:
        return
    values: list[float | None] = [None] * size
    dist.all_gather_object(values, float(value))
    scale = max(max(abs(v) for v in values), 1e-12)
    if max(values) - min(values) > rtol * scale:
        listed = ", ".join(f"rank {r}: {v:.6g}" for r, v in enumerate(values))
        raise RanksDisagreeError(f"ranks disagree on {what} ({listed}; tolerance {rtol:g} relative): a rank's model or "
                                 f"kernels differ from the others', so nothing measured by these ranks is written")


def clear_partials(checkpoint_stem: str | Path) -> None:
    """Remove every partial file of ``checkpoint_stem`` (once the whole result is written)."""
    for path in partial_files(Path(checkpoint_stem)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
