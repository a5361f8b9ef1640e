"""build_problem takes a profile's measured KL interaction terms (issue 17 item 4) unless told not to, and never
for the task-loss or per-task curves (the terms are measured in KL only)."""

import dataclasses

import numpy as np
import pytest

from quota.allocate import build_problem, solve
from quota.solvers import solve_problem
from tests.synthetic_profile import synthetic_profile


def profile_with_interactions(scale=0.5):
    p = synthetic_profile()
    g = len(p.grid)
    j = np.random.default_rng(1).normal(scale=scale, size=(p.n_layers - 1, g, g)) * np.tril(np.ones((g, g)), -1)
    return dataclasses.replace(p, interactions=j)


def test_kl_problems_pick_the_profile_interactions_up():
    p = profile_with_interactions()
    assert np.array_equal(build_problem(p, 0.3).interactions, p.interactions)
    assert build_problem(p, 0.3, use_interactions=False).interactions is None
    given = np.zeros_like(p.interactions)
    assert not build_problem(p, 0.3, interactions=given).interactions.any()


@pytest.mark.parametrize("damage", ["task_loss", "per_task"])
def test_other_damage_curves_use_no_interaction_terms(damage):
    assert build_problem(profile_with_interactions(), 0.3, damage=damage).interactions is None


def test_profiles_without_interactions_are_unchanged():
    p = synthetic_profile()
    assert build_problem(p, 0.3).interactions is None


def test_the_solved_objective_includes_the_terms():
    p = profile_with_interactions()
    with_terms = solve(p, 0.3, solver="dp", damage_fit="raw")  # the curves as given, so the sum below is exact
    without = solve_problem(build_problem(p, 0.3, use_interactions=False, damage_fit="raw"), "dp")
    idx = list(with_terms.solution.indices)
    pair_sum = sum(p.interactions[layer, a, b] for layer, (a, b) in enumerate(zip(idx, idx[1:])))
    additive = sum(p.damage["kl"][layer, g] for layer, g in enumerate(idx))
    assert with_terms.solution.objective == pytest.approx(additive + pair_sum)
    assert with_terms.solution.objective <= additive + pair_sum + 1e-9
    assert without.objective == pytest.approx(solve(dataclasses.replace(p, interactions=None), 0.3, solver="dp",
                                                    damage_fit="raw").solution.objective)


def test_the_heuristic_solvers_solve_the_additive_model_and_say_so(tmp_path, capsys):
    """relax and greedy cannot express pairwise terms: quota solve drops them for those solvers, with a note."""
    import numpy as np

    from quota.allocate import shipped_profile_path
    from quota.cli.main import main
    from quota.profiling.profile import Profile

    profile = Profile.load(shipped_profile_path())
    L, G = profile.n_layers, len(profile.grid)
    data = profile.to_dict()
    data["interactions"] = np.tril(np.full((L - 1, G, G), 0.01), -1).tolist()
    data["version"] = 2
    path = tmp_path / "p.json"
    path.write_text(__import__("json").dumps(data))
    assert Profile.load(path).interactions is not None
    assert main(["solve", "--profile", str(path), "--solver", "greedy", "-o", str(tmp_path / "r.json")]) == 0
    assert "ignores the profile's interaction terms" in capsys.readouterr().err
    assert main(["solve", "--profile", str(path), "-o", str(tmp_path / "r2.json")]) == 0
    assert "ignores" not in capsys.readouterr().err
