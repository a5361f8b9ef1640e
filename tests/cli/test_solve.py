import json

import numpy as np
import pytest

from quota.cli.main import main
from quota.cli.solve import parse_sweep
from quota.profiling.profile import Profile
from quota.recipe import Recipe
from tests.synthetic_profile import synthetic_profile


@pytest.fixture()
def profile_path(tmp_path):
    return synthetic_profile().save(tmp_path / "profile.json")


def test_solve_writes_a_feasible_recipe(tmp_path, profile_path, capsys):
    out = tmp_path / "r.json"
    assert main(["solve", "--profile", str(profile_path), "--budget", "0.3", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    recipe = Recipe.load(out)
    assert recipe.schedule == tuple(summary["schedule"])
    assert list(recipe.schedule) == sorted(recipe.schedule, reverse=True)
    assert recipe.equivalent_tokens <= 0.3 * 64 + 1e-9
    assert summary["status"] == "optimal" and recipe.solver["name"] in ("dp", "cpsat")
    assert {"flops", "kv", "latency"} <= set(summary["totals"])
    assert [r["tokens"] for r in summary["per_layer"]] == list(recipe.schedule)
    assert all(isinstance(r["tokens"], int) and set(r["costs"]) == set(summary["totals"]) for r in summary["per_layer"])


def test_keep_tokens_and_budget_kinds(tmp_path, profile_path, capsys):
    out = tmp_path / "r.json"
    assert main(["solve", "--profile", str(profile_path), "--keep-tokens", "16", "-o", str(out), "--json"]) == 0
    assert Recipe.load(out).equivalent_tokens <= 16
    capsys.readouterr()
    assert main(["solve", "--profile", str(profile_path), "--budget", "0.5", "--budget-kind", "flops",
                 "-o", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["totals"]["flops"] <= 0.5 * s["full"]["flops"] * (1 + 1e-9)


def test_human_output_has_table_and_bars(tmp_path, profile_path, capsys):
    assert main(["solve", "--profile", str(profile_path), "-o", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "tokens kept" in out and "█" in out and "equivalent tokens" in out and "TFLOPs" in out


def test_sweep_is_monotone_in_damage(tmp_path, profile_path, capsys):
    assert main(["solve", "--profile", str(profile_path), "--sweep", "0.2:0.8:0.2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["budget"] for r in rows] == [0.2, 0.4, 0.6, 0.8]
    damages = [r["objective"] for r in rows]
    assert damages == sorted(damages, reverse=True)


@pytest.mark.parametrize("argv,match", [
    (["--budget", "0"], "budget must lie in"), (["--budget", "1.5"], "budget must lie in"),
    (["--keep-tokens", "65"], "keep-tokens must lie in"), (["--sweep", "0.5:0.1:0.1"], "sweep"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, profile_path, capsys, argv, match):
    out = tmp_path / "r.json"
    assert main(["solve", "--profile", str(profile_path), "-o", str(out), *argv]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_corrupt_profile_names_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    d = synthetic_profile().to_dict()
    d["damage"]["kl"][0][0] = float("nan")
    bad.write_text(json.dumps(d))
    assert main(["solve", "--profile", str(bad), "-o", str(tmp_path / "r.json")]) == 2
    assert "damage.kl[0][0]" in capsys.readouterr().err


def test_parse_sweep():
    assert parse_sweep("0.1:0.3:0.1") == [0.1, 0.2, 0.3]


def test_inspect_shows_recipe_and_profile(tmp_path, profile_path, capsys):
    out = tmp_path / "r.json"
    main(["solve", "--profile", str(profile_path), "-o", str(out), "--json"])
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    assert "recipe" in capsys.readouterr().out
    assert main(["inspect", str(profile_path)]) == 0
    out = capsys.readouterr().out
    assert "profile" in out
    profile = Profile.load(profile_path)  # the smallest cut's damage: the per-layer terms summed from each layer on
    g = len(profile.grid) - 2
    for kind in ("kl", "task_loss"):
        values = [profile.damage[kind][layer:, g].sum() for layer in sorted({0, 1, 3, 4})]  # 6 layers: 0, L/4, L/2, 3L/4
        assert f"{kind} " + " / ".join(f"{v:.2f}" for v in values) in " ".join(out.split())


def test_default_profile_is_the_first_shipped_one_in_preference_order():
    from pathlib import Path

    import pytest

    from quota.allocate import DEFAULT_PROFILES, shipped_profile_path

    shipped = [n for n in DEFAULT_PROFILES if (Path(__file__).parents[2] / "profiles" / n).is_file()]
    if shipped:
        assert shipped_profile_path().name == shipped[0]
    else:
        with pytest.raises(FileNotFoundError, match="testbed_h200.json"):
            shipped_profile_path()
    with pytest.raises(FileNotFoundError, match="'nope.json'.*quota profile"):
        shipped_profile_path("nope.json")


def _noisy_profile(tmp_path, n_layers=80, candidates=129):
    """A 7B-sized profile with noisy curves, on which CP-SAT does not prove optimality in a fraction of a second."""
    from quota.profiling.profile import Profile
    from quota.solvers import synthetic_problem

    problem = synthetic_problem(n_layers, candidates, "noisy", seed=1)
    tokens = np.tile(np.asarray(problem.grid, dtype=np.float64), (n_layers, 1))
    base = synthetic_profile()
    return Profile(model_id="noisy", model_hash="0" * 64, n_layers=n_layers, n_visual_tokens=problem.n_tokens,
                   grid=tuple(problem.grid), damage={"kl": problem.damage}, costs={"tokens": tokens},
                   score_weights=base.score_weights, quant=base.quant).save(tmp_path / "noisy.json")


def test_an_unproven_schedule_is_written_only_with_accept_gap(tmp_path, capsys):
    """D4: a time limit hit is not a success: exit 3 with the gap and the bound, no recipe; --accept-gap inf
    writes it, and says it is not proven optimal."""
    path = _noisy_profile(tmp_path, candidates=65)
    out = tmp_path / "r.json"
    argv = ["solve", "--profile", str(path), "--solver", "cpsat", "--time-limit", "1.5", "-o", str(out), "--json"]
    code = main(argv)
    err = capsys.readouterr().err
    if code == 0:  # CP-SAT proved this instance within the limit: nothing to check here
        assert Recipe.load(out).solver["status"] == "optimal"
        return
    assert code == 3 and err.count("\n") == 1 and not out.exists()
    if "no feasible schedule" in err:  # a slow machine found none within the limit: also exit 3, no file
        return
    assert "gap" in err and "bound" in err
    code = main([*argv, "--accept-gap", "inf"])  # a timed run: it may end elsewhere than the first one
    err = capsys.readouterr().err
    if code == 3:
        assert "no feasible schedule" in err and not out.exists()
        return
    assert code == 0
    written = Recipe.load(out)
    assert written.solver["status"] == "optimal" or written.solver["gap"] > 0


def test_the_default_solver_solves_a_7b_sized_profile_exactly(tmp_path, capsys):
    path = _noisy_profile(tmp_path)
    assert main(["solve", "--profile", str(path), "-o", str(tmp_path / "r.json"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "optimal" and summary["solver"] == "dp"


@pytest.mark.parametrize("argv,code,match", [
    (["--time-limit", "0"], 2, "--time-limit: must be a positive, finite number"),
    (["--time-limit", "-1"], 2, "--time-limit: must be a positive, finite number"),
    (["--time-limit", "nan"], 2, "--time-limit: must be a positive, finite number"),
    (["--accept-gap", "-0.1"], 2, "--accept-gap: must be a number >= 0"),
    (["--solver", "cpsat", "--time-limit", "0.000001"], 3, "no feasible schedule within the time limit"),
    (["--aggregate", "max"], 2, "--aggregate and task weights apply to --damage per_task"),
    (["--damage", "per_task", "--aggregate", "weighted"], 2, "needs task weights"),
    (["--damage", "per_task", "--aggregate", "weighted", "--task-weights", "counting=1"], 2, "missing ['reading']"),
    (["--sweep", "0.1:0.3:0.1", "--solver", "cpsat", "--time-limit", "0.000001"], 3, "--sweep at budget 0.1"),
])
def test_solver_outcomes_and_bad_options_are_one_line_errors(tmp_path, profile_path, capsys, argv, code, match):
    out = tmp_path / "r.json"
    if code == 2 and argv[0] in ("--time-limit", "--accept-gap"):
        with pytest.raises(SystemExit) as exit_info:  # argparse rejects the value itself
            main(["solve", "--profile", str(profile_path), "-o", str(out), *argv])
        assert exit_info.value.code == 2
    else:
        assert main(["solve", "--profile", str(profile_path), "-o", str(out), *argv]) == code
    captured = capsys.readouterr()
    assert match in captured.err and "Traceback" not in captured.err
    assert captured.out == ""  # no status line before an error
    assert not out.exists()


def test_per_task_aggregates_change_the_objective(tmp_path, profile_path, capsys):
    objectives = {}
    for agg in (["--aggregate", "mean"], ["--aggregate", "max"],
                ["--aggregate", "weighted", "--task-weights", "counting=3,reading=1"]):
        assert main(["solve", "--profile", str(profile_path), "--damage", "per_task", *agg, "-o",
                     str(tmp_path / "r.json"), "--json"]) == 0
        objectives[agg[1]] = json.loads(capsys.readouterr().out)["objective"]
    # counting's curve is 3x reading's (1.5 vs 0.5 of kl): max = 1.5 kl, mean = 1.0 kl, weighted = 5.0 kl
    assert objectives["max"] == pytest.approx(1.5 / 1.0 * objectives["mean"], rel=1e-6)
    assert objectives["weighted"] == pytest.approx(5.0 * objectives["mean"], rel=1e-6)


def test_a_profile_directory_is_named(tmp_path, capsys):
    assert main(["solve", "--profile", str(tmp_path), "-o", str(tmp_path / "r.json")]) == 2
    assert "is a directory; give a profile JSON file" in capsys.readouterr().err


def test_human_output_explains_units_and_names_the_next_command(tmp_path, profile_path, capsys):
    assert main(["solve", "--profile", str(profile_path), "-o", str(tmp_path / "r.json")]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at 80 columns
    assert "predicted damage: the profile's estimate of the mean KL" in out
    assert f"next: quota apply {tmp_path / 'r.json'}" in out
    assert "share of N" in out


def test_the_cli_lists_match_the_library():
    from quota.cli.solve import BUDGET_KINDS, SOLVER_NAMES
    from quota.schedule import BUDGET_KINDS as LIBRARY_KINDS
    from quota.solvers import SOLVERS

    assert BUDGET_KINDS == LIBRARY_KINDS and set(SOLVER_NAMES) == set(SOLVERS)


def test_the_recipe_records_the_solving_environment(tmp_path, profile_path):
    from importlib import metadata

    assert main(["solve", "--profile", str(profile_path), "-o", str(tmp_path / "r.json")]) == 0
    versions = Recipe.load(tmp_path / "r.json").versions
    assert versions["ortools"] == metadata.version("ortools") and "torch" not in versions
