"""The solve_problem() front door: determinism, a full-size problem, budget sweeps, the result type."""

from __future__ import annotations

import json

import numpy as np
import pytest

from quota.solvers import SOLVERS, AllocationProblem, NoScheduleError, Solution, solve_problem, solve_sweep
from quota.solvers.relax import Relaxation
from tests.solvers.solver_cases import close, random_problem, realistic_problem


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_same_problem_same_schedule(name: str) -> None:
    """Twice on one object and once on an equal rebuilt object: the same schedule every time."""
    for seed in range(5):
        problem = random_problem(np.random.default_rng(40_000 + seed), layers=(6, 8), cands=(7, 9))
        rebuilt = AllocationProblem(
            n_tokens=problem.n_tokens,
            grid=problem.grid,
            damage=problem.damage.copy(),
            budget=problem.budget,
            costs={k: v.copy() for k, v in problem.costs.items()},
            budget_kind=problem.budget_kind,
            monotone=problem.monotone,
            task_weights=problem.task_weights,
            extra_costs=problem.extra_costs,
            extra_weights=problem.extra_weights,
            constraints=problem.constraints,
        )
        try:
            first = solve_problem(problem, name)
        except ValueError:  # infeasible draw
            continue
        assert solve_problem(problem, name).schedule == first.schedule
        assert solve_problem(rebuilt, name).schedule == first.schedule


def test_ties_resolve_the_same_way() -> None:
    """All-zero damage: every feasible schedule is optimal; repeated solves still agree."""
    problem = AllocationProblem(n_tokens=64, grid=tuple(range(0, 65, 8)), damage=np.zeros((8, 9)), budget=0.4)
    for name in ("cpsat", "mip"):
        schedules = {solve_problem(problem, name).schedule for _ in range(3)}
        assert len(schedules) == 1


def test_thirty_layers_thirty_three_candidates_is_proven_optimal() -> None:
    problem = realistic_problem(n_layers=30, steps=32)
    assert problem.n_candidates == 33
    solution = solve_problem(problem, "cpsat", time_limit=60.0)
    assert solution.status == "optimal"
    assert solution.gap == 0.0 and solution.lower_bound == solution.objective
    assert solution.cost_ratios["tokens"] <= 0.3 + 1e-12
    assert close(solution.objective, solve_problem(problem, "dp").objective)
    assert solve_problem(problem, "cpsat", hint=list(solution.indices)).schedule == solution.schedule


def test_sweep_reuses_one_lp_and_bounds_the_optimum() -> None:
    problem = realistic_problem(n_layers=12, steps=16, seed=3)
    budgets = [0.2, 0.35, 0.5, 0.8]
    relaxation = Relaxation(problem)
    assert relaxation.lp.is_dcp(dpp=True)
    sweep = solve_sweep(problem, budgets)
    assert [s.cost_ratios["tokens"] <= b + 1e-12 for s, b in zip(sweep, budgets)] == [True] * 4
    previous = np.inf
    for budget, relaxed in zip(budgets, sweep):
        exact = solve_problem(problem.replace(budget=budget), "dp")
        assert relaxed.lower_bound <= exact.objective + 1e-6
        assert relaxed.objective >= exact.objective - 1e-9
        assert relaxed.gap is not None and relaxed.gap >= 0
        single = solve_problem(problem.replace(budget=budget), "relax")
        assert single.schedule == relaxed.schedule
        assert relaxed.objective <= previous + 1e-9  # more budget never hurts
        previous = relaxed.objective


def test_solution_to_dict_is_json() -> None:
    problem = realistic_problem(n_layers=6, steps=8)
    for name in SOLVERS:
        solution = solve_problem(problem, name)
        assert isinstance(solution, Solution) and solution.requested == name
        assert solution.solver == ("dp" if name == "auto" else name)  # auto names the solver that ran
        data = json.loads(json.dumps(solution.to_dict()))
        assert data["schedule"] == list(solution.schedule)
        assert data["status"] in ("optimal", "feasible")
        assert set(data) >= {"schedule", "indices", "objective", "lower_bound", "status", "gap", "solve_time", "solver"}
        assert solution.solve_time >= 0


def test_time_limit_statuses() -> None:
    """Stopped by the time limit: a schedule with a bound, or NoScheduleError; never a wrong claim.

    (A run that finds no schedule raises NoScheduleError instead of returning status "unknown".)"""
    problem = realistic_problem(n_layers=40, steps=64, seed=5)
    for name in ("cpsat", "mip"):
        for limit in (1e-6, 0.2):
            try:
                solution = solve_problem(problem, name, time_limit=limit, accept_gap=float("inf"))
            except NoScheduleError as error:
                assert error.solver == name and error.time_limit == limit
                continue
            assert solution.status in ("optimal", "time_limit")
            assert problem.is_feasible(solution.schedule)
            assert solution.lower_bound is None or solution.lower_bound <= solution.objective
