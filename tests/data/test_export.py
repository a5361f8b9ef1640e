"""``quota data export``: the synthetic suite in the JSONL format, read back, pixel for pixel, written atomically."""

import json

import numpy as np
import pytest

from quota.cli.main import main
from quota.data.records import load_image, read_records
from quota.data.scoring import is_correct
from quota.testbed import export as export_module
from quota.testbed.export import export_suite, suite_questions
from quota.testbed.splits import DATA_VERSION, calibration_split, load_scene, test_split
from quota.testbed.tasks import TASKS


def _leftovers(parent, name):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def test_export_round_trip_equals_the_suite(tmp_path):
    result = export_suite(tmp_path / "test2", split="test", limit=2)
    questions = test_split(limit=2)
    records = read_records(result.folder / "records.jsonl")
    assert result.records == len(records) == len(questions) == 2 * len(TASKS)
    for q, r in zip(questions, records):
        assert (r.question, r.answer, r.task, r.id, r.choices) == (q.question, q.answer, q.task, q.qid, None)
        assert np.array_equal(np.asarray(load_image(r)), load_scene(q).image)  # uint8 [192, 192, 3], lossless
        assert is_correct(r, q.answer)
    manifest = json.loads((result.folder / "manifest.json").read_text())
    assert manifest["data_version"] == DATA_VERSION and manifest["records"] == 10 and manifest["split"] == "test"
    assert _leftovers(tmp_path, "test2") == []


def test_calibration_split_and_task_filter():
    assert [q.qid for q in suite_questions("calibration", 7)] == [q.qid for q in calibration_split()[:7]]
    picked = suite_questions("test", 3, tasks=["reading", "counting"])
    assert [q.task for q in picked] == ["reading"] * 3 + ["counting"] * 3
    with pytest.raises(ValueError, match="--split"):
        suite_questions("train")
    with pytest.raises(ValueError, match="--limit"):
        suite_questions("test", 0)


def test_an_interrupted_export_leaves_nothing_and_keeps_the_old_folder(tmp_path, monkeypatch):
    real, calls = export_module.encode_png, []

    def failing(image):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(image)

    monkeypatch.setattr(export_module, "encode_png", failing)
    with pytest.raises(KeyboardInterrupt):
        export_suite(tmp_path / "out", limit=1)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path, "out") == []

    monkeypatch.setattr(export_module, "encode_png", real)
    export_suite(tmp_path / "out", limit=1, tasks=["counting"])
    before = (tmp_path / "out" / "records.jsonl").read_text()
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_suite(tmp_path / "out", limit=1)
    calls.clear()
    monkeypatch.setattr(export_module, "encode_png", failing)
    with pytest.raises(KeyboardInterrupt):
        export_suite(tmp_path / "out", limit=1, overwrite=True)
    assert (tmp_path / "out" / "records.jsonl").read_text() == before and _leftovers(tmp_path, "out") == []

    monkeypatch.setattr(export_module, "encode_png", real)
    export_suite(tmp_path / "out", limit=1, overwrite=True)
    assert len(read_records(tmp_path / "out" / "records.jsonl")) == len(TASKS)
    assert _leftovers(tmp_path, "out") == []


def test_cli_export_and_check(tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["data", "export", "--split", "test", "--limit", "1", "--out", str(out)]) == 0
    assert f"wrote {len(TASKS)} records of the test split" in capsys.readouterr().out
    assert main(["data", "check", str(out / "records.jsonl")]) == 0
    assert f"{len(TASKS)} records, all images decode" in capsys.readouterr().out
    assert main(["data", "export", "--limit", "1", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "export", "--limit", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--limit must be at least 1" in capsys.readouterr().err
    (out / "images" / "test-counting-1-0.png").write_bytes(b"broken")
    assert main(["data", "check", str(out / "records.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "1 bad record" in err and "line 2: image images/test-counting-1-0.png cannot be decoded" in err
