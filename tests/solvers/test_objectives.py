"""Custom objectives and constraints: extra cost terms, max_task, latency caps, unsupported features."""

from __future__ import annotations

import numpy as np
import pytest

from quota.solvers import (
    AllocationProblem,
    CostCap,
    InfeasibleError,
    LinearConstraint,
    MinKeepBefore,
    UnsupportedFeatureError,
    solve_problem,
)
from tests.solvers.solver_cases import brute_force, close, monotone_damage, random_problem

ALL = ("cpsat", "mip", "relax", "dp", "greedy")


def _problem(rng, n_layers=5, n_cand=6, **changes):
    grid = tuple(int(v) for v in np.linspace(0, 40, n_cand).round())
    fields = dict(n_tokens=40, grid=grid, damage=monotone_damage(rng, (n_layers, n_cand)), budget=0.5)
    fields.update(changes)
    return AllocationProblem(**fields)


def test_extra_cost_term_moves_the_optimum() -> None:
    """A weighted bonus on one feasible schedule makes it optimal; weight 0 restores the original."""
    rng = np.random.default_rng(1)
    problem = _problem(rng)
    plain = solve_problem(problem, "dp")
    target = (40, 16, 16, 8, 0)  # cost 80 of 200: feasible at budget 0.5
    assert target != plain.schedule
    bonus = np.zeros((problem.n_layers, problem.n_candidates))
    bonus[np.arange(problem.n_layers), list(problem.indices_of(target))] = -1.0
    for name in ("cpsat", "mip", "dp", "relax"):
        steered = solve_problem(problem.replace(extra_costs=[bonus], extra_weights=(100.0,)), name)
        assert steered.schedule == target, name
        assert close(steered.objective, problem.damage_of(target) - 100.0 * problem.n_layers)
        neutral = solve_problem(problem.replace(extra_costs=[bonus], extra_weights=(0.0,)), name)
        assert close(neutral.objective, plain.objective), name


def test_extra_cost_penalty_trades_against_damage() -> None:
    """Penalizing kept tokens in late layers (e.g. a measured KV term) moves tokens to early layers."""
    rng = np.random.default_rng(2)
    problem = _problem(rng, damage=np.tile(np.linspace(1.0, 0.0, 6), (5, 1)), monotone=False)
    late = np.zeros((5, 6))
    late[3:] = np.linspace(0.0, 10.0, 6)
    plain = solve_problem(problem, "cpsat")
    steered = solve_problem(problem.replace(extra_costs=[late]), "cpsat")
    assert sum(steered.schedule[3:]) < sum(plain.schedule[3:]) or sum(plain.schedule[3:]) == 0
    assert steered.schedule[3:] == (0, 0)
    assert close(solve_problem(problem.replace(extra_costs=[late]), "dp").objective, steered.objective)


@pytest.mark.parametrize("seed", range(25))
def test_max_task_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(30_000 + seed)
    problem = random_problem(rng, layers=(2, 4), cands=(3, 5), aggregate="max_task", rows=False)
    best = brute_force(problem)
    if best is None:
        for name in ("cpsat", "mip", "greedy", "relax"):
            with pytest.raises(InfeasibleError):
                solve_problem(problem, name)
        return
    for name in ("cpsat", "mip", "greedy", "relax"):
        solution = solve_problem(problem, name)
        if name in ("cpsat", "mip"):
            assert close(solution.objective, best[0]), (name, solution.objective, best[0])
        else:
            assert solution.objective >= best[0] - 1e-9 * max(1.0, abs(best[0]))
        if name == "relax":
            assert solution.lower_bound <= best[0] + 1e-6 * max(1.0, abs(best[0]))


def test_max_task_differs_from_sum() -> None:
    """Two tasks that want tokens in different layers: the worst-task optimum balances them."""
    grid = (0, 5, 10)
    task_a = np.array([[10.0, 5.0, 0.0], [0.0, 0.0, 0.0]])
    task_b = np.array([[0.0, 0.0, 0.0], [10.0, 5.0, 0.0]])
    common = dict(n_tokens=10, grid=grid, damage=np.stack([task_a, task_b]), budget=0.5, monotone=False)
    worst = AllocationProblem(aggregate="max_task", **common)
    total = AllocationProblem(aggregate="sum", **common)
    for name in ("cpsat", "mip"):
        assert solve_problem(worst, name).schedule == (5, 5)
        assert solve_problem(worst, name).objective == 5.0
        assert solve_problem(total, name).objective == 10.0


def test_latency_cap_linear_constraint_is_respected() -> None:
    """A latency cap built from a measured latency curve binds where the token budget does not."""
    rng = np.random.default_rng(3)
    problem = _problem(rng, n_layers=6, n_cand=7, budget=0.6)
    latency = np.tile(np.linspace(1.0, 3.0, 7), (6, 1)) * np.linspace(2.0, 1.0, 6)[:, None]  # ms
    free = solve_problem(problem, "cpsat")
    used = float(latency[np.arange(6), list(free.indices)].sum())
    cap = LinearConstraint(latency, 0.9 * used, "<=", "latency_ms")
    capped = problem.replace(constraints=[cap])
    results = {name: solve_problem(capped, name) for name in ("cpsat", "mip", "relax", "greedy")}
    best = brute_force(capped)
    for name, solution in results.items():
        spent = float(latency[np.arange(6), list(solution.indices)].sum())
        assert spent <= 0.9 * used * (1 + 1e-9), name
        assert capped.is_feasible(solution.schedule)
    assert close(results["cpsat"].objective, best[0]) and close(results["mip"].objective, best[0])
    assert results["cpsat"].objective >= free.objective


