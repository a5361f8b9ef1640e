"""A folder that appears whole or not at all.

:func:`building` yields a temporary folder next to the target (``.<name>.<random>.tmp``, made like a plain
``mkdir`` of the target would be); on a normal exit the files in it are synced and it is renamed into place. On
any error or interrupt it is removed and the target is left as it was. An existing target is refused unless
``overwrite``, and even then only when it is a folder this format wrote (it holds ``marker``) or an empty one, so
``--overwrite`` cannot wipe an unrelated folder; the old folder is moved aside and removed only after the new one
is in place.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from quota.atomic import folder_atomic
from quota.saved.manifest import SavedCheckpointError


def check_target(out: Path, overwrite: bool, marker: str) -> None:
    """Refuse ``out`` when it exists, unless ``overwrite`` and it is empty or holds ``marker``."""
    if not out.exists():
        return
    if not out.is_dir():
        raise SavedCheckpointError(f"{out} exists and is not a folder")
    if not overwrite:
        raise SavedCheckpointError(f"{out} already exists; choose another output folder or pass --overwrite")
    if any(out.iterdir()) and not (out / marker).is_file():
        raise SavedCheckpointError(f"{out} is not a saved quota checkpoint (no {marker}); --overwrite replaces only "
                                   f"those, remove it yourself or choose another output folder")


@contextlib.contextmanager
def building(out: str | os.PathLike, overwrite: bool, marker: str) -> Iterator[Path]:
    """A temporary folder to write the whole output to; renamed to ``out`` on a normal exit (see the module and
    :func:`quota.atomic.folder_atomic`)."""
    out = Path(out)
    check_target(out, overwrite, marker)
    with folder_atomic(out, check=lambda target: check_target(target, overwrite, marker)) as tmp:
        yield tmp
