import json
import re

import numpy as np
import pytest

from quota.data.records import DataError, Record, load_image, read_records, write_records
from tests.data.datasets import ROWS, write_dataset, write_png


def test_records_read_back_with_every_field(tmp_path):
    path = write_dataset(tmp_path)
    records = read_records(path)
    assert [r.question for r in records] == [row[0] for row in ROWS]
    assert [r.answer for r in records] == [row[1] for row in ROWS]
    assert [r.choices for r in records] == [tuple(row[2]) if row[2] else None for row in ROWS]
    assert [r.task for r in records] == [row[3] for row in ROWS]
    assert [r.id for r in records] == [f"r{i}" for i in range(len(ROWS))]
    assert [r.line for r in records] == list(range(1, len(ROWS) + 1))
    for r, row in zip(records, ROWS):
        assert r.image == tmp_path.resolve() / "images" / f"{r.id[1:]}.png"
        img = load_image(r)
        assert img.mode == "RGB" and (img.height, img.width) == row[4]


def test_optional_fields_default_and_images_become_rgb(tmp_path):
    grey = write_png(tmp_path / "g.png", (8, 12), seed=1, mode="L")
    rgba = write_png(tmp_path / "sub" / "a.png", (9, 7), seed=2, mode="RGBA")
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"image": "g.png", "question": "q?", "answer": "a", "extra": 1}) + "\n\n"
        + json.dumps({"image": "sub/a.png", "question": "q2?", "answer": "b"}) + "\n")
    first, second = read_records(tmp_path / "d.jsonl")
    assert (first.task, first.id, first.choices, second.line) == ("default", None, None, 3)  # blank line 2 skipped
    assert np.array_equal(np.asarray(load_image(first)), grey)
    assert np.array_equal(np.asarray(load_image(second)), rgba)


def test_every_bad_record_is_reported_at_once_with_its_line(tmp_path):
    write_png(tmp_path / "ok.png", (8, 8), seed=0)
    (tmp_path / "garbage.png").write_bytes(b"this is not an image at all")
    full = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(full[: len(full) // 2])
    good = {"image": "ok.png", "question": "Is it?", "answer": "yes"}
    lines = [
        json.dumps(good),                                                     # 1: fine
        '{"image": "ok.png", "question": "broken"',                           # 2: malformed JSON
        json.dumps({"image": "ok.png", "question": "Where?"}),                # 3: no answer
        json.dumps({**good, "answer": "  "}),                                 # 4: empty answer
        json.dumps({**good, "image": "missing.png"}),                         # 5: no such file
        json.dumps({**good, "image": "garbage.png"}),                         # 6: not an image
        json.dumps({**good, "image": "cut.png"}),                             # 7: truncated PNG
        json.dumps({**good, "choices": ["no", "maybe"]}),                     # 8: answer not a choice
        json.dumps(["image", "question"]),                                    # 9: not an object
        "",                                                                   # 10: blank, skipped
        json.dumps({**good, "question": 7}),                                  # 11: not a string
        json.dumps({**good, "choices": ["yes"]}),                             # 12: one choice only
        json.dumps({**good, "choices": ["yes", "no"]}),                       # 13: fine
    ]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        read_records(tmp_path / "bad.jsonl")
    err = info.value
    found = {int(m.group(1)) for m in re.finditer(r"^line (\d+): ", str(err), re.M)}
    assert found == {2, 3, 4, 5, 6, 7, 8, 9, 11, 12}
    assert len(err.problems) == 10 and str(err).startswith(f"{tmp_path / 'bad.jsonl'}: 10 bad records")
    text = str(err)
    for expected in ("line 2: not valid JSON", "line 3: missing field 'answer'", "line 4: empty answer",
                     "line 5: image file missing.png not found", "line 6: image garbage.png cannot be decoded",
                     "line 7: image cut.png cannot be decoded", "line 8: answer 'yes' is not one of the choices",
                     "line 9: expected a JSON object", "line 11: field 'question' must be a string",
                     "line 12: field 'choices' needs at least two distinct choices"):
        assert expected in text, expected
    assert isinstance(err, ValueError)


def test_a_record_with_two_problems_lists_both(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"image": "nope.png", "question": "", "answer": "x"}) + "\n")
    with pytest.raises(DataError) as info:
        read_records(tmp_path / "d.jsonl")
    assert info.value.problems == ["line 1: empty question", "line 1: image file nope.png not found"]


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no records"):
        read_records(tmp_path / "empty.jsonl")
    with pytest.raises(FileNotFoundError, match="nothere.jsonl"):
        read_records(tmp_path / "nothere.jsonl")


def test_write_records_round_trips_with_relative_paths(tmp_path):
    write_png(tmp_path / "pics" / "x.png", (8, 8), seed=3)
    rec = Record((tmp_path / "pics" / "x.png").resolve(), "What?", "B", ("A", "B"), "t", "id-1")
    (tmp_path / "sets").mkdir()
    out = write_records(tmp_path / "sets" / "one.jsonl", [rec])
    assert json.loads(out.read_text())["image"] == "../pics/x.png"
    (back,) = read_records(out)
    assert (back.image.resolve(), back.question, back.answer, back.choices, back.task, back.id) == (
        rec.image, rec.question, rec.answer, rec.choices, rec.task, rec.id)
