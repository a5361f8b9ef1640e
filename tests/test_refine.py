"""Measured refinement (issue 17): the k best predicted schedules are measured on held-out calibration questions
and the best measured one becomes the recipe, which records every candidate. The testbed is the tiny stand-in
of :mod:`tests.profiling.fake_testbed` (3 layers, 16 visual tokens); everything else is the real path."""

from __future__ import annotations

import json

import pytest

import quota.refine as refine_module
from quota.cli.main import main
from quota.quant.config import QuantConfig
from quota.recipe import Recipe
from quota.refine import DEFAULT_ANCHORS
from quota.solvers import solve_k_best
from quota.solvers.stagewise import best_stagewise
from quota.allocate import build_problem
from quota.profiling.profile import Profile
from tests.profiling import fake_testbed

RTN = QuantConfig(weight_method="rtn", w_clip_search=False, a_clip_search=False, kv_group_size=16)


@pytest.fixture
def profiled(monkeypatch, tmp_path):
    for module, name, value in fake_testbed.patches():
        monkeypatch.setattr(module, name, value)
    monkeypatch.setattr(refine_module.testbed, "load", fake_testbed.fake_load)
    monkeypatch.setattr(refine_module, "make_batches", fake_testbed.fake_batches)
    (tmp_path / "q.json").write_text(json.dumps(RTN.to_dict()))
    out = tmp_path / "p.json"
    assert main(["profile", "-o", str(out), "--limit", "4", "--grid-steps", "4", "--no-latency", "--quant",
                 str(tmp_path / "q.json"), "--batch-size", "4", "--device", "cpu"]) == 0
    return out


def test_the_best_measured_of_the_k_best_predicted_becomes_the_recipe(profiled, tmp_path, capsys):
    capsys.readouterr()
    assert main(["solve", "--profile", str(profiled), "--budget", "0.5", "--refine", "4", "--refine-questions", "3",
                 "--device", "cpu", "-o", str(tmp_path / "r.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    candidates, chosen = out["candidates"], out["chosen"]
    profile = Profile.load(profiled)
    problem = build_problem(profile, 0.5)
    expected = solve_k_best(problem, 4)
    anchors = best_stagewise(problem, DEFAULT_ANCHORS, exclude=[s.indices for s in expected])
    assert anchors  # the tiny profile has stage-wise schedules beside the k best, so both kinds are measured
    kbest = [c for c in candidates if c["origin"] == "k-best"]
    assert [c["schedule"] for c in kbest] == [list(s.schedule) for s in expected]  # the solver's k best
    assert [c["schedule"] for c in candidates[len(kbest):]] == [list(problem.schedule_of(i)) for i in anchors]
    assert all(c["origin"] == "stage-wise" for c in candidates[len(kbest):])
    assert [c["predicted"] for c in kbest] == sorted(c["predicted"] for c in kbest)
    assert chosen == min(range(len(candidates)), key=lambda i: (candidates[i]["measured"], candidates[i]["predicted"], i))
    assert all(c["measured"] == c["kl"] for c in candidates)  # the problem minimizes KL: KL is what is measured
    recipe = Recipe.load(tmp_path / "r.json")
    assert list(recipe.schedule) == candidates[chosen]["schedule"]
    assert recipe.equivalent_tokens <= 0.5 * recipe.n_visual_tokens + 1e-9
    record = recipe.solver["refinement"]
    assert record["chosen"] == chosen and record["k"] == 4 and record["questions"] == 3
    assert record["anchors"] == len(anchors)
    assert record["measured_damage"] == candidates[chosen]["measured"]
    assert record["predicted_damage"] == candidates[chosen]["predicted"]
    assert "refinement_split(3)" in record["data"]


def test_refinement_arguments_are_checked(profiled, tmp_path, capsys):
    capsys.readouterr()
    for extra, message in ((["--refine", "0"], "at least 1"), (["--refine", "2", "--solver", "greedy"], "auto, dp or cpsat"),
                           (["--refine", "2", "--refine-questions", "0"], "--refine-questions"),
                           (["--refine", "2", "--refine-anchors", "-1"], "--refine-anchors")):
        assert main(["solve", "--profile", str(profiled), *extra, "-o", str(tmp_path / "r.json")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_without_anchors_only_the_k_best_are_measured(profiled, tmp_path, capsys):
    capsys.readouterr()
    assert main(["solve", "--profile", str(profiled), "--budget", "0.5", "--refine", "3", "--refine-questions", "2",
                 "--refine-anchors", "0", "--device", "cpu", "-o", str(tmp_path / "r.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["origin"] for c in out["candidates"]] == ["k-best"] * 3
    assert Recipe.load(tmp_path / "r.json").solver["refinement"]["anchors"] == 0


def test_refinement_under_kl_teacher_measures_against_the_float_answers(profiled, tmp_path, capsys):
    profile = Profile.load(profiled)
    assert "kl_teacher" in profile.damage  # a quantizing config: the profile took the float testbed's answers
    capsys.readouterr()
    assert main(["solve", "--profile", str(profiled), "--budget", "0.5", "--damage", "kl_teacher", "--refine", "2",
                 "--refine-questions", "2", "--refine-anchors", "1", "--device", "cpu", "-o", str(tmp_path / "r.json"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    measured = [c["measured"] for c in out["candidates"]]
    assert len(measured) == 3 and all(m != c["kl"] for m, c in zip(measured, out["candidates"]))
    assert Recipe.load(tmp_path / "r.json").solver["refinement"]["damage"] == "kl_teacher"
