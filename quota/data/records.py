"""VQA records in a JSONL file: one JSON object a line.

Fields of a record:
- ``image`` (required): path of the image, relative to the JSONL file's folder (an absolute path is kept as is);
- ``question`` and ``answer`` (required): non-empty strings;
- ``choices`` (optional): a list of at least two distinct non-empty strings, ``answer`` being one of them
  (multiple choice, scored by choice accuracy);
- ``task`` (optional, default ``"default"``): a group name, for per-task damage and scores;
- ``id`` (optional): the record's name in its source. Other fields are ignored.

:func:`read_records` checks every line before returning anything, decoding each image, and raises one
:class:`DataError` listing every bad record as ``line N: what is wrong``. Blank lines are skipped (their numbers
still count). Images are decoded with PIL and converted to RGB by :func:`load_image`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quota.atomic import write_text_atomic

DEFAULT_TASK = "default"
REQUIRED = ("image", "question", "answer")


class DataError(ValueError):
    """A JSONL data file with bad records; the message lists each as ``line N: what is wrong``."""

    def __init__(self, path: str | Path, problems: list[str]) -> None:
        self.path, self.problems = Path(path), list(problems)
        count = f"{len(problems)} bad record{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{path}: {count}\n" + "\n".join(problems) if problems else f"{path}: no records")


@dataclass(frozen=True)
class Record:
    """One question about one image. ``image`` is the resolved path; ``line`` the 1-based line it came from."""

    image: Path
    question: str
    answer: str
    choices: tuple[str, ...] | None = None
    task: str = DEFAULT_TASK
    id: str | None = None
    line: int = 0

    def to_json(self, base: str | Path) -> dict[str, Any]:
        """The JSONL object of this record, its image path relative to ``base`` (the JSONL file's folder)."""
        out: dict[str, Any] = {"image": Path(os.path.relpath(self.image, base)).as_posix(),
                               "question": self.question, "answer": self.answer}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.task != DEFAULT_TASK:
            out["task"] = self.task
        if self.id is not None:
            out["id"] = self.id
        return out


def load_image(path: str | Path | Record):
    """The image of a record (or at ``path``), decoded with PIL and converted to RGB."""
    from PIL import Image

    path = path.image if isinstance(path, Record) else Path(path)
    with Image.open(path) as img:
        return img.convert("RGB")


def _image_problem(path: Path, shown: str) -> str | None:
    """Why the image at ``path`` is unusable, or ``None`` when it decodes."""
    from PIL import Image

    if not path.is_file():
        return f"image file {shown} not found"
    try:
        with Image.open(path) as img:
            img.load()  # the whole image, so that a truncated file fails here
            if img.width < 1 or img.height < 1:
                return f"image {shown} is empty ({img.width} x {img.height})"
    except Exception as err:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError...
        return f"image {shown} cannot be decoded ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    return None


def _text(obj: dict, name: str, problems: list[str], required: bool = True) -> str | None:
    if name not in obj:
        if required:
            problems.append(f"missing field {name!r}")
        return None
    value = obj[name]
    if not isinstance(value, str):
        problems.append(f"field {name!r} must be a string, got {type(value).__name__}")
        return None
    if not value.strip():
        problems.append(f"empty {name}")
        return None
    return value


def _choices(obj: dict, answer: str | None, problems: list[str]) -> tuple[str, ...] | None:
    if "choices" not in obj or obj["choices"] is None:
        return None
    raw = obj["choices"]
    if not isinstance(raw, list) or not all(isinstance(c, str) and c.strip() for c in raw):
        problems.append("field 'choices' must be a list of non-empty strings")
        return None
    if len(raw) < 2 or len(set(raw)) != len(raw):
        problems.append(f"field 'choices' needs at least two distinct choices, got {raw}")
        return None
    if answer is not None and answer not in raw:
        problems.append(f"answer {answer!r} is not one of the choices {raw}")
    return tuple(raw)


def parse_record(line: str, number: int, base: Path, check_image: bool = True) -> tuple[Record | None, list[str]]:
    """One JSONL line -> ``(record, [])``, or ``(None, problems)``; ``base`` is the JSONL file's folder."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        return None, [f"not valid JSON ({err.msg} at column {err.colno})"]
    if not isinstance(obj, dict):
        return None, [f"expected a JSON object, got {type(obj).__name__}"]
    problems: list[str] = []
    image = _text(obj, "image", problems)
    question = _text(obj, "question", problems)
    answer = _text(obj, "answer", problems)
    choices = _choices(obj, answer, problems)
    task = _text(obj, "task", problems, required=False) or DEFAULT_TASK
    rid = _text(obj, "id", problems, required=False)
    path = None
    if image is not None:
        path = base / image
        problem = _image_problem(path, image) if check_image else None
        if problem:
            problems.append(problem)
    if problems:
        return None, problems
    return Record(path, question, answer, choices, task, rid, number), []


def read_records(path: str | Path, check_images: bool = True) -> list[Record]:
    """Every record of the JSONL file ``path``, in file order, after checking all of them (and decoding every
    image, unless ``check_images`` is off). :class:`DataError` lists every bad line; ``FileNotFoundError`` when
    there is no file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} not found")
    base = path.resolve().parent
    records: list[Record] = []
    problems: list[str] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            record, found = parse_record(line, number, base, check_images)
            problems += [f"line {number}: {p}" for p in found]
            if record is not None:
                records.append(record)
    if problems or not records:
        raise DataError(path, problems)
    return records


def write_records(path: str | Path, records: Iterable[Record]) -> Path:
    """Write ``records`` as JSONL at ``path`` (atomically), image paths relative to its folder."""
    path = Path(path)
    base = path.resolve().parent
    lines = [json.dumps(r.to_json(base), ensure_ascii=False) for r in records]
    return write_text_atomic(path, "".join(line + "\n" for line in lines))
