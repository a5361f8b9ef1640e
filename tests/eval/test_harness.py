import numpy as np
import torch
import pytest

from quota.eval.harness import bootstrap_ci, retention, summarize
from quota.eval.run import evaluate, load_result
from quota.testbed.tasks import Question


def q(task, answer, i):
    return Question(f"{task}/{i}", task, "?", answer, i)


def test_summarize_scores_per_task_with_intervals():
    qs = [q("counting", "3", i) for i in range(40)] + [q("existence", "yes", i) for i in range(40)]
    preds = ["three"] * 30 + ["4"] * 10 + ["Yes."] * 40  # number words and punctuation normalize
    r = summarize(qs, preds)
    assert r.tasks["counting"].accuracy == 0.75 and r.tasks["existence"].accuracy == 1.0
    assert r.average == pytest.approx(0.875)
    c = r.tasks["counting"]
    assert c.ci_low < 0.75 < c.ci_high and c.n == 40
    assert r.average_ci[0] < r.average < r.average_ci[1]
    assert sum(p["correct"] for p in r.predictions) == 70


def test_bootstrap_is_deterministic_and_narrows_with_n():
    small = np.array([1.0, 0.0] * 10)
    large = np.array([1.0, 0.0] * 500)
    assert bootstrap_ci(small) == bootstrap_ci(small)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert hi_l - lo_l < (hi_s - lo_s) / 3


def test_retention_is_the_mean_of_task_ratios():
    ref = summarize([q("counting", "1", 0), q("reading", "a", 1)], ["1", "a"])
    half = summarize([q("counting", "1", 0), q("reading", "a", 1)], ["1", "b"])
    assert retention(half, ref) == pytest.approx(0.5)


def test_result_file_round_trip(tmp_path):
    r = summarize([q("counting", "1", 0)], ["1"])
    from quota.atomic import write_json_atomic

    write_json_atomic(tmp_path / "r.json", r.to_dict())
    back = load_result(tmp_path / "r.json")
    assert back.tasks["counting"].accuracy == 1.0 and back.average == 1.0


def test_unknown_task_and_model_are_named():
    with pytest.raises(ValueError, match="unknown task 'ocr'"):
        evaluate(tasks=["ocr"])
    with pytest.raises(ValueError, match="unknown model 'llava'"):
        evaluate("llava")


def test_recipe_for_another_model_is_refused(tmp_path):
    from quota.quant.config import QuantConfig
    from quota.recipe import Recipe, RecipeError, ScoringSpec

    path = Recipe(model_id="other-model", model_hash="0" * 64, n_layers=2, n_visual_tokens=4, schedule=(4, 2),
                  scoring=ScoringSpec({"attn_last": 1.0}), quant=QuantConfig().to_dict()).save(tmp_path / "r.json")
    with pytest.raises(RecipeError, match="not 'quota-testbed"):
        evaluate(recipe=path, limit=1)


def test_calibration_limit_takes_a_prefix_of_the_calibration_split(monkeypatch):
    import quota.eval.run as run
    from quota.testbed.splits import calibration_split
    from quota.quant.config import QuantConfig

    seen = {}

    def fake_inputs(tokenizer, device, dtype, batch_size=32, questions=None):
        seen["questions"] = questions
        return ["batch"]

    monkeypatch.setattr(run, "calibration_inputs", fake_inputs)
    monkeypatch.setattr(run, "quantize_model", lambda model, config, calib: (model, calib))
    model = torch.nn.Linear(2, 2)
    out = run.prepare_model(model, None, QuantConfig(), calibration_limit=3)
    assert out == (model, ["batch"])
    assert [q.qid for q in seen["questions"]] == [q.qid for q in calibration_split()[:3]]
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="--calibration"):
            run.prepare_model(model, None, QuantConfig(), calibration_limit=bad)


def test_forms_break_each_task_down_by_question_form_and_survive_a_round_trip(tmp_path):
    from quota.atomic import write_json_atomic

    def qf(task, answer, i, form):
        return Question(f"{task}/{i}", task, "?", answer, i, meta={"form": form})

    qs = [qf("attribute", "red", i, "colour/near_text") for i in range(4)]
    qs += [qf("attribute", "star", 4 + i, "shape/location") for i in range(2)]
    qs += [q("reading", "42", 9)]  # no form in its meta
    r = summarize(qs, ["red", "blue", "blue", "blue", "star", "star", "42"])
    assert r.forms["attribute"] == {"colour/near_text": {"accuracy": 0.25, "n": 4},
                                    "shape/location": {"accuracy": 1.0, "n": 2}}
    assert r.forms["reading"] == {"-": {"accuracy": 1.0, "n": 1}}
    write_json_atomic(tmp_path / "r.json", r.to_dict())
    assert load_result(tmp_path / "r.json").forms == r.forms


def test_form_table_lists_every_form_once(capsys):
    from rich.console import Console

    from quota.cli.eval import form_table

    qs = [Question(f"counting/{i}", "counting", "?", "3", i, meta={"form": f}) for i, f in
          enumerate(["colour", "colour", "size+shape"])]
    Console(width=120).print(form_table(summarize(qs, ["3", "4", "3"])))
    out = capsys.readouterr().out
    assert out.count("colour") == 1 and "50.0%" in out and "size+shape" in out and "100.0%" in out
