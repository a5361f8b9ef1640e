"""Merging per-task evaluation results (``quota.eval.merge``) gives what one run over every task gives."""

import json

import pytest

from quota.eval.harness import summarize
from quota.eval.merge import main, merge_results
from quota.testbed.splits import test_split

META = {"model": "quota-testbed-smollm2-vit6", "dtype": "bfloat16", "quant": "BF16", "recipe": None,
        "baseline": None, "schedule": None, "equivalent_tokens": 576, "seconds": 2.0}


def guesses(questions):
    """Right on every third question, a wrong answer elsewhere."""
    return [q.answer if i % 3 == 0 else "wrong" for i, q in enumerate(questions)]


def write_result(path, task, n, meta=META, predictions=True):
    questions = test_split(task, n)
    result = summarize(questions, guesses(questions), dict(meta))
    path.write_text(json.dumps(result.to_dict(with_predictions=predictions)))
    return path


def test_merged_tasks_equal_one_run_over_all_of_them(tmp_path):
    a = write_result(tmp_path / "a.json", "counting", 5)
    b = write_result(tmp_path / "b.json", "existence", 4)
    merged = merge_results([a, b])
    questions = test_split("existence", 4) + test_split("counting", 5)
    whole = summarize(questions, guesses(test_split("existence", 4)) + guesses(test_split("counting", 5)))
    assert list(merged.tasks) == ["existence", "counting"]  # TASKS order, whatever the file order
    assert merged.tasks == whole.tasks and merged.average == whole.average
    assert merged.average_ci == whole.average_ci and merged.forms == whole.forms
    assert merged.meta["seconds"] == 4.0 and merged.meta["merged_from"] == [str(a), str(b)]


def test_the_command_writes_the_merged_result(tmp_path, capsys):
    a = write_result(tmp_path / "a.json", "spatial", 3)
    b = write_result(tmp_path / "b.json", "reading", 3)
    main([str(a), str(b), "-o", str(tmp_path / "all.json")])
    written = json.loads((tmp_path / "all.json").read_text())
    assert set(written["tasks"]) == {"spatial", "reading"} and len(written["predictions"]) == 6
    assert "average" in capsys.readouterr().out


@pytest.mark.parametrize("problem, match", [
    ("same task", "in both"),
    ("other quant", "'quant'"),
    ("other limit", "'questions_per_task'"),
    ("other calibration", "'calibration_questions'"),
    ("no predictions", "no predictions"),
    ("other answers", "another answer"),
    ("nothing", "no results"),
])
def test_bad_inputs_are_refused_with_the_reason(tmp_path, problem, match):
    a = write_result(tmp_path / "a.json", "counting", 3)
    if problem == "same task":
        paths = [a, write_result(tmp_path / "b.json", "counting", 3)]
    elif problem == "other quant":
        paths = [a, write_result(tmp_path / "b.json", "reading", 3, meta={**META, "quant": "W4A4 KV4"})]
    elif problem == "other limit":
        paths = [a, write_result(tmp_path / "b.json", "reading", 3, meta={**META, "questions_per_task": 3})]
    elif problem == "other calibration":
        paths = [a, write_result(tmp_path / "b.json", "reading", 3, meta={**META, "calibration_questions": 16})]
    elif problem == "no predictions":
        paths = [a, write_result(tmp_path / "b.json", "reading", 3, predictions=False)]
    elif problem == "other answers":
        doc = json.loads(a.read_text())
        doc["predictions"][1]["answer"] = "not the split's"
        a.write_text(json.dumps(doc))
        paths = [a]
    else:
        paths = []
    with pytest.raises(ValueError, match=match):
        merge_results(paths)


def test_the_command_exits_with_the_reason_and_writes_nothing(tmp_path):
    a = write_result(tmp_path / "a.json", "counting", 3)
    with pytest.raises(SystemExit, match="in both"):
        main([str(a), str(a), "-o", str(tmp_path / "all.json")])
    assert not (tmp_path / "all.json").exists()


def test_natural_suite_results_merge_against_the_natural_test_split(tmp_path):
    paths = []
    for task, n in (("existence", 2), ("reading", 3)):
        questions = test_split(task, n, "natural")
        result = summarize(questions, guesses(questions), dict(META))
        assert result.to_dict()["data_version"] == "natural-v1"
        paths.append(tmp_path / f"{task}.json")
        paths[-1].write_text(json.dumps(result.to_dict(with_predictions=True)))
    merged = merge_results(paths)
    want = test_split("existence", 2, "natural") + test_split("reading", 3, "natural")
    assert merged.to_dict()["data_version"] == "natural-v1"
    assert [p["qid"] for p in merged.to_dict(with_predictions=True)["predictions"]] == [q.qid for q in want]
