import json

import pytest

from quota.cli.main import main
from quota.cli.solve import parse_sweep
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
    assert summary["status"] == "optimal" and recipe.solver["name"] == "cpsat"
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
    assert "profile" in capsys.readouterr().out


def test_default_profile_is_the_first_shipped_one_in_preference_order():
    from pathlib import Path

    import pytest

    from quota.allocate import DEFAULT_PROFILES, shipped_profile_path

    shipped = [n for n in DEFAULT_PROFILES if (Path(__file__).parents[2] / "profiles" / n).is_file()]
    if shipped:
        assert shipped_profile_path().name == shipped[0]
    else:
        with pytest.raises(FileNotFoundError, match="testbed_h100.json"):
            shipped_profile_path()
    with pytest.raises(FileNotFoundError, match="'nope.json'.*quota profile"):
        shipped_profile_path("nope.json")
