"""Why a problem is infeasible: the least achievable budget cost and the constraint that binds.

Checked in order, each step exact:

1. a layer whose domain constraints (``MinKeepBefore``, ``FixedLayer``) leave no grid value;
2. domain constraints that conflict with monotonicity;
3. the budget against the cheapest schedule meeting the domain constraints and monotonicity
   (a shortest-path DP): binding ``"budget"``;
4. each ``LinearConstraint`` / ``CostCap`` alone against its best achievable value;
5. the budget together with every other row: the cheapest budget cost subject to all of them,
   computed by a ``JointCost`` function the caller passes (CP-SAT's ``minimize_cost``, exact):
   binding ``"budget+CostCap"`` etc., or the rows jointly when they conflict.

Steps 1-4 are pure numpy; step 5 runs only when the problem has rows besides the budget and the
caller passes ``joint`` (this module imports no solver backend).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from quota.solvers.constraints import describe, layer_mask
from quota.solvers.errors import InfeasibleError
from quota.solvers.paths import cheapest_schedule
from quota.solvers.problem import AllocationProblem

DIAGNOSE_TIME_LIMIT = 30.0

JointCost = Callable[[AllocationProblem, np.ndarray, float], tuple[str, "float | None"]]
"""``joint(problem, coef, time_limit) -> (status, value)``: the least ``sum_l coef[l, g_l]`` over the
schedules meeting every constraint except the budget; status ``"optimal"``, ``"feasible"`` (value is
an upper bound), ``"infeasible"`` or ``"unknown"`` (value None)."""


def _error(problem: AllocationProblem, message: str, least: float | None, binding: str) -> InfeasibleError:
    return InfeasibleError(
        f"infeasible: {message}",
        least_cost=least,
        budget=problem.budget,
        budget_kind=problem.budget_kind,
        binding=binding,
    )


def _kinds(names: list[str]) -> str:
    return "+".join(dict.fromkeys(name.split("(")[0] for name in names))


def _forcing(problem: AllocationProblem, idx: np.ndarray) -> list[str]:
    """Constraints that force the cheapest schedule ``idx`` above each layer's cheapest grid value."""
    coef = problem.budget_row.coef
    names: list[str] = []
    for layer, g in enumerate(idx):
        if coef[layer, g] <= coef[layer].min():
            continue
        cheaper = coef[layer] < coef[layer, g]
        masks = [(c, layer_mask(c, problem.grid_array, layer)) for c in problem.constraints]
        binding = [describe(c) for c, mask in masks if mask is not None and (cheaper & ~mask).any()]
        if problem.monotone and (cheaper & problem.allowed[layer]).any():
            binding.append("monotone (k_l >= k_{l+1})")  # a cheaper value was allowed: a later layer forced g
        names += binding
    return list(dict.fromkeys(names))


def explain_infeasible(problem: AllocationProblem, joint: JointCost | None = None) -> InfeasibleError | None:
    """An ``InfeasibleError`` explaining why ``problem`` has no feasible schedule, or None if it has one.

    Without ``joint``, step 5 is skipped and None is returned when steps 1-4 find nothing; that is
    exact when every row besides the budget is ``<=`` with coefficients non-decreasing in k (the
    pointwise cheapest schedule then minimizes every row at once), and when there are no such rows."""
    kind = problem.budget_kind
    budget = f"the {kind} budget {problem.budget:.4f}"
    allowed = problem.allowed
    for layer in range(problem.n_layers):
        if not allowed[layer].any():
            reasons = problem.domain_reasons[layer]
            return _error(
                problem,
                f"no grid value satisfies {', '.join(reasons)} at layer {layer}, whatever the budget "
                f"(least achievable {kind} cost: none; {budget})",
                None,
                _kinds(reasons),
            )
    row = problem.budget_row
    full = problem.full_cost()
    cheapest = cheapest_schedule(row.coef, allowed, problem.monotone)
    if cheapest is None:
        reasons = list(dict.fromkeys(r for rs in problem.domain_reasons for r in rs))
        return _error(
            problem,
            f"{', '.join(reasons)} conflict with monotonicity (k_0 >= k_1 >= ...), whatever the budget "
            f"(least achievable {kind} cost: none; {budget})",
            None,
            _kinds(reasons) + "+monotone",
        )
    value, idx = cheapest
    least = value / full
    if not row.holds(value):
        forcing = _forcing(problem, idx)
        against = ", ".join(forcing) if forcing else f"the smallest grid value {problem.grid[0]}"
        return _error(
            problem,
            f"the least achievable {kind} cost is {least:.4f} of full, above {budget}; "
            f"binding: the budget against {against}",
            least,
            "budget",
        )
    for extra in problem.extra_rows:
        coef, _ = extra.as_upper()
        best = cheapest_schedule(coef, allowed, problem.monotone)
        best_lhs = float(extra.values(best[1]))
        if not extra.holds(best_lhs):
            return _error(
                problem,
                f"{extra.name} cannot hold: its best achievable value is {best_lhs:.6g} (needs {extra.sense} "
                f"{extra.rhs:.6g}); the least achievable {kind} cost {least:.4f} of full is within {budget}",
                least,
                extra.kind,
            )
    if joint is None or not problem.extra_rows:
        return None
    status, joint_value = joint(problem, row.coef, DIAGNOSE_TIME_LIMIT)
    names = ", ".join(r.name for r in problem.extra_rows)
    kinds = "+".join(dict.fromkeys(r.kind for r in problem.extra_rows))
    if status == "infeasible":
        return _error(
            problem,
            f"{names} cannot hold together, whatever the budget (least achievable {kind} cost: none; {budget})",
            None,
            kinds,
        )
    if joint_value is not None and row.holds(joint_value):
        return None
    if status != "optimal":
        return _error(
            problem,
            f"no schedule found; the least achievable {kind} cost under {names} could not be determined within "
            f"{DIAGNOSE_TIME_LIMIT:g} s (it is at least {least:.4f} of full; {budget})",
            least,
            "budget+" + kinds,
        )
    least = joint_value / full
    return _error(
        problem,
        f"the least achievable {kind} cost is {least:.4f} of full under {names}, above {budget}; "
        f"binding: the budget together with {names}",
        least,
        "budget+" + kinds,
    )
