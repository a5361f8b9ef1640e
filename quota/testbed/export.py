"""The synthetic suite as user data: a folder holding ``records.jsonl`` (the format of :mod:`quota.data.records`),
``images/`` (one PNG per question, the rendered scene, lossless) and ``manifest.json`` (split, limit, tasks,
``DATA_VERSION``, record count).

Contract: the folder appears whole or not at all. Everything is written into a temporary folder next to the
target (``.<name>.<random>.tmp``) and renamed into place at the end; an error or an interrupt removes the
temporary folder and leaves the target as it was. An existing target is refused unless ``overwrite``, in which
case it is replaced only after the new folder is complete.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from quota.atomic import folder_atomic
from quota.data.records import Record, write_records
from quota.testbed.scenes import encode_png
from quota.testbed.splits import DATA_VERSION, calibration_split, load_scene, test_split
from quota.testbed.tasks import Question, check_task

RECORDS_FILE = "records.jsonl"
IMAGES_DIR = "images"
MANIFEST_FILE = "manifest.json"
SPLITS = ("test", "calibration")  # the training stream is endless: it is not exported


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    records: int
    split: str


def suite_questions(split: str, limit: int | None = None, tasks: Sequence[str] | None = None) -> list[Question]:
    """The questions an export writes: ``test`` takes the first ``limit`` of each task (all 1000 by default);
    ``calibration`` takes the first ``limit`` of the 256 calibration questions (tasks interleaved)."""
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    names = [check_task(t) for t in tasks] if tasks else None
    if split == "test":
        if names is None:
            return test_split(limit=limit)
        return [q for t in names for q in test_split(t, limit)]
    questions = [q for q in calibration_split() if names is None or q.task in names]
    return questions[:limit] if limit is not None else questions


def image_name(question: Question) -> str:
    """The PNG's path inside the export folder: the question id with ``/`` as ``-``."""
    return f"{IMAGES_DIR}/{question.qid.replace('/', '-')}.png"


def _write(folder: Path, questions: Sequence[Question], manifest: dict) -> None:
    (folder / IMAGES_DIR).mkdir()
    records = []
    for q in questions:
        path = folder / image_name(q)
        path.write_bytes(encode_png(load_scene(q).image))  # uint8 [192, 192, 3]
        records.append(Record(path, q.question, q.answer, task=q.task, id=q.qid))
    write_records(folder / RECORDS_FILE, records)
    (folder / MANIFEST_FILE).write_text(json.dumps({**manifest, "records": len(records)}, indent=2) + "\n")


def export_suite(out: str | Path, split: str = "test", limit: int | None = None,
                 tasks: Sequence[str] | None = None, overwrite: bool = False) -> ExportResult:
    """Write the suite's ``split`` (see :func:`suite_questions`) as a data folder at ``out``, atomically."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    questions = suite_questions(split, limit, tasks)
    if not questions:
        raise ValueError(f"no questions to export from {split} (tasks {list(tasks or [])})")
    with folder_atomic(out) as tmp:
        manifest = {"source": "quota testbed", "data_version": DATA_VERSION, "split": split, "limit": limit,
                    "tasks": sorted({q.task for q in questions})}
        _write(tmp, questions, manifest)
    return ExportResult(out, len(questions), split)