def test_latency_budget_kind_and_cost_cap() -> None:
    """The budget can bound a float cost kind; a CostCap bounds a second kind absolutely."""
    rng = np.random.default_rng(4)
    latency = np.cumsum(rng.uniform(0.1, 1.0, (5, 6)), axis=1)
    kv = np.tile(np.linspace(0, 40, 6).round() * 64, (5, 1))
    problem = _problem(rng, costs={"latency": latency, "kv": kv}, budget_kind="latency", budget=0.7)
    capped = problem.replace(constraints=[CostCap("kv", 0.4 * kv[:, -1].sum())])
    best = brute_force(capped)
    for name in ("cpsat", "mip", "relax", "greedy"):
        solution = solve_problem(capped, name)
        assert capped.cost_of(solution.schedule, "kv") <= 0.4 * kv[:, -1].sum()
        assert capped.cost_ratio(solution.schedule) <= 0.7 + 1e-9
        assert solution.cost_ratios["latency"] == pytest.approx(capped.cost_ratio(solution.schedule))
        if name in ("cpsat", "mip"):
            assert close(solution.objective, best[0])


def test_greater_equal_linear_constraint() -> None:
    """A '>=' row (e.g. keep enough of a quality proxy) is honoured by the solvers that express it."""
    rng = np.random.default_rng(5)
    problem = _problem(rng, budget=0.8)
    quality = np.tile(np.linspace(0.0, 1.0, 6), (5, 1)) * np.array([5, 4, 3, 2, 1])[:, None]
    row = LinearConstraint(quality, 10.0, ">=", "quality")
    constrained = problem.replace(constraints=[row])
    best = brute_force(constrained)
    for name in ("cpsat", "mip"):
        solution = solve_problem(constrained, name)
        assert float(quality[np.arange(5), list(solution.indices)].sum()) >= 10.0 - 1e-9
        assert close(solution.objective, best[0])
    relax = solve_problem(constrained, "relax")
    assert relax.lower_bound <= best[0] + 1e-6
    with pytest.raises(UnsupportedFeatureError, match="greedy.*LinearConstraint"):
        solve_problem(constrained, "greedy")


def test_unsupported_features_name_solver_and_feature() -> None:
    rng = np.random.default_rng(6)
    problem = _problem(rng)
    cases = [
        (problem.replace(damage=np.stack([problem.damage] * 2), aggregate="max_task"), "max_task"),
        (problem.replace(constraints=[LinearConstraint(np.ones((5, 6)), 10.0)]), "LinearConstraint"),
        (problem.replace(constraints=[CostCap("tokens", 50.0)]), "CostCap"),
    ]  # a float budget kind is no longer unsupported: the DP rounds it (tests/solvers/test_dp.py)
    for case, feature in cases:
        with pytest.raises(UnsupportedFeatureError) as info:
            solve_problem(case, "dp")
        assert "'dp'" in str(info.value) and feature in str(info.value)
        assert info.value.solver == "dp"
        for name in ("cpsat", "mip", "relax"):  # every exact/relaxed solver expresses all of them
            solve_problem(case, name)
    with pytest.raises(ValueError, match="solver must be one of"):
        solve_problem(problem, "gurobi")


def test_min_keep_and_fixed_layer_infeasible_explanations() -> None:
    rng = np.random.default_rng(7)
    problem = _problem(rng)
    conflict = problem.replace(constraints=[MinKeepBefore(3, 24), MinKeepBefore(2, 0)])
    tight = conflict.replace(budget=0.3)
    for name in ALL:
        with pytest.raises(InfeasibleError) as info:
            solve_problem(tight, name)
        assert "0.3000" in str(info.value) and "MinKeepBefore(layer=3, tokens=24)" in str(info.value)
        assert "MinKeepBefore(layer=2, tokens=0)" not in str(info.value)  # it does not bind
        assert info.value.least_cost == pytest.approx(3 * 24 / 200)
    from quota.solvers import FixedLayer

    clash = problem.replace(constraints=[FixedLayer(1, 8), FixedLayer(2, 16)])
    for name in ALL:
        with pytest.raises(InfeasibleError, match="monotonicity") as info:
            solve_problem(clash, name)
        assert info.value.least_cost is None
    cap = problem.replace(constraints=[CostCap("tokens", 10.0), MinKeepBefore(1, 16)])
    for name in ("cpsat", "mip", "relax", "greedy"):
        with pytest.raises(InfeasibleError, match="CostCap") as info:
            solve_problem(cap, name)
        assert info.value.binding == "CostCap"
