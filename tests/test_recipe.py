"""The recipe contract: one class, validated field by field, versioned, content-hashed; old files still load."""

import json
from pathlib import Path

import pytest

from quota.quant.config import QuantConfig
from quota.recipe import RECIPE_VERSION, PruningPlan, Recipe, RecipeError, ScoringSpec

DOCS_RECIPES = Path(__file__).resolve().parents[1] / "docs" / "results" / "recipes"


def make(**kw):
    base = dict(model_id="m", model_hash="h" * 64, n_layers=4, n_visual_tokens=16, schedule=(16, 12, 8, 8),
                scoring=ScoringSpec({"attn_last": 0.6, "magnitude": 0.2, "risk": 0.2}, "rank", 3),
                quant=QuantConfig().to_dict(), budget=0.7)
    base.update(kw)
    return Recipe(**base)


def test_save_load_round_trip_keeps_the_whole_scoring(tmp_path):
    r = make()
    path = r.save(tmp_path / "r.json")
    loaded = Recipe.load(path)
    assert loaded == r
    assert loaded.scoring.normalize == "rank" and loaded.scoring.seed == 3
    assert r.equivalent_tokens == 11.0
    data = json.loads(path.read_text())
    assert data["type"] == "quota.recipe" and data["version"] == RECIPE_VERSION and "schema" not in data


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
    d["version"] = RECIPE_VERSION + 1
    del d["content_hash"]
    (tmp_path / "v.json").write_text(json.dumps(d))
    with pytest.raises(RecipeError, match=f"version {RECIPE_VERSION + 1} is not supported"):
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
    [(dict(schedule=(16, 12, 13, 8)), r"non-increasing: schedule\[2\] = 13"),
     (dict(schedule=(17, 12, 8, 8)), r"schedule\[0\] = 17"),
     (dict(schedule=(16, 8)), "2 entries but the model has 4"),
     (dict(schedule=(16, 12.5, 8, 8)), r"schedule\[1\] = 12.5 is not an integer"),
     (dict(schedule=(16, True, 1, 1)), r"schedule\[1\] = True is not an integer"),
     (dict(schedule=("16", 8, 8, 8)), r"schedule\[0\] = '16' is not an integer"),
     (dict(budget=0.0), "budget"), (dict(budget=float("nan")), "budget"), (dict(budget_kind="time"), "budget_kind"),
     (dict(n_visual_tokens=0), "n_visual_tokens"), (dict(quant={"w_bits": 3}), "quant")],
)
def test_invalid_fields_are_named(kw, match):
    with pytest.raises(RecipeError, match=match):
        make(**kw)


@pytest.mark.parametrize(
    "weights,match",
    [({"attn_last": float("nan")}, r"scoring\.weights\.attn_last = nan"),
     ({"attn_last": -1.0}, r"scoring\.weights\.attn_last = -1.0"),
     ({"bogus": 1.0}, r"scoring\.weights\.bogus: unknown score signal"),
     ({"attn_last": 0.0}, "at least one positive weight")],
)
def test_bad_score_weights_are_named(weights, match):
    with pytest.raises(RecipeError, match=match):
        make(scoring={"weights": weights})


def test_pruning_before_layer_0_needs_a_signal_that_exists_there():
    with pytest.raises(RecipeError, match=r"schedule\[0\] = 8 prunes before layer 0"):
        make(schedule=(8, 8, 8, 8), scoring=ScoringSpec({"attn_last": 1.0}))
    assert make(schedule=(8, 8, 8, 8), scoring=ScoringSpec({"vision_attn": 1.0})).prunes


def test_unknown_and_misspelled_fields_are_refused():
    d = make().to_dict()
    del d["content_hash"]
    d["quant_cfg"] = d.pop("quant")
    with pytest.raises(RecipeError, match=r"unknown field\(s\) \['quant_cfg'\]"):
        Recipe.from_dict(d)
    d = make().to_dict()
    del d["content_hash"]
    d["scoring"]["normalise"] = "rank"
    with pytest.raises(RecipeError, match=r"scoring: unknown field\(s\) \['normalise'\]"):
        Recipe.from_dict(d)


