"""Randomized agreement: exact solvers against the DP oracle and brute force; bounds and heuristics."""

from __future__ import annotations

import numpy as np
import pytest

from quota.solvers import InfeasibleError, UnsupportedFeatureError, solve_problem
from tests.solvers.solver_cases import brute_force, close, feasible_mask, least_budget_cost, random_problem

EXACT = ("cpsat", "mip")


def _check_schedule(problem, solution) -> None:
    """The returned schedule is on the grid, feasible (independent check) and its objective is right."""
    assert solution.schedule is not None
    idx = np.array(problem.indices_of(solution.schedule))
    assert tuple(idx) == solution.indices
    assert feasible_mask(problem, idx[None])[0], (solution.solver, problem.violations(solution.schedule))
    assert problem.violations(solution.schedule) == []
    if problem.monotone:
        assert all(a >= b for a, b in zip(solution.schedule, solution.schedule[1:]))
    assert close(solution.objective, problem.objective_of(solution.schedule), 1e-12)


def _solve_all(problem, names):
    """name -> Solution, or the InfeasibleError raised."""
    out = {}
    for name in names:
        try:
            out[name] = solve_problem(problem, name)
        except InfeasibleError as error:
            out[name] = error
    return out


@pytest.mark.parametrize("seed", range(300))
def test_against_dp_oracle(seed: int) -> None:
    """cpsat and mip reach the DP optimum; relax bounds it from below; greedy is feasible and above it."""
    problem = random_problem(np.random.default_rng(seed))
    results = _solve_all(problem, ("dp", *EXACT, "relax", "greedy"))
    oracle = results["dp"]
    if isinstance(oracle, InfeasibleError):
        for name, result in results.items():
            assert isinstance(result, InfeasibleError), name
        return
    _check_schedule(problem, oracle)
    for name in EXACT:
        assert results[name].status == "optimal", name
        _check_schedule(problem, results[name])
        assert close(results[name].objective, oracle.objective), (name, results[name].objective, oracle.objective)
    relax = results["relax"]
    assert relax.lower_bound <= oracle.objective + 1e-6 * max(1.0, abs(oracle.objective))
    if relax.schedule is not None:
        _check_schedule(problem, relax)
        assert relax.objective >= oracle.objective - 1e-9 * max(1.0, abs(oracle.objective))
    greedy = results["greedy"]
    _check_schedule(problem, greedy)
    assert greedy.objective >= oracle.objective - 1e-9 * max(1.0, abs(oracle.objective))


@pytest.mark.parametrize("seed", range(250))
def test_against_brute_force(seed: int) -> None:
    """Tiny problems with float budget costs, caps, linear rows and both aggregates, by enumeration."""
    rng = np.random.default_rng(10_000 + seed)
    problem = random_problem(
        rng,
        layers=(2, 4),
        cands=(3, 5),
        integer_budget=bool(rng.random() < 0.5),
        rows=bool(rng.random() < 0.5),
        aggregate="max_task" if rng.random() < 0.4 else "sum",
    )
    best = brute_force(problem)
    results = _solve_all(problem, (*EXACT, "relax"))
    if best is None:
        for name, result in results.items():
            assert isinstance(result, InfeasibleError), name
        return
    optimum, _ = best
    for name in EXACT:
        assert not isinstance(results[name], InfeasibleError), (name, results[name])
        _check_schedule(problem, results[name])
        assert close(results[name].objective, optimum), (name, results[name].objective, optimum)
    relax = results["relax"]
    assert relax.lower_bound <= optimum + 1e-6 * max(1.0, abs(optimum))
    if relax.schedule is not None:
        _check_schedule(problem, relax)
        assert relax.objective >= optimum - 1e-9 * max(1.0, abs(optimum))
    try:
        greedy = solve_problem(problem, "greedy")
    except UnsupportedFeatureError:
        return
    _check_schedule(problem, greedy)
    assert greedy.objective >= optimum - 1e-9 * max(1.0, abs(optimum))


@pytest.mark.parametrize("seed", range(40))
def test_infeasible_message_states_least_cost(seed: int) -> None:
    """Budgets just below the least achievable cost: every solver raises, naming that cost and the budget."""
    rng = np.random.default_rng(20_000 + seed)
    problem = random_problem(rng, layers=(2, 4), cands=(3, 5), rows=False)
    least = least_budget_cost(problem)
    if least is None or least <= 0.02:
        return
    tight = problem.replace(budget=least * rng.uniform(0.3, 0.99))
    for name in ("dp", *EXACT, "relax", "greedy"):
        with pytest.raises(InfeasibleError) as info:
            solve_problem(tight, name)
        message = str(info.value)
        assert f"{least:.4f}" in message, (name, message)
        assert f"{tight.budget:.4f}" in message, (name, message)
        assert info.value.least_cost == pytest.approx(least)
        assert info.value.binding == "budget"


@pytest.mark.parametrize("seed", range(40))
def test_mid_size_exact_solvers_agree(seed: int) -> None:
    """Larger problems (8-14 layers, 8-14 candidates), beyond enumeration: cpsat, mip and dp agree."""
    rng = np.random.default_rng(60_000 + seed)
    problem = random_problem(rng, layers=(8, 14), cands=(8, 14), aggregate="max_task" if rng.random() < 0.3 else "sum")
    names = EXACT if problem.aggregate == "max_task" else ("dp", *EXACT)
    results = _solve_all(problem, (*names, "relax"))
    if any(isinstance(r, InfeasibleError) for r in results.values()):
        assert all(isinstance(r, InfeasibleError) for r in results.values())
        return
    reference = results[names[0]]
    for name in names:
        assert results[name].status == "optimal", name
        _check_schedule(problem, results[name])
        assert close(results[name].objective, reference.objective), (name, results[name].objective)
    assert results["relax"].lower_bound <= reference.objective + 1e-6 * max(1.0, abs(reference.objective))
