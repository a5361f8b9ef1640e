"""AllocationProblem: validation names the field, helpers compute costs, damage and violations."""

from __future__ import annotations

import numpy as np
import pytest

from quota.solvers import (
    AllocationProblem,
    CostCap,
    FixedLayer,
    LinearConstraint,
    MinKeepBefore,
    ProblemError,
    default_grid,
)

GRID = (0, 2, 4, 8)
L = 3


def base(**changes):
    fields = dict(
        n_tokens=8,
        grid=GRID,
        damage=np.array([[3.0, 2.0, 1.0, 0.0]] * L),
        budget=0.5,
        costs={"flops": np.tile([1.0, 2.0, 3.0, 5.0], (L, 1))},
    )
    fields.update(changes)
    return AllocationProblem(**fields)


def test_default_grid() -> None:
    grid = default_grid(576)
    assert len(grid) == 33 and grid[0] == 0 and grid[-1] == 576 and grid[1] == 18
    assert default_grid(576, steps=64)[:3] == (0, 9, 18)
    assert default_grid(100, steps=3, minimum=10) == (10, 33, 67, 100)
    with pytest.raises(ProblemError, match="minimum"):
        default_grid(10, minimum=11)


BAD = [
    ({"budget": 0.0}, "budget"),
    ({"budget": 1.5}, "budget"),
    ({"budget": float("nan")}, "budget"),
    ({"budget": "half"}, "budget"),
    ({"n_tokens": 0}, "n_tokens"),
    ({"grid": (0, 4, 2, 8)}, "grid"),
    ({"grid": (0, 2, 2, 8)}, "grid"),
    ({"grid": (0, 2, 4, 6)}, "grid"),
    ({"grid": (0, 2, 4, 9)}, "grid"),
    ({"grid": (-1, 2, 4, 8)}, "grid"),
    ({"grid": (0, 2.5, 4, 8)}, "grid"),
    ({"damage": np.array([[3.0, 2.0, np.nan, 0.0]] * L)}, "damage"),
    ({"damage": np.array([[3.0, np.inf, 1.0, 0.0]] * L)}, "damage"),
    ({"damage": np.zeros((L, 5))}, "damage"),
    ({"damage": np.zeros(4)}, "damage"),
    ({"costs": {"flops": np.tile([1.0, 3.0, 2.0, 5.0], (L, 1))}}, "costs['flops']"),
    ({"costs": {"flops": np.tile([-1.0, 2.0, 3.0, 5.0], (L, 1))}}, "costs['flops']"),
    ({"costs": {"flops": np.tile([1.0, np.nan, 3.0, 5.0], (L, 1))}}, "costs['flops']"),
    ({"costs": {"flops": np.ones((L + 1, 4))}}, "costs['flops']"),
    ({"costs": {"energy": np.ones((L, 4))}}, "costs has unknown kind"),
    ({"budget_kind": "kv"}, "budget_kind"),
    ({"budget_kind": "latency", "costs": {"latency": np.zeros((L, 4))}}, "costs['latency']"),
    ({"aggregate": "mean"}, "aggregate"),
    ({"monotone": "yes"}, "monotone"),
    ({"damage": np.zeros((2, L, 4)), "task_weights": [1.0]}, "task_weights"),
    ({"damage": np.zeros((2, L, 4)), "task_weights": [1.0, -1.0]}, "task_weights"),
    ({"extra_costs": [np.zeros((L, 3))]}, "extra_costs[0]"),
    ({"extra_costs": [np.zeros((L, 4))], "extra_weights": (1.0, 2.0)}, "extra_weights"),
    ({"extra_costs": [np.zeros((L, 4))], "extra_weights": (float("inf"),)}, "extra_weights[0]"),
    ({"constraints": [MinKeepBefore(L + 1, 2)]}, "constraints[0].layer"),
    ({"constraints": [MinKeepBefore(1, 9)]}, "constraints[0].tokens"),
    ({"constraints": [MinKeepBefore(1, 2), FixedLayer(L, 2)]}, "constraints[1].layer"),
    ({"constraints": [FixedLayer(-1, 2)]}, "constraints[0].layer"),
    ({"constraints": [FixedLayer(0, 3)]}, "constraints[0].tokens"),
    ({"constraints": [LinearConstraint(np.zeros((L, 2)), 1.0)]}, "constraints[0].coef"),
    ({"constraints": [LinearConstraint(np.zeros((L, 4)), 1.0, "<")]}, "constraints[0].sense"),
    ({"constraints": [LinearConstraint(np.zeros((L, 4)), float("nan"))]}, "constraints[0].rhs"),
    ({"constraints": [CostCap("kv", 10.0)]}, "constraints[0].kind"),
    ({"constraints": [CostCap("flops", float("inf"))]}, "constraints[0].value"),
    ({"constraints": ["keep 4"]}, "constraints[0]"),
]


@pytest.mark.parametrize("changes, field", BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_validation_names_the_field(changes, field) -> None:
    with pytest.raises(ProblemError) as info:
        base(**changes)
    assert str(info.value).startswith(field), str(info.value)


def test_normalizes_and_defaults() -> None:
    problem = base(grid=[0, 2, 4, 8], constraints=[FixedLayer(1, 4)])
    assert problem.grid == GRID and isinstance(problem.constraints, tuple)
    assert problem.n_layers == L and problem.n_candidates == 4 and problem.n_tasks == 1
    np.testing.assert_array_equal(problem.costs["tokens"], np.tile(GRID, (L, 1)))
    assert not problem.damage.flags.writeable
    assert problem.replace(budget=0.25).budget == 0.25
    with pytest.raises(ProblemError, match="budget"):
        problem.replace(budget=2.0)


def test_schedule_helpers() -> None:
    problem = base(
        damage=np.stack([np.array([[3.0, 2.0, 1.0, 0.0]] * L), np.array([[6.0, 1.0, 1.0, 0.0]] * L)]),
        aggregate="max_task",
        extra_costs=[np.tile([0.0, 0.0, 0.0, 1.0], (L, 1))],
        extra_weights=(0.5,),
        constraints=[MinKeepBefore(2, 4), CostCap("flops", 9.0)],
    )
    schedule = (8, 4, 2)
    assert problem.cost_of(schedule) == 14.0
    assert problem.cost_ratio(schedule) == pytest.approx(14 / 24)
    assert problem.cost_of(schedule, "flops") == 10.0
    assert problem.damage_of(schedule) == max(0 + 1 + 2, 0 + 1 + 1)
    assert problem.objective_of(schedule) == 3.0 + 0.5
    violations = problem.violations(schedule)
    assert len(violations) == 2
    assert any("budget" in v for v in violations) and any("CostCap" in v for v in violations)
    assert problem.violations((4, 4, 0)) == []
    assert problem.is_feasible((4, 4, 0))
    bad = problem.violations((4, 8, 0))
    assert any("monotone" in v for v in bad)
    assert any("MinKeepBefore" in v for v in problem.violations((8, 2, 0)))
    with pytest.raises(ProblemError, match="not in the grid"):
        problem.cost_of((8, 3, 0))
    with pytest.raises(ProblemError, match="entries"):
        problem.cost_of((8, 4))


def test_budget_boundary_is_feasible() -> None:
    """0.3 * 30 is 9.000000000000002 or so in binary; a schedule costing exactly 9 must fit."""
    problem = AllocationProblem(n_tokens=10, grid=tuple(range(11)), damage=np.zeros((3, 11)), budget=0.3)
    assert problem.is_feasible((3, 3, 3)) and problem.is_feasible((5, 4, 0))
    assert not problem.is_feasible((4, 3, 3))
