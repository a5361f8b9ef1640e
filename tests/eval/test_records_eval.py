"""``quota eval --model DIR --data test.jsonl``: a checkpoint folder answers the user's records."""

from __future__ import annotations

import json

import pytest

from quota.cli.main import main
from quota.data.prompts import encode_batch
from quota.data.records import read_records
from quota.eval.records import answer_records, score_records, stop_token_ids
from quota.models.checkpoint import load_checkpoint
from quota.recipe import PruningPlan, Recipe
from quota.runtime.apply import PrunedModel
from quota.runtime.generate import PrunedRunner
from tests.checkpoints import write_checkpoint
from tests.data.datasets import write_dataset


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo_eval")
    data = write_dataset(root / "data")
    return {f: write_checkpoint(f, root / f) for f in ("llava", "llava_next")}, data


def test_scores_are_choice_accuracy_or_exact_match_per_task(folders):
    _, data = folders
    records = read_records(data)
    # counting "3" by exact match ("three" normalizes to 3); existence by choice letter; reading by choice text
    predictions = ["blue", "three", "A", "the lamp", "No."]
    result = score_records(records, predictions)
    assert {t: s.accuracy for t, s in result.tasks.items()} == {
        "attribute": 0.0, "counting": 1.0, "existence": 1.0, "reading": 1.0, "spatial": 1.0}
    assert result.average == pytest.approx(0.8)
    assert [p["correct"] for p in result.predictions] == [False, True, True, True, True]
    with pytest.raises(ValueError, match="4 predictions for 5 records"):
        score_records(records, predictions[:4])


def _greedy_by_hand(loaded, record, max_new_tokens: int) -> str:
    batch = encode_batch(loaded.processor, [record], with_answers=False)
    out = loaded.model.generate(**batch.inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=stop_token_ids(loaded.processor, loaded.model, record),
                                pad_token_id=loaded.processor.tokenizer.pad_token_id)
    return loaded.processor.tokenizer.decode(out[0, batch.input_ids.shape[1]:], skip_special_tokens=True).strip()


@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_answers_equal_generate_and_the_runtime_with_all_tokens(folders, family):
    ck, data = folders
    loaded = load_checkpoint(ck[family])
    records = read_records(data)
    answers = answer_records(loaded.model, loaded.processor, records, batch_size=2, max_new_tokens=4)
    assert answers == [_greedy_by_hand(loaded, r, 4) for r in records]
    n_ref = 16 if family == "llava" else 100  # anyres: every image runs all of its own tokens
    runner = PrunedRunner.from_plan(loaded.model, PruningPlan("all", (n_ref, n_ref)), impl="reference",
                                    reference_tokens=n_ref)
    assert answer_records(PrunedModel(loaded.model, runner), loaded.processor, records, 2, 4) == answers


def test_the_command_line_reports_retention_against_both_references(folders, tmp_path, capsys):
    ck, data = folders
    out = tmp_path / "eval.json"
    rc = main(["eval", "--model", str(ck["llava_next"]), "--data", str(data), "--quant", "rtn", "--baseline", "random",
               "--tokens", "20", "--references", "--device", "cpu", "--max-new-tokens", "3", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    saved = json.loads(out.read_text())
    assert set(saved["meta"]["retention"]) == {"full_precision_all_tokens", "lowbit_all_tokens"}
    assert saved["meta"]["quant"] == "W4A4-KV4" and saved["meta"]["baseline"] == "random"
    assert saved["meta"]["equivalent_tokens"] == pytest.approx(20, abs=0.5)
    assert len(saved["predictions"]) == 5 and saved["data_version"].startswith("jsonl:")
    assert "retention vs lowbit_all_tokens" in capsys.readouterr().out


def test_bad_eval_arguments_are_one_line_errors(folders, tmp_path, capsys):
    ck, data = folders
    cases = [
        (["--model", str(ck["llava"])], "--data FILE"),
        (["--data", str(data)], "--data is for a checkpoint folder"),
        (["--model", str(ck["llava"]), "--data", str(data), "--quant", "w4a4kv4"], "--calibration-data FILE"),
        (["--model", str(ck["llava"]), "--data", str(data), "--baseline", "fastv"], "needs --tokens"),
        (["--model", str(ck["llava"]), "--data", str(data), "--max-new-tokens", "0"], "--max-new-tokens"),
    ]
    for args, message in cases:
        assert main(["eval", *args, "--device", "cpu", "-o", str(tmp_path / "e.json")]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith("quota eval: error: ") and message in errors[0]
    assert not (tmp_path / "e.json").exists()


def test_a_recipe_for_another_model_is_refused(folders, tmp_path, capsys):
    ck, data = folders
    recipe = Recipe.from_plan(PruningPlan("x", (16, 8)), 16, model_id="someone_else")
    recipe.save(tmp_path / "r.json")
    rc = main(["eval", "--model", str(ck["llava"]), "--data", str(data), "--recipe", str(tmp_path / "r.json"),
               "--device", "cpu"])
    assert rc == 2 and "not 'llava'" in capsys.readouterr().err
