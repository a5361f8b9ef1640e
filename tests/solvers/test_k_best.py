"""solve_k_best: the k least objectives over all feasible schedules (brute force), distinct, sorted,
with and without interactions and binding budgets; refusals and argument errors are one line."""

from __future__ import annotations

import numpy as np
import pytest

from quota.solvers import (
    InfeasibleError,
    LinearConstraint,
    SolverArgumentError,
    UnsupportedFeatureError,
    solve_k_best,
    solve_problem,
)
from tests.solvers.interaction_cases import ranked, small_problem


def _check(problem, found, values, k) -> None:
    expected = values[:k]
    got = np.array([s.objective for s in found])
    assert len(got) == len(expected)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert len({s.indices for s in found}) == len(found)
    keys = [(s.objective, s.indices) for s in found]
    assert keys == sorted(keys)
    for s in found:
        assert problem.is_feasible(s.schedule) and s.proven_optimal


@pytest.mark.parametrize("seed", range(80))
@pytest.mark.parametrize("interactions", [True, False])
@pytest.mark.parametrize("solver", ["dp", "cpsat", "auto"])
def test_k_best_matches_brute_force(seed: int, interactions: bool, solver: str) -> None:
    problem = small_problem(90_000 + seed, interactions=interactions)
    _, values = ranked(problem)
    k = int(np.random.default_rng(seed).integers(1, 40))
    if len(values) == 0:
        with pytest.raises(InfeasibleError):
            solve_k_best(problem, k, solver)
        return
    _check(problem, solve_k_best(problem, k, solver), values, k)


@pytest.mark.parametrize("seed", range(30))
def test_k_best_at_binding_budgets(seed: int) -> None:
    """Budgets at the median cost of the feasible schedules: half of them are cut."""
    problem = small_problem(91_000 + seed).replace(budget=1.0)
    schedules, _ = ranked(problem)
    if len(schedules) == 0:
        return
    costs = problem.costs["tokens"]
    used = costs[np.arange(problem.n_layers), schedules].sum(axis=1) / costs[:, -1].sum()
    tight = problem.replace(budget=max(float(np.median(used)), 1e-6))
    _, values = ranked(tight)
    for solver in ("dp", "cpsat"):
        _check(tight, solve_k_best(tight, 8, solver), values, 8)


def test_k_best_first_is_the_optimum_and_fewer_come_back_when_fewer_exist() -> None:
    problem = small_problem(5)
    _, values = ranked(problem)
    everything = solve_k_best(problem, len(values) + 10)
    assert len(everything) == len(values)
    assert everything[0].objective == solve_problem(problem, "auto").objective


@pytest.mark.parametrize("seed", range(20))
def test_float_budget_and_linear_rows_go_to_cpsat(seed: int) -> None:
    """The k-best DP refuses float budget costs and linear rows; auto enumerates them with CP-SAT."""
    problem = small_problem(92_000 + seed, float_budget=True)
    _, values = ranked(problem)
    if len(values) == 0:
        return
    with pytest.raises(UnsupportedFeatureError, match="integer multiples"):
        solve_k_best(problem, 4, "dp")
    found = solve_k_best(problem, 6, "auto")
    assert all(s.solver == "cpsat" for s in found)
    _check(problem, found, values, 6)
    row = LinearConstraint(np.ones((problem.n_layers, problem.n_candidates)), float(problem.n_layers), "<=")
    with pytest.raises(UnsupportedFeatureError, match="LinearConstraint"):
        solve_k_best(problem.replace(budget_kind="tokens", constraints=(*problem.constraints, row)), 2, "dp")


def test_k_best_memory_bound_names_the_size() -> None:
    problem = small_problem(6)
    with pytest.raises(UnsupportedFeatureError, match=r"k=1000 best .* MiB, above its memory bound") as info:
        solve_k_best(problem, 1000, "dp", max_bytes=2**10)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3"])
def test_bad_k_is_refused(k) -> None:
    with pytest.raises(SolverArgumentError, match="^k must be a positive integer"):
        solve_k_best(small_problem(7), k)


def test_unknown_solver_is_refused() -> None:
    with pytest.raises(SolverArgumentError, match="^solver must be one of auto, dp, cpsat"):
        solve_k_best(small_problem(7), 3, "mip")
