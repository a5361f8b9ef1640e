"""``quota apply RECIPE`` on the shipped testbed: the recipe's schedule is what each layer keeps."""

import json

import pytest

from quota.cli.apply import spread_questions
from quota.cli.main import main
from quota.quant.config import QuantConfig
from quota.recipe import Recipe, ScoringSpec

pytestmark = pytest.mark.slow


def _recipe(tmp_path, model_id, schedule, model_hash=None):
    from quota.testbed import model as testbed

    bf16 = QuantConfig(w_bits=16, a_bits=16, kv_bits=16, rotate=False).to_dict()
    return Recipe(model_id=model_id, model_hash=model_hash or testbed.model_hash(), n_layers=len(schedule),
                  n_visual_tokens=576, schedule=tuple(schedule), scoring=ScoringSpec({"attn_last": 1.0}),
                  quant=bf16).save(tmp_path / "recipe.json")


def test_apply_keeps_what_the_schedule_says(tmp_path, capsys):
    from quota.testbed import model as testbed

    schedule = [576, 576] + [96] * 10 + [48] * 18
    path = _recipe(tmp_path, testbed.MODEL_ID, schedule)
    assert main(["apply", str(path), "--questions", "2", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kept_per_layer_last_batch"] == schedule
    assert out["recipe_matches_weights"] is True
    assert [a["task"] for a in out["answers"]] == ["existence", "counting"]
    assert all(isinstance(a["prediction"], str) for a in out["answers"])


def test_apply_refuses_a_recipe_for_another_model(tmp_path, capsys):
    path = _recipe(tmp_path, "other-model", [576] * 30, model_hash="0" * 64)
    assert main(["apply", str(path), "--questions", "1", "--device", "cpu"]) == 2
    assert "other-model" in capsys.readouterr().err


def test_questions_are_spread_over_tasks():
    qs = spread_questions(7)
    assert [q.task for q in qs] == ["existence", "counting", "attribute", "spatial", "reading", "existence", "counting"]
    with pytest.raises(ValueError, match="at least 1"):
        spread_questions(0)
