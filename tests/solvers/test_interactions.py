"""Interaction terms between adjacent layers: exact in dp, cpsat, mip and auto against brute force;
zero interactions reproduce the additive answers; validation and refusals are one line."""

from __future__ import annotations

import numpy as np
import pytest

from quota.solvers import (
    InfeasibleError,
    ProblemError,
    UnsupportedFeatureError,
    solve_problem,
    synthetic_problem,
)
from quota.solvers.dp import solve_dp
from tests.solvers.interaction_cases import oracle_objective, ranked, small_problem
from tests.solvers.solver_cases import random_problem

EXACT = ("dp", "cpsat", "mip", "auto")


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


@pytest.mark.parametrize("seed", range(120))
def test_exact_solvers_match_brute_force_with_interactions(seed: int) -> None:
    """2-5 layers x 2-5 keep counts, arbitrary curves and interactions, budgets from loose to binding:
    every exact solver proves the brute-force optimum over all (non-increasing) schedules."""
    problem = small_problem(81_000 + seed)
    schedules, values = ranked(problem)
    for solver in EXACT:
        if len(values) == 0:
            with pytest.raises(InfeasibleError):
                solve_problem(problem, solver)
            continue
        solution = solve_problem(problem, solver)
        assert solution.proven_optimal, (solver, solution.note)
        assert _close(solution.objective, float(values[0])), (solver, solution.objective, values[0])
        assert _close(solution.objective, float(oracle_objective(problem, np.array(solution.indices))[0]))
        assert problem.is_feasible(solution.schedule)


@pytest.mark.parametrize("seed", range(40))
def test_binding_budgets_with_interactions(seed: int) -> None:
    """At the least feasible budget and just above it the budget binds; still exact."""
    problem = small_problem(82_000 + seed).replace(budget=1.0)
    costs = problem.costs["tokens"]
    schedules, _ = ranked(problem)
    if len(schedules) == 0:
        return
    used = costs[np.arange(problem.n_layers), schedules].sum(axis=1) / costs[:, -1].sum()
    for budget in sorted({float(np.min(used)), float(np.median(used))}):
        tight = problem.replace(budget=max(budget, 1e-6))
        _, values = ranked(tight)
        for solver in ("dp", "cpsat", "mip"):
            solution = solve_problem(tight, solver)
            assert _close(solution.objective, float(values[0])), (solver, budget)


@pytest.mark.parametrize("seed", range(30))
def test_float_budget_with_interactions(seed: int) -> None:
    """Float budget costs: the DP rounds its units and reports a proven bound; auto proves the optimum."""
    problem = small_problem(83_000 + seed, float_budget=True)
    _, values = ranked(problem)
    if len(values) == 0:
        return
    dp = solve_dp(problem)
    assert dp.lower_bound <= float(values[0]) + 1e-9 and dp.objective >= float(values[0]) - 1e-9
    assert _close(solve_problem(problem, "auto").objective, float(values[0]))


@pytest.mark.parametrize("seed", range(40))
def test_zero_interactions_give_the_additive_answers(seed: int) -> None:
    """An all-zero interactions array changes neither the schedule nor the objective of dp and auto,
    nor the objective of cpsat and mip."""
    base = random_problem(np.random.default_rng(84_000 + seed), layers=(2, 7), rows=False)
    if base.n_layers < 2:
        return
    shape = (base.n_layers - 1, base.n_candidates, base.n_candidates)
    zero = base.replace(interactions=np.zeros(shape))
    for solver in EXACT:
        try:
            plain = solve_problem(base, solver)
        except (InfeasibleError, UnsupportedFeatureError) as error:
            with pytest.raises(type(error)):
                solve_problem(zero, solver)
            continue
        paired = solve_problem(zero, solver)
        assert paired.objective == plain.objective, solver
        if solver in ("dp", "auto"):
            assert paired.schedule == plain.schedule, solver


def test_interactions_at_7b_scale_dp_matches_cpsat() -> None:
    """30 layers x 19 keep counts with random interactions: dp and cpsat agree on the optimum."""
    base = synthetic_problem(30, 19, budget=0.3, seed=3)
    rng = np.random.default_rng(3)
    scale = float(np.abs(base.objective_matrix).mean())
    inter = rng.normal(scale=scale, size=(base.n_layers - 1, base.n_candidates, base.n_candidates))
    problem = base.replace(interactions=inter)
    dp = solve_problem(problem, "dp")
    cp = solve_problem(problem, "cpsat", time_limit=120)
    assert dp.proven_optimal and cp.proven_optimal
    assert _close(dp.objective, cp.objective)


def test_interactions_validation_is_one_line() -> None:
    problem = small_problem(1)
    shape = (problem.n_layers - 1, problem.n_candidates, problem.n_candidates)
    with pytest.raises(ProblemError, match=r"^interactions must have shape") as info:
        problem.replace(interactions=np.zeros((problem.n_layers, problem.n_candidates, problem.n_candidates)))
    assert "\n" not in str(info.value)
    bad = np.zeros(shape)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ProblemError, match=r"^interactions must be finite"):
        problem.replace(interactions=bad)
    with pytest.raises(ProblemError, match=r"^interactions must have 3 dimensions"):
        problem.replace(interactions=np.zeros(3))


@pytest.mark.parametrize("solver", ["relax", "greedy"])
def test_heuristics_refuse_interactions(solver: str) -> None:
    problem = small_problem(2)
    with pytest.raises(UnsupportedFeatureError, match="interactions") as info:
        solve_problem(problem, solver)
    assert "\n" not in str(info.value)
