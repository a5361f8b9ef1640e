"""Why a joint problem is infeasible: the least achievable cost against its budget, and what binds.

Checked in order, each step exact:

1. a layer whose domain constraints (``MinKeepBefore``, ``FixedLayer``, ``AllowedPrecisions``) leave
   no (precision, keep count) pair;
2. domain constraints that conflict with monotonicity;
3. each budget or cap alone against its least achievable cost under the domain constraints and
   monotonicity: a shortest path over the layers on the per-(layer, keep) cheapest allowed option
   (with no budget dimension, taking the cheapest precision per keep count is exact);
4. with several rows, the first row's least cost subject to all the others, computed by a
   ``JointCost`` function the caller passes (CP-SAT's, exact): binding ``"budget+CostCap"`` etc., or
   the rows jointly when they conflict whatever the budget.

With one row (what the DP takes), steps 1-3 are the whole answer. This module imports no backend.

Fractions in messages and on the error are of the all-reference, all-tokens cost of the row's kind.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from quota.solvers.errors import InfeasibleError
from quota.solvers.joint_problem import JointProblem
from quota.solvers.paths import cheapest_schedule

DIAGNOSE_TIME_LIMIT = 30.0

JointCost = Callable[[JointProblem, int, float], tuple[str, "float | None"]]
"""``joint(problem, i, time_limit) -> (status, value)``: the least left-hand side of ``problem.rows[i]``
over schedules meeting every other row, the domain constraints and monotonicity; status ``"optimal"``,
``"feasible"`` (value is an upper bound), ``"infeasible"`` or ``"unknown"`` (value None)."""


def _error(problem: JointProblem, i: int, message: str, least: float | None, binding: str) -> InfeasibleError:
    return InfeasibleError(
        f"infeasible: {message}",
        least_cost=least,
        budget=problem.row_fraction(i),
        budget_kind=problem.row_kinds[i],
        binding=binding,
    )


def _what(problem: JointProblem, i: int) -> str:
    """A row as text: ``the ttft budget 0.4000`` or ``CostCap('kv_bytes' <= 1e+06) (0.3000 of full)``."""
    row, kind = problem.rows[i], problem.row_kinds[i]
    if row.kind == "budget":
        return f"the {kind} budget {problem.row_fraction(i):.4f}"
    return f"{row.name} ({problem.row_fraction(i):.4f} of full)"


def _domain_names(problem: JointProblem) -> list[str]:
    return list(dict.fromkeys(r for rs in problem.domain_reasons for r in rs))


def _kinds(names: list[str]) -> str:
    return "+".join(dict.fromkeys(name.split("(")[0] for name in names))


def least_row_cost(problem: JointProblem, i: int) -> float | None:
    """The least left-hand side of ``problem.rows[i]`` under the domain constraints and monotonicity
    alone (no other row), or None when those admit no schedule."""
    n_layers, n_prec, n_cand = problem.n_layers, problem.n_precisions, problem.n_candidates
    coef = problem.rows[i].coef.reshape(n_layers, n_prec, n_cand)
    cheapest = np.where(problem.allowed, coef, np.inf).min(axis=1)  # [L, G]: cheapest allowed option per keep
    found = cheapest_schedule(cheapest, problem.allowed.any(axis=1), problem.monotone)
    return None if found is None else found[0]


def explain_joint_infeasible(problem: JointProblem, joint: JointCost | None = None) -> InfeasibleError | None:
    """An ``InfeasibleError`` explaining why ``problem`` has no feasible schedule, or None if it has one.

    Without ``joint``, step 4 is skipped and None is returned when steps 1-3 find nothing (exact for
    problems with one row)."""
    names = _domain_names(problem)
    first = _what(problem, 0)
    for layer in range(problem.n_layers):
        if not problem.allowed[layer].any():
            reasons = problem.domain_reasons[layer]
            return _error(
                problem,
                0,
                f"no (precision, keep count) satisfies {', '.join(reasons)} at layer {layer}, whatever the budget "
                f"(least achievable cost: none; {first})",
                None,
                _kinds(reasons),
            )
    zeros = np.zeros((problem.n_layers, problem.n_candidates))
    if cheapest_schedule(zeros, problem.allowed.any(axis=1), problem.monotone) is None:
        return _error(
            problem,
            0,
            f"{', '.join(names)} conflict with monotonicity (k_0 >= k_1 >= ...), whatever the budget "
            f"(least achievable cost: none; {first})",
            None,
            _kinds(names) + "+monotone",
        )
    against = ", ".join(names) if names else "the cheapest option of every layer"
    leasts = []
    for i, row in enumerate(problem.rows):
        value = least_row_cost(problem, i)
        least = value / problem.full_cost(problem.row_kinds[i])
        leasts.append(least)
        if not row.holds(value):
            return _error(
                problem,
                i,
                f"the least achievable {problem.row_kinds[i]} cost is {least:.4f} of all-{problem.reference} "
                f"all-tokens, above {_what(problem, i)}; binding: it against {against}",
                least,
                row.kind,
            )
    if joint is None or len(problem.rows) == 1:
        return None
    status, value = joint(problem, 0, DIAGNOSE_TIME_LIMIT)
    others = ", ".join(_what(problem, i) for i in range(1, len(problem.rows)))
    binding = "+".join(dict.fromkeys(row.kind for row in problem.rows))
    if status == "infeasible":
        return _error(problem, 0, f"{first} and {others} cannot hold together, whatever the budget", None, binding)
    if value is not None and problem.rows[0].holds(value):
        return None
    kind = problem.row_kinds[0]
    if status != "optimal":
        return _error(
            problem,
            0,
            f"no schedule found; the least achievable {kind} cost under {others} could not be determined within "
            f"{DIAGNOSE_TIME_LIMIT:g} s (it is at least {leasts[0]:.4f} of full; {first})",
            leasts[0],
            binding,
        )
    least = value / problem.full_cost(kind)
    return _error(
        problem,
        0,
        f"the least achievable {kind} cost is {least:.4f} of all-{problem.reference} all-tokens under {others}, "
        f"above {first}; binding: the budgets together",
        least,
        binding,
    )
