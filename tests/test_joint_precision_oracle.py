"""The joint program built from precision profiles, solved by every joint solver, against the brute-force oracle
(every precision vector and monotone keep schedule enumerated) on random small instances, with one and several
budgets of every kind, restricted option sets and absolute caps."""

from __future__ import annotations

import numpy as np
import pytest

from quota.profiling.precision_problem import build_joint_problem, joint_costs, solve_precision, time_quantum
from quota.solvers.errors import InfeasibleError
from tests.solvers.joint_cases import joint_brute_force
from tests.test_precision_profile import synthetic_precision_profile

KINDS = ("latency", "decode", "weight_bytes", "kv_bytes", "tokens", "flops")
ALL = ("w4a4", "w4a8", "fp8", "bf16")


def _instance(seed: int):
    rng = np.random.default_rng(seed)
    names = ALL if rng.random() < 0.5 else ("w4a4", "fp8", "bf16")
    pp = synthetic_precision_profile(n_layers=int(rng.integers(2, 4)), seed=seed, names=names, n_tokens=16,
                                     steps=int(rng.integers(2, 4)))
    kinds = [str(k) for k in rng.choice(KINDS, size=int(rng.integers(1, 3)), replace=False)]
    budgets = {k: float(rng.uniform(0.3, 1.0)) for k in kinds}
    allowed = None if rng.random() < 0.6 else tuple(sorted(rng.choice(names, 2, replace=False), key=names.index))
    return pp, budgets, allowed


@pytest.mark.parametrize("seed", range(16))
@pytest.mark.parametrize("solver", ["auto", "dp", "cpsat"])
def test_joint_solvers_match_the_oracle_on_precision_profiles(seed: int, solver: str) -> None:
    pp, budgets, allowed = _instance(seed)
    if solver == "dp" and len(budgets) > 1:
        budgets = dict(list(budgets.items())[:1])
    problem = build_joint_problem(pp, budgets, allowed)
    oracle = joint_brute_force(problem)
    if oracle is None:
        with pytest.raises(InfeasibleError, match="least achievable"):
            solve_precision(pp, budgets, allowed, solver)
        return
    result = solve_precision(pp, budgets, allowed, solver)
    assert result.solution.proven_optimal
    assert result.solution.objective == pytest.approx(oracle[0], abs=1e-9)
    assert not problem.violations(result.solution.precisions, result.solution.schedule)
    if allowed is not None:
        assert set(result.solution.precisions) <= set(allowed)


def test_costs_are_the_profiles_and_times_are_rounded_up_to_a_power_of_two():
    pp = synthetic_precision_profile()
    costs, quanta = joint_costs(pp)
    assert set(costs) >= {"ttft", "decode", "weight_bytes", "kv_bytes", "flops"}
    for kind, phase in (("ttft", "prefill"), ("decode", "decode")):
        q = quanta[kind]
        assert np.log2(q) == int(np.log2(q))
        assert np.all(costs[kind] >= pp.latency[phase][None]) and np.all(costs[kind] - pp.latency[phase][None] < q)
    assert time_quantum(1.0) == 2.0 ** -12
    ref = pp.precisions.index("bf16")
    assert np.allclose(costs["weight_bytes"][:, ref], 2e6)


def test_budget_fractions_and_absolute_caps_bound_the_solution():
    pp = synthetic_precision_profile()
    result = solve_precision(pp, {"latency": 0.7}, caps={"weight_bytes": 3e6})
    assert result.solution.cost_ratios["ttft"] <= 0.7 + 1e-9 and result.solution.costs["weight_bytes"] <= 3e6
    with pytest.raises(ValueError, match="joint budget kind 'energy'"):
        build_joint_problem(pp, {"energy": 0.5})


def test_uniform_restriction_keeps_bf16_as_the_unit():
    pp = synthetic_precision_profile()
    result = solve_precision(pp, {"weight_bytes": 0.25}, ["w4a4"])
    assert set(result.solution.precisions) == {"w4a4"}
    assert result.solution.cost_ratios["weight_bytes"] == pytest.approx(0.25)
