"""The vectorized DP: exact against brute force, honest with rounded units, bounded, fast at 7B scale."""

from __future__ import annotations

import time

import numpy as np
import pytest

from quota.solvers import (
    AllocationProblem,
    InfeasibleError,
    NoScheduleError,
    UnsupportedFeatureError,
    solve_problem,
    solve_dp,
    synthetic_problem,
)
from quota.solvers.units import budget_units, dp_bytes
from tests.solvers.solver_cases import brute_force, close, curve_problem, feasible_mask, random_problem

EXACT = ("dp", "cpsat", "mip", "auto")


def _rel(value: float) -> float:
    return 1e-9 * max(1.0, abs(value))


def _check_feasible(problem: AllocationProblem, solution) -> None:
    idx = np.array(problem.indices_of(solution.schedule))
    assert feasible_mask(problem, idx[None])[0], (solution.solver, problem.violations(solution.schedule))
    assert close(solution.objective, problem.objective_of(solution.schedule), 1e-12)


@pytest.mark.parametrize("seed", range(200))
def test_exact_solvers_match_brute_force_on_arbitrary_curves(seed: int) -> None:
    """Non-monotone, negative and flat curves, 1-3 tasks, extras, domain constraints, monotone or not:
    dp, cpsat, mip and auto all reach the brute-force optimum and prove it."""
    problem = curve_problem(np.random.default_rng(70_000 + seed))
    best = brute_force(problem)
    for name in EXACT:
        if best is None:
            with pytest.raises(InfeasibleError):
                solve_problem(problem, name)
            continue
        solution = solve_problem(problem, name)
        assert solution.proven_optimal and solution.gap == 0.0, name
        _check_feasible(problem, solution)
        assert close(solution.objective, best[0]), (name, solution.objective, best[0])


@pytest.mark.parametrize("seed", range(120))
def test_dp_with_rounded_units_is_honest(seed: int) -> None:
    """Float budget costs: the DP's bound is below the optimum, its schedule feasible and above it, and
    it claims optimality only when it has reached the optimum."""
    rng = np.random.default_rng(80_000 + seed)
    problem = curve_problem(rng, float_budget=True)
    units = int(rng.choice([64, 256, 2**14]))
    best = brute_force(problem)
    if best is None:
        with pytest.raises(InfeasibleError):
            solve_dp(problem, float_units=units)
        return
    try:
        solution = solve_dp(problem, float_units=units)
    except NoScheduleError as error:  # every feasible schedule lies within rounding of the budget
        assert error.lower_bound is not None and error.lower_bound <= best[0] + _rel(best[0])
        return
    assert "rounded" in solution.note or "exact" in solution.note
    _check_feasible(problem, solution)
    assert solution.lower_bound <= best[0] + _rel(best[0]) <= solution.objective + 2 * _rel(best[0])
    if solution.proven_optimal:
        assert close(solution.objective, best[0])


@pytest.mark.parametrize("seed", range(60))
def test_dp_rounds_integer_costs_when_exact_units_do_not_fit(seed: int) -> None:
    """A memory bound too small for the exact units: the DP rounds, stays honest, and says so."""
    rng = np.random.default_rng(90_000 + seed)
    problem = random_problem(rng, layers=(2, 5), cands=(3, 6), domain_constraints=True)
    kv = np.cumsum(rng.integers(1, 400, (problem.n_layers, problem.n_candidates)), axis=1) * 1.0  # [L, G] bytes
    problem = problem.replace(costs={"kv": kv}, budget_kind="kv")
    max_bytes = dp_bytes(problem.n_layers, problem.n_candidates, 100)
    best = brute_force(problem)
    if best is None:
        with pytest.raises(InfeasibleError):
            solve_dp(problem, max_bytes=max_bytes)
        return
    try:
        solution = solve_dp(problem, max_bytes=max_bytes)
    except NoScheduleError:
        return
    units = budget_units(problem.budget_row, problem.n_candidates, solver="dp", max_bytes=max_bytes)
    if not units.exact:
        assert "memory bound" in solution.note
    _check_feasible(problem, solution)
    assert solution.lower_bound <= best[0] + _rel(best[0])
    assert solution.objective >= best[0] - _rel(best[0])
    if solution.proven_optimal:
        assert close(solution.objective, best[0])


def test_dp_refuses_beyond_its_memory_bound_naming_the_size() -> None:
    problem = synthetic_problem(80, 129)
    with pytest.raises(UnsupportedFeatureError) as info:
        solve_dp(problem, max_bytes=2**20)
    message = str(info.value)
    assert "'dp'" in message and "80 layers x 129 keep counts" in message and "MiB" in message
    assert "max_bytes" in message and "\n" not in message


def test_dp_time_limit_raises_no_schedule() -> None:
    problem = synthetic_problem(80, 129, "noisy")
    with pytest.raises(NoScheduleError) as info:
        solve_dp(problem, time_limit=1e-4)
    assert info.value.solver == "dp" and info.value.time_limit == 1e-4
    assert "1e-04 s" in str(info.value) or "0.0001 s" in str(info.value)


def test_dp_negative_and_rising_curves_prefer_dropping() -> None:
    """Damage that falls as tokens are dropped: the DP drops them even with budget to spare."""
    grid = (0, 4, 8)
    damage = np.array([[-1.0, 0.0, 0.0], [-2.0, 5.0, 0.0], [0.0, -1.0, 0.0]])
    problem = AllocationProblem(n_tokens=8, grid=grid, damage=damage, budget=1.0, monotone=False)
    assert solve_dp(problem).schedule == (0, 0, 4)
    assert solve_dp(problem.replace(monotone=True)).schedule == (0, 0, 0)


@pytest.mark.parametrize("shape", ["smooth", "staircase", "noisy"])
def test_eighty_layers_129_keep_counts_exact_in_seconds(shape: str) -> None:
    """A 7B-scale instance (80 layers x 129 keep counts, token budget 0.3 of 576) solves exactly.

    Cross-checks: the optimum is feasible, between the LP relaxation's bound and its rounded
    schedule, and equal to CP-SAT's where CP-SAT proves optimality within seconds (smooth)."""
    problem = synthetic_problem(80, 129, shape)
    start = time.perf_counter()
    solution = solve_problem(problem)  # auto: the DP fits
    elapsed = time.perf_counter() - start
    assert elapsed < 30.0, elapsed
    assert solution.solver == "dp" and solution.requested == "auto" and solution.proven_optimal
    assert "exact integer budget units" in solution.note
    _check_feasible(problem, solution)
    assert solution.cost_ratios["tokens"] <= 0.3 + 1e-12
    relax = solve_problem(problem, "relax")
    assert relax.lower_bound - 1e-6 * max(1.0, abs(relax.lower_bound)) <= solution.objective
    assert solution.objective <= relax.objective + _rel(relax.objective)
    if shape == "smooth":
        cpsat = solve_problem(problem, "cpsat", time_limit=20.0)
        assert close(cpsat.objective, solution.objective)


def test_dp_non_monotone_large_instance_beats_monotone() -> None:
    """Without monotonicity the optimum can only improve; both solve exactly at 80 x 65."""
    problem = synthetic_problem(80, 65, "noisy")
    monotone = solve_dp(problem)
    free = solve_dp(problem.replace(monotone=False))
    assert free.proven_optimal and monotone.proven_optimal
    assert free.objective <= monotone.objective + _rel(monotone.objective)
    assert any(b > a for a, b in zip(free.schedule, free.schedule[1:]))
