"""Greedy marginal-gain baseline.

Start from the largest allowed schedule (all layers at N when unconstrained) and repeatedly take the
lowering move (``quota.solvers.moves``: lower layer l to a smaller grid value and, under
monotonicity, clip the later layers to it) with the least objective increase per unit of cost saved
on the rows still violated, until the budget and every cap hold. No optimality claim: status
``"feasible"``, no lower bound.

It expresses every aggregate (the objective change of a move is computed exactly), extra objective
terms, domain constraints, monotonicity on or off, ``CostCap`` and ``LinearConstraint`` rows that are
``<=`` with coefficients non-decreasing in k (lowering never hurts them); other ``LinearConstraint``
rows raise ``UnsupportedFeatureError``. With such rows it finds a schedule whenever one exists: the
pointwise cheapest allowed schedule minimizes every such row at once and lowering moves reach it.
"""

from __future__ import annotations

from quota.solvers.diagnose import explain_infeasible
from quota.solvers.errors import NoScheduleError
from quota.solvers.features import require_supported
from quota.solvers.limits import Deadline
from quota.solvers.moves import lower_until_feasible, top_schedule
from quota.solvers.problem import AllocationProblem
from quota.solvers.solution import Solution

NAME = "greedy"


def solve_greedy(problem: AllocationProblem, time_limit: float | None = None) -> Solution:
    """Greedy schedule for ``problem`` (``time_limit`` is checked, then ignored: greedy is fast).

    Status ``"feasible"``, no lower bound. Raises ``InfeasibleError`` when no schedule meets the budget
    and constraints (the diagnosis without a joint step is exact for the rows greedy accepts)."""
    deadline = Deadline(time_limit)
    require_supported(problem, NAME, linear_constraints="cost_like", interactions=False)
    idx = top_schedule(problem)
    if idx is not None:
        idx = lower_until_feasible(problem, idx)
    if idx is None:
        error = explain_infeasible(problem)
        if error is not None:
            error.solver = NAME
            raise error
        raise NoScheduleError(NAME, time_limit=deadline.limit, elapsed=deadline.elapsed(), reason="greedy lowering")
    return Solution.build(problem, idx, status="feasible", solver=NAME, solve_time=deadline.elapsed())
