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
    assert out["questions"] == 2 and out["correct"] == sum(a["correct"] for a in out["answers"])


def test_apply_prints_a_score_line_and_marks_that_survive_without_colour(tmp_path, capsys):
    import re

    from quota.testbed import model as testbed

    path = _recipe(tmp_path, testbed.MODEL_ID, [576] * 2 + [144] * 28)
    assert main(["apply", str(path), "--questions", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # not a terminal: no colour at all, the marks carry the verdict
    right, wrong = out.count("✓"), out.count("✗")
    assert right + wrong == 3
    assert re.search(rf"^{right}/3 correct \({round(100 * right / 3)}%\)$", out, re.MULTILINE), out


def test_apply_refuses_a_recipe_for_another_model(tmp_path, capsys):
    path = _recipe(tmp_path, "other-model", [576] * 30, model_hash="0" * 64)
    assert main(["apply", str(path), "--questions", "1", "--device", "cpu"]) == 2
    assert "other-model" in capsys.readouterr().err


def test_questions_are_spread_over_tasks():
    qs = spread_questions(7)
    assert [q.task for q in qs] == ["existence", "counting", "attribute", "spatial", "reading", "existence", "counting"]
    with pytest.raises(ValueError, match="at least 1"):
        spread_questions(0)


def test_quant_rtn_is_the_recipes_bits_without_calibration(tmp_path):
    from quota.cli.apply import quant_config_for, quant_label
    from quota.quantize.model import needs_calibration

    low_bit = Recipe(model_id="m", model_hash="0" * 64, n_layers=2, n_visual_tokens=576, schedule=(576, 288),
                     scoring=ScoringSpec({"attn_last": 1.0}), quant=QuantConfig().to_dict())
    config = quant_config_for(low_bit, "rtn", None)
    assert (config.w_bits, config.a_bits, config.kv_bits) == (4, 4, 4) and not needs_calibration(config)
    assert quant_label(config, "rtn") == "W4A4-KV4 (RTN, --quant rtn: no calibration)"
    assert quant_config_for(low_bit, "recipe", 4) == QuantConfig()
    with pytest.raises(ValueError, match="--calibration: --quant rtn calibrates nothing"):
        quant_config_for(low_bit, "rtn", 4)
    with pytest.raises(ValueError, match=r"--quant must be one of \['recipe', 'rtn'\] or a QuantConfig JSON file"):
        quant_config_for(low_bit, "fast", None)
    file = tmp_path / "w8.json"
    file.write_text(json.dumps(QuantConfig(w_bits=8, a_bits=8).to_dict()))
    assert quant_config_for(low_bit, str(file), None).w_bits == 8


def test_quant_rtn_refuses_a_full_precision_recipe(tmp_path, capsys):
    from quota.testbed import model as testbed

    path = _recipe(tmp_path, testbed.MODEL_ID, [576] * 30)
    assert main(["apply", str(path), "--quant", "rtn", "--device", "cpu"]) == 2
    assert "--quant rtn: the recipe quantizes nothing" in capsys.readouterr().err
