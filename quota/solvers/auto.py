"""The default solver ``"auto"``: the DP whenever the problem fits it, else CP-SAT.

- The problem has no ``"max_task"`` aggregate, ``LinearConstraint`` or ``CostCap`` and fits the DP's
  memory bound (``max_bytes``): the DP runs. With exact budget units (token budgets always, integer
  costs generally) its answer is optimal and returned as is (``solver == "dp"``).
- The DP had to round the budget (float costs, or too many exact units) and could not prove its
  schedule optimal: CP-SAT runs next from the DP's schedule (as a hint) with the time left; the
  better schedule is returned with the better of the two proven bounds (``solver`` names the solver
  whose schedule it is; ``note`` says both ran).
- Otherwise (a side constraint the DP cannot express, the problem is too large for it, or its
  rounded units left no schedule): CP-SAT.

``Solution.note`` says which case applied and why.
"""

from __future__ import annotations

from typing import Any

from quota.solvers.cpsat import solve_cpsat
from quota.solvers.dp import MAX_BYTES, solve_dp
from quota.solvers.errors import NoScheduleError, UnsupportedFeatureError
from quota.solvers.limits import Deadline
from quota.solvers.problem import AllocationProblem
from quota.solvers.solution import Solution

NAME = "auto"


def solve_auto(
    problem: AllocationProblem, time_limit: float | None = 60.0, *, max_bytes: int = MAX_BYTES, **cpsat_options: Any
) -> Solution:
    """Solve ``problem`` with the DP when it fits, else CP-SAT (see the module docstring).

    ``time_limit`` (seconds, None: no limit) covers both stages. ``max_bytes``: the DP's memory bound.
    ``cpsat_options`` (``num_workers``, ``random_seed``, ``hint``, ``log``) go to CP-SAT when it runs.
    Raises what the solver that ran raises (``InfeasibleError``, ``NoScheduleError``...)."""
    deadline = Deadline(time_limit)
    try:
        dp = solve_dp(problem, deadline.remaining(), max_bytes=max_bytes)
    except UnsupportedFeatureError as why:
        solution = solve_cpsat(problem, deadline.remaining(), **cpsat_options)
        return solution.replace(solve_time=deadline.elapsed(), note=f"cpsat, because dp does not support {why.feature}")
    except NoScheduleError as why:
        if deadline.expired():
            raise
        solution = solve_cpsat(problem, deadline.remaining(), **cpsat_options)
        return solution.replace(
            solve_time=deadline.elapsed(), note=f"cpsat, because dp found no schedule ({why.reason})"
        )
    if dp.proven_optimal:
        return dp.replace(note=f"dp ({dp.note})")
    options = {"hint": list(dp.indices), **cpsat_options}
    try:
        cp = solve_cpsat(problem, deadline.remaining(), **options)
    except NoScheduleError:
        cp = None
    return _merge(problem, dp, cp, deadline)


def _merge(problem: AllocationProblem, dp: Solution, cp: Solution | None, deadline: Deadline) -> Solution:
    """The better schedule of the DP's and CP-SAT's, with the better proven bound."""
    if cp is not None and cp.proven_optimal:
        return cp.replace(solve_time=deadline.elapsed(), note=f"cpsat proved optimal from the dp schedule ({dp.note})")
    best = dp if cp is None or dp.objective <= cp.objective else cp
    bounds = [b for b in (dp.lower_bound, None if cp is None else cp.lower_bound) if b is not None]
    ran = "cpsat found no schedule" if cp is None else f"cpsat stopped at {cp.objective:.6g}"
    merged = Solution.build(
        problem,
        best.indices,
        status="time_limit" if cp is not None else "feasible",
        solver=best.solver,
        solve_time=deadline.elapsed(),
        lower_bound=max(bounds) if bounds else None,
        note=f"dp rounded the budget and reached {dp.objective:.6g} ({dp.note}); {ran}",
    )
    return merged.replace(status="optimal") if merged.gap == 0 else merged