def test_version_1_files_load_and_verify(tmp_path):
    """A recipe written before the versioned-JSON convention (``schema``/``schema_version``, flat
    ``score_weights``), hashed the way it was then, loads as the same schedule and weights."""
    import hashlib

    body = {"schema": "quota.recipe", "schema_version": 1, "model_id": "m", "model_hash": "h" * 64, "n_layers": 4,
            "n_visual_tokens": 16, "schedule": [16, 12, 8, 8], "score_weights": {"attn_last": 1.0},
            "quant": QuantConfig().to_dict(), "budget_kind": "tokens", "budget": 0.7, "solver": {},
            "data_version": "", "versions": {}, "quota_version": "0.1.0"}
    body["content_hash"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    (tmp_path / "old.json").write_text(json.dumps(body))
    r = Recipe.load(tmp_path / "old.json")
    assert r.schedule == (16, 12, 8, 8) and r.scoring == ScoringSpec({"attn_last": 1.0})
    body["schedule"] = [16, 16, 8, 8]
    (tmp_path / "edited.json").write_text(json.dumps(body))
    with pytest.raises(RecipeError, match="content_hash"):
        Recipe.load(tmp_path / "edited.json")


@pytest.mark.parametrize("path", sorted(DOCS_RECIPES.glob("*.json")), ids=lambda p: p.name)
def test_recipes_written_before_the_change_still_load(path):
    r = Recipe.load(path)
    assert r.n_layers == len(r.schedule) == 30 and r.scoring.active


def test_a_plan_becomes_a_recipe_without_a_solver():
    plan = PruningPlan("fastv", (16, 16, 4, 4), ScoringSpec({"attn_last": 1.0}))
    r = Recipe.from_plan(plan, 16, QuantConfig())
    assert r.plan == PruningPlan("fastv", (16, 16, 4, 4), ScoringSpec({"attn_last": 1.0}))
    assert r.budget == pytest.approx(10 / 16) and r.quant_config == QuantConfig() and r.solver["name"] == "plan"
    assert Recipe.from_plan(plan, 16).quant_config is None


def test_selection_and_merge_round_trip_and_stay_out_of_top_k_files(tmp_path):
    scoring = ScoringSpec({"vision_attn": 1.0}, selection="cdpruner", merge=10)
    r = make(schedule=(8, 8, 8, 8), scoring=scoring)
    path = r.save(tmp_path / "r.json")
    assert Recipe.load(path) == r and Recipe.load(path).scoring.merge == 10
    data = json.loads(path.read_text())
    assert data["scoring"] == {"weights": {"vision_attn": 1.0}, "normalize": "minmax", "seed": 0,
                               "selection": "cdpruner", "merge": 10}
    assert data["version"] == RECIPE_VERSION
    # top-k without merging writes exactly the fields readers before them knew: same JSON, same hash
    plain = make().to_dict()["scoring"]
    assert set(plain) == {"weights", "normalize", "seed"}
    assert make(scoring=ScoringSpec({"attn_last": 0.6, "magnitude": 0.2, "risk": 0.2}, "rank", 3, "topk", 0)) == make()
    assert ScoringSpec.from_dict(plain) == make().scoring and ScoringSpec.from_dict(plain).selection == "topk"


@pytest.mark.parametrize(
    "scoring,match",
    [({"weights": {"attn_last": 1.0}, "selection": "dpp"}, r"^scoring\.selection = 'dpp'; choose one of"),
     ({"weights": {"attn_last": 1.0}, "selection": None}, r"^scoring\.selection = None"),
     ({"weights": {"attn_last": 1.0}, "merge": -1}, r"^scoring\.merge = -1 must be an integer >= 0"),
     ({"weights": {"attn_last": 1.0}, "merge": 2.5}, r"^scoring\.merge = 2\.5"),
     ({"weights": {"attn_last": 1.0}, "merge": True}, r"^scoring\.merge = True")],
)
def test_bad_selection_and_merge_are_named(scoring, match):
    with pytest.raises(RecipeError, match=match) as err:
        make(scoring=scoring)
    assert "\n" not in str(err.value)
    d = make().to_dict()
    del d["content_hash"]
    d["scoring"] = scoring
    with pytest.raises(RecipeError, match="scoring"):
        Recipe.from_dict(d)


def test_stage_weights_round_trip_and_stay_out_of_files_without_them(tmp_path):
    scoring = ScoringSpec({"attn_last": 1.0}, stage_weights={"pre_llm": {"vision_attn": 0.9, "magnitude": 0.1}})
    r = make(schedule=(8, 8, 4, 4), scoring=scoring)  # pruning before layer 0 runs on the pre-LLM weights
    path = r.save(tmp_path / "r.json")
    loaded = Recipe.load(path)
    assert loaded == r and loaded.scoring.stage_weights == {"pre_llm": {"vision_attn": 0.9, "magnitude": 0.1}}
    assert json.loads(path.read_text())["scoring"] == {
        "weights": {"attn_last": 1.0}, "normalize": "minmax", "seed": 0,
        "stage_weights": {"pre_llm": {"vision_attn": 0.9, "magnitude": 0.1}}}
    assert scoring.weights_at(0) == {"vision_attn": 0.9, "magnitude": 0.1}
    assert scoring.weights_at(1) == scoring.weights_at(3) == {"attn_last": 1.0}
    assert scoring.signals_used == {"attn_last", "vision_attn", "magnitude"}
    # without stage weights (absent, None or empty) the file, and so the hash, is what it was before them
    for none in (None, {}):
        same = make(scoring=ScoringSpec({"attn_last": 0.6, "magnitude": 0.2, "risk": 0.2}, "rank", 3,
                                        stage_weights=none))
        assert same == make() and same.to_dict() == make().to_dict() and "stage_weights" not in same.to_dict()["scoring"]
    in_llm = ScoringSpec({"magnitude": 1.0}, stage_weights={"in_llm": {"attn_text": 1.0}})
    assert in_llm.weights_at(0) == {"magnitude": 1.0} and in_llm.weights_at(2) == {"attn_text": 1.0}


def test_a_stage_without_its_signals_cannot_prune():
    with pytest.raises(RecipeError, match=r"^schedule\[0\] = 8 prunes before layer 0"):
        make(schedule=(8, 8, 4, 4), scoring=ScoringSpec({"attn_last": 1.0}))
    staged = ScoringSpec({"attn_last": 1.0}, stage_weights={"pre_llm": {"random": 1.0}})
    assert make(schedule=(8, 8, 4, 4), scoring=staged).scoring.weights_at(0) == {"random": 1.0}


@pytest.mark.parametrize(
    "stage_weights,match",
    [({"pre": {"magnitude": 1.0}}, r"^scoring\.stage_weights\.pre: unknown pruning stage; known stages"),
     ({"pre_llm": {"attn_last": 1.0}}, r"^scoring\.stage_weights\.pre_llm\.attn_last: the signal does not exist"),
     ({"pre_llm": {"bogus": 1.0}}, r"^scoring\.stage_weights\.pre_llm\.bogus: unknown score signal"),
     ({"in_llm": {"attn_text": -1.0}}, r"^scoring\.stage_weights\.in_llm\.attn_text = -1\.0 must be a finite"),
     ({"in_llm": {"attn_text": float("nan")}}, r"^scoring\.stage_weights\.in_llm\.attn_text = nan"),
     ({"pre_llm": {"magnitude": 0.0}}, r"^scoring\.stage_weights\.pre_llm needs at least one positive weight"),
     ({"pre_llm": [1]}, r"^scoring\.stage_weights\.pre_llm must be an object"),
     ([1], r"^scoring\.stage_weights must be an object of stage -> weights")],
)
def test_bad_stage_weights_are_named(stage_weights, match):
    with pytest.raises(RecipeError, match=match) as err:
        make(scoring={"weights": {"attn_last": 1.0}, "stage_weights": stage_weights})
    assert "\n" not in str(err.value)
    d = make().to_dict()
    del d["content_hash"]
    d["scoring"] = {"weights": {"attn_last": 1.0}, "stage_weights": stage_weights}
    with pytest.raises(RecipeError, match="scoring.stage_weights"):
        Recipe.from_dict(d)
