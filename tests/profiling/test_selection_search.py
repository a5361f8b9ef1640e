"""The profile's selection rule and merged tokens: searched on the probes of both stages after the weights, recorded
in the profile (version 3), measured in its grid, and carried into the recipes solved from it."""

import dataclasses
import json

import pytest
import torch

from quota.allocate import solve
from quota.profiling.measure import ProfileSettings, profile_model
from quota.profiling.profile import Profile, ProfileError
from quota.profiling.sensitivity import DamageMeter
from quota.quant.config import QuantConfig
from quota.quantize.gptq import one_cpu_thread
from tests.profiling.fake_testbed import N_VISUAL, fake_batches
from tests.runtime.models import tiny_llava
from tests.synthetic_profile import synthetic_profile

VARIANTS = [{"selection": "topk", "merge": 0}, {"selection": "topk", "merge": 2}, {"selection": "divprune", "merge": 0},
            {"selection": "divprune", "merge": 64, "merge_rule": "recycle"}]


class Question:
    def __init__(self, task):
        self.task = task


def test_selection_and_merge_round_trip_as_version_3_and_reach_the_recipe(tmp_path):
    search = {"candidates": [{**v, "mean_kl": 0.1 * i} for i, v in enumerate(VARIANTS)]}
    p = dataclasses.replace(synthetic_profile(), selection="divprune", merge=3, selection_search=search)
    q = Profile.load(p.save(tmp_path / "p.json"))
    assert json.loads((tmp_path / "p.json").read_text())["version"] == 3
    assert (q.selection, q.merge, q.selection_search) == ("divprune", 3, search)
    recipe = solve(q, 0.3).recipe
    assert recipe.scoring.selection == "divprune" and recipe.scoring.merge == 3
    assert recipe.scoring == q.scoring  # the weights, stages, rule and merging the grid was measured with
    plain = synthetic_profile()
    assert plain.to_dict()["version"] == 1 and plain.scoring.selection == "topk" and plain.scoring.merge == 0


@pytest.mark.parametrize("field,value,match", [("selection", "random", "selection"), ("merge", -1, "merge")])
def test_a_bad_selection_or_merge_is_refused_naming_it(field, value, match):
    d = dataclasses.replace(synthetic_profile(), selection="divprune").to_dict()
    d[field] = value
    with pytest.raises(ProfileError, match=match):
        Profile.from_dict(d)


def test_a_recycling_profile_is_version_4_and_its_recipes_recycle(tmp_path):
    p = dataclasses.replace(synthetic_profile(), selection="divprune", merge=64, merge_rule="recycle")
    data = p.to_dict()
    assert data["version"] == 4 and data["merge_rule"] == "recycle"
    q = Profile.load(p.save(tmp_path / "p.json"))
    assert q.merge_rule == "recycle" and solve(q, 0.3).recipe.scoring.merge_rule == "recycle"
    assert "merge_rule" not in dataclasses.replace(p, merge_rule="context").to_dict()  # version 3 as before
    data["version"] = 3
    with pytest.raises(ProfileError, match=r"unknown field\(s\) \['merge_rule'\]"):
        Profile.from_dict(data)
    data.update(version=4, merge_rule="mean")
    with pytest.raises(ProfileError, match="merge_rule"):
        Profile.from_dict(data)


def test_version_2_files_have_no_selection_fields(tmp_path):
    d = dataclasses.replace(synthetic_profile(), selection="divprune").to_dict()
    d["version"] = 2
    with pytest.raises(ProfileError, match=r"unknown field\(s\) \['merge', 'selection', 'selection_search'\]"):
        Profile.from_dict(d)


def test_the_profiler_picks_the_variant_of_least_probe_damage_and_measures_its_grid_with_it(monkeypatch):
    with one_cpu_thread(torch.device("cpu")):
        model = tiny_llava(layers=3)
        batches = fake_batches(None, [Question("counting"), Question("reading")], 2, "cpu", torch.float32)
        measured = []  # the scoring of every measurement
        real = DamageMeter.measure

        def spy(self, schedule, n_visual, scoring=None):
            measured.append(self.scoring if scoring is None else scoring)
            return real(self, schedule, n_visual, scoring)

        monkeypatch.setattr(DamageMeter, "measure", spy)
        settings = ProfileSettings(grid_steps=2, batch_size=2, latency=False, probe_keeps=(1 / 4,),
                                   score_candidates=[{"attn_last": 1.0}], pre_llm_candidates=[{"magnitude": 1.0}],
                                   selection_candidates=VARIANTS)
        prof = profile_model(model, batches, QuantConfig(weight_method="rtn", a_clip_search=False), model_id="t",
                             model_hash="0" * 64, data_version="v", settings=settings)
    search = prof.selection_search
    assert search["probe_layers"] == [2, 0]
    assert [c["selection"] for c in search["candidates"]] == ["topk", "topk", "divprune", "divprune"]
    best = min(search["candidates"], key=lambda c: c["mean_kl"])
    assert (prof.selection, prof.merge) == (best["selection"], best["merge"])
    assert prof.merge_rule == best.get("merge_rule", "context")
    assert {s.merge_rule for s in measured} >= {"context", "recycle"}  # the recycling variant was probed
    probes = [s for s in measured if (s.selection, s.merge) != (prof.selection, prof.merge)]
    assert {(s.selection, s.merge) for s in probes} <= {(v["selection"], v["merge"]) for v in VARIANTS}
    grid = measured[-(3 * 2):]  # 3 layers x the 2 keep counts below N, measured last
    assert all(s == prof.scoring for s in grid)
    assert Profile.from_dict(prof.to_dict()).scoring == prof.scoring
