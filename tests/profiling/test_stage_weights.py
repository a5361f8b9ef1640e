"""Per-stage score weights in profiles: the profiler picks the pre-LLM weighting on calibration data (probes that
prune before layer 0) beside the in-LLM one, the profile records both (version 2; version 1 files still load and
a profile without them is written as before), and a solved recipe carries both."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import quota.profiling.measure as measure
from quota.allocate import solve
from quota.profiling.measure import ProfileSettings, profile_model
from quota.profiling.profile import Profile, ProfileError
from quota.profiling.sensitivity import DamageMeter
from quota.quant.config import QuantConfig
from quota.recipe import ScoringSpec
from quota.quantize.gptq import one_cpu_thread
from tests.profiling.fake_testbed import N_VISUAL, fake_batches
from tests.runtime.models import tiny_llava
from tests.synthetic_profile import synthetic_profile

PRE = {"vision_attn": 0.9, "magnitude": 0.1}


def staged_profile(**kw) -> Profile:
    search = {"probe_layer": 0, "probe_keeps": [7, 21], "candidates": [{"weights": PRE, "mean_kl": 0.5}]}
    return dataclasses.replace(synthetic_profile(), pre_llm_weights=dict(PRE), pre_llm_search=search, **kw)


def test_pre_llm_weights_round_trip_as_version_2(tmp_path):
    p = staged_profile()
    q = Profile.load(p.save(tmp_path / "p.json"))
    assert q.pre_llm_weights == PRE and q.pre_llm_search == p.pre_llm_search and q.score_weights == p.score_weights
    assert json.loads((tmp_path / "p.json").read_text())["version"] == 2
    assert q.stage_weights == {"pre_llm": PRE}


def test_a_profile_without_them_is_written_and_read_as_before(tmp_path):
    d = synthetic_profile().to_dict()
    assert d["version"] == 1 and "pre_llm_weights" not in d and "pre_llm_search" not in d
    q = Profile.from_dict(d)
    assert q.pre_llm_weights == {} and q.stage_weights is None
    v1 = staged_profile().to_dict()
    v1["version"] = 1  # the pre-LLM fields need version 2
    with pytest.raises(ProfileError, match=r"unknown field\(s\) \['pre_llm_search', 'pre_llm_weights'\] \(version 1\)"):
        Profile.from_dict(v1)


@pytest.mark.parametrize(
    "weights,match",
    [({"attn_last": 1.0}, r"pre_llm_weights\.attn_last: unknown score signal; signals that exist before layer 0"),
     ({"magnitude": -1.0}, r"pre_llm_weights\.magnitude = -1\.0 must be a finite non-negative number"),
     ({"magnitude": 0.0}, r"pre_llm_weights needs at least one positive weight")],
)
def test_bad_pre_llm_weights_are_named(weights, match):
    d = staged_profile().to_dict()
    d["pre_llm_weights"] = weights
    with pytest.raises(ProfileError, match=match):
        Profile.from_dict(d)


def test_the_solved_recipe_carries_both_stages():
    staged = solve(staged_profile(), 0.3).recipe
    assert staged.scoring.weights == {"attn_last": 0.6, "magnitude": 0.2, "risk": 0.2}
    assert staged.scoring.stage_weights == {"pre_llm": PRE} and staged.scoring.weights_at(0) == PRE
    plain = solve(synthetic_profile(), 0.3).recipe
    assert plain.scoring.stage_weights is None and "stage_weights" not in plain.to_dict()["scoring"]


class Question:
    def __init__(self, task):
        self.task = task


@pytest.fixture(scope="module")
def tiny():
    with one_cpu_thread(torch.device("cpu")):  # one thread for the module's tests, restored after
        model = tiny_llava(layers=3)
        batches = fake_batches(None, [Question("counting"), Question("reading")], 2, "cpu", torch.float32)
        yield model, batches


def test_the_profiler_records_both_choices_and_measures_layer_0_with_the_pre_llm_one(tiny, monkeypatch):
    model, batches = tiny
    measured = []  # (schedule, scoring) of every measurement
    real = DamageMeter.measure

    def spy(self, schedule, n_visual, scoring=None):
        measured.append((tuple(schedule), self.scoring if scoring is None else scoring))
        return real(self, schedule, n_visual, scoring)

    monkeypatch.setattr(DamageMeter, "measure", spy)
    in_candidates = [{"attn_last": 0.9, "magnitude": 0.1}, {"attn_text": 1.0}]
    pre_candidates = [{"vision_attn": 1.0}, {"magnitude": 1.0}, {"magnitude": 0.5, "risk": 0.5}]
    settings = ProfileSettings(grid_steps=2, batch_size=2, latency=False, score_candidates=in_candidates,
                               pre_llm_candidates=pre_candidates,
                               selection_candidates=[{"selection": "topk", "merge": 0}])  # weights only, here
    prof = profile_model(model, batches, QuantConfig(weight_method="rtn", a_clip_search=False), model_id="t",
                         model_hash="0" * 64, data_version="v", settings=settings)
    assert prof.score_weights in in_candidates and prof.pre_llm_weights in pre_candidates
    search = prof.pre_llm_search
    assert search["probe_layer"] == 0 and search["probe_keeps"] == [2, 5]  # 1/9 and 1/3 of 16
    assert [c["weights"] for c in search["candidates"]] == pre_candidates
    best = min(search["candidates"], key=lambda c: c["mean_kl"])
    assert best["weights"] == prof.pre_llm_weights and np.isfinite([c["mean_kl"] for c in search["candidates"]]).all()
    assert prof.score_search["probe_layer"] == 2 and len(prof.score_search["candidates"]) == 2
    # the pre-LLM probes prune before layer 0 with each candidate there and the chosen in-LLM weights elsewhere
    grid_runs = measured[-(3 * 2):]  # 3 layers x the grid's 2 keep counts below N, measured last
    pre_probes = [(s, sc) for s, sc in measured[:-len(grid_runs)] if s[0] < N_VISUAL]
    assert all(s[0] < N_VISUAL for s, _ in pre_probes) and all(sc.weights == prof.score_weights for _, sc in pre_probes)
    assert sorted(json.dumps(sc.weights_at(0), sort_keys=True) for _, sc in pre_probes) == sorted(
        json.dumps(w, sort_keys=True) for w in pre_candidates for _ in range(2))
    # the grid is measured with both choices: its layer-0 schedules on the pre-LLM weights
    expected = ScoringSpec(prof.score_weights, stage_weights={"pre_llm": prof.pre_llm_weights})
    assert all(sc == expected for _, sc in grid_runs) and any(s[0] < N_VISUAL for s, _ in grid_runs)
    assert Profile.from_dict(prof.to_dict()).pre_llm_weights == prof.pre_llm_weights


def test_without_vision_attention_its_candidates_are_skipped(tiny, monkeypatch):
    model, batches = tiny
    monkeypatch.setattr(measure, "vision_attention_unsupported", lambda model, spec: "no CLIP tower")
    meter = DamageMeter(model, batches, {"magnitude": 1.0}, reference_tokens=N_VISUAL)
    settings = ProfileSettings(probe_keeps=(1 / 4,), pre_llm_candidates=[{"vision_attn": 1.0}, {"magnitude": 1.0}])
    weights, search = measure.calibrate_pre_llm_weights(meter, 3, N_VISUAL, settings, {"attn_last": 1.0})
    assert weights == {"magnitude": 1.0} and [c["weights"] for c in search["candidates"]] == [{"magnitude": 1.0}]
    assert search["skipped"] == [{"weights": {"vision_attn": 1.0}, "why": "no CLIP tower"}]
    assert measure.calibrate_pre_llm_weights(meter, 3, N_VISUAL, ProfileSettings(pre_llm_candidates=[]),
                                             {"attn_last": 1.0}) == (None, {})
