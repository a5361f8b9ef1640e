import json

import pytest

from quota.quant.config import QuantConfig
from quota.recipe import RECIPE_VERSION, Recipe, RecipeError


def make(**kw):
    base = dict(model_id="m", model_hash="h" * 64, n_layers=4, n_visual_tokens=16, schedule=(16, 12, 8, 8),
                score_weights={"attention": 0.6, "magnitude": 0.2, "risk": 0.2}, quant=QuantConfig().to_dict(),
                budget=0.7)
    base.update(kw)
    return Recipe(**base)


def test_save_load_round_trip(tmp_path):
    r = make()
    path = r.save(tmp_path / "r.json")
    assert Recipe.load(path) == r
    assert r.equivalent_tokens == 11.0


def test_tampered_file_is_refused(tmp_path):
    path = make().save(tmp_path / "r.json")
    d = json.loads(path.read_text())
    d["schedule"] = [16, 16, 16, 16]
    path.write_text(json.dumps(d))
    with pytest.raises(RecipeError, match="content_hash"):
        Recipe.load(path)


def test_wrong_version_and_model_are_named(tmp_path):
    path = make().save(tmp_path / "r.json")
    d = json.loads(path.read_text())
    d["schema_version"] = RECIPE_VERSION + 1
    (tmp_path / "v.json").write_text(json.dumps(d))
    with pytest.raises(RecipeError, match="schema_version"):
        Recipe.load(tmp_path / "v.json")
    with pytest.raises(RecipeError, match="not 'other'"):
        Recipe.load(path, model_id="other")
    with pytest.raises(RecipeError, match="hash"):
        Recipe.load(path, model_id="m", model_hash="x" * 64)


def test_truncated_json_is_reported(tmp_path):
    path = make().save(tmp_path / "r.json")
    path.write_text(path.read_text()[:40])
    with pytest.raises(RecipeError, match="not valid JSON"):
        Recipe.load(path)


@pytest.mark.parametrize(
    "kw,match",
    [(dict(schedule=(16, 12, 13, 8)), "non-increasing"), (dict(schedule=(17, 12, 8, 8)), "outside"),
     (dict(schedule=(16, 8)), "entries"), (dict(budget=0.0), "budget"), (dict(budget_kind="time"), "budget_kind")],
)
def test_invalid_fields_are_named(kw, match):
    with pytest.raises(RecipeError, match=match):
        make(**kw)
