"""The default joint solver ``"auto"``: the DP whenever the problem fits it, else CP-SAT.

- One budget row (one budget kind, or one ``CostCap``) within the DP's memory bound: the DP runs.
  With exact units (costs in integer multiples of a power of two) its answer is optimal
  (``solver == "dp"``). With rounded units (float costs) it is optimal when proven; otherwise CP-SAT
  runs next from the DP's schedule (a hint) with the time left, and the better schedule comes back
  with the better of the two proven bounds.
- Several rows: the DP solves each row alone first (each a relaxation of the problem, so each
  optimum is a lower bound). When one of those schedules meets every row it is optimal and returned
  (``solver == "dp"``); otherwise CP-SAT runs with the time left and the best relaxation bound is
  kept when it is above CP-SAT's own.
- A DP that does not fit (memory) or runs out of time: CP-SAT.

``JointSolution.note`` says which case applied.
"""

from __future__ import annotations

from typing import Any

from quota.solvers.dp import MAX_BYTES
from quota.solvers.errors import InfeasibleError, NoScheduleError, UnsupportedFeatureError
from quota.solvers.joint_cpsat import solve_joint_cpsat
from quota.solvers.joint_dp import solve_joint_dp
from quota.solvers.joint_problem import JointProblem
from quota.solvers.joint_solution import JointSolution
from quota.solvers.limits import Deadline

NAME = "auto"


def solve_joint_auto(
    problem: JointProblem, time_limit: float | None = 60.0, *, max_bytes: int = MAX_BYTES, **cpsat_options: Any
) -> JointSolution:
    """Solve ``problem`` with the joint DP when it fits, else CP-SAT (see the module docstring).

    ``time_limit`` (seconds, None: no limit) covers every stage. ``max_bytes``: the DP's memory bound.
    ``cpsat_options`` (``num_workers``, ``random_seed``, ``hint``, ``log``) go to CP-SAT when it runs.
    Raises what the solver that ran raises (``InfeasibleError``, ``NoScheduleError``...)."""
    deadline = Deadline(time_limit)
    if len(problem.rows) > 1:
        return _several_rows(problem, deadline, max_bytes, cpsat_options)
    try:
        dp = solve_joint_dp(problem, deadline.remaining(), max_bytes=max_bytes)
    except (UnsupportedFeatureError, NoScheduleError) as why:
        if deadline.expired():
            raise
        reason = why.feature if isinstance(why, UnsupportedFeatureError) else why.reason
        solution = solve_joint_cpsat(problem, deadline.remaining(), **cpsat_options)
        return solution.replace(solve_time=deadline.elapsed(), note=f"cpsat, because dp could not run ({reason})")
    if dp.proven_optimal:
        return dp.replace(note=f"dp ({dp.note})")
    options = {"hint": (list(dp.precision_indices), list(dp.indices)), **cpsat_options}
    try:
        cp = solve_joint_cpsat(problem, deadline.remaining(), **options)
    except NoScheduleError:
        cp = None
    if cp is not None and cp.proven_optimal:
        return cp.replace(solve_time=deadline.elapsed(), note=f"cpsat proved optimal from the dp schedule ({dp.note})")
    best = dp if cp is None or dp.objective <= cp.objective else cp
    bounds = [b for b in (dp.lower_bound, None if cp is None else cp.lower_bound) if b is not None]
    ran = "cpsat found no schedule" if cp is None else f"cpsat stopped at {cp.objective:.6g}"
    merged = JointSolution.build(
        problem,
        best.precision_indices,
        best.indices,
        status="feasible" if cp is None else "time_limit",
        solver=best.solver,
        solve_time=deadline.elapsed(),
        lower_bound=max(bounds) if bounds else None,
        note=f"dp rounded the budget and reached {dp.objective:.6g} ({dp.note}); {ran}",
    )
    return merged.replace(status="optimal") if merged.gap == 0 else merged


def _several_rows(
    problem: JointProblem, deadline: Deadline, max_bytes: int, cpsat_options: dict[str, Any]
) -> JointSolution:
    """Each row alone by the DP (a relaxation), then CP-SAT unless a relaxation's optimum is feasible."""
    bound, skipped = None, []
    for i in range(len(problem.rows)):
        try:
            alone = solve_joint_dp(problem.only_row(i), deadline.remaining(), max_bytes=max_bytes)
        except InfeasibleError:  # a relaxation without a schedule: neither has the problem
            raise
        except (UnsupportedFeatureError, NoScheduleError) as why:
            skipped.append(f"{problem.row_kinds[i]}: {type(why).__name__}")
            if deadline.expired():
                break
            continue
        if alone.lower_bound is not None:
            bound = alone.lower_bound if bound is None else max(bound, alone.lower_bound)
        if alone.proven_optimal and not problem.index_violations(alone.precision_indices, alone.indices):
            return JointSolution.build(
                problem,
                alone.precision_indices,
                alone.indices,
                status="optimal",
                solver="dp",
                solve_time=deadline.elapsed(),
                lower_bound=alone.objective,
                note=f"dp: the optimum under {problem.rows[i].name} alone meets every other row",
            )
    cp = solve_joint_cpsat(problem, deadline.remaining(), **cpsat_options)
    note = "cpsat, because no single-row dp optimum met every row"
    if skipped:
        note += f" (dp skipped {', '.join(skipped)})"
    if cp.proven_optimal or bound is None or (cp.lower_bound is not None and cp.lower_bound >= bound):
        return cp.replace(solve_time=deadline.elapsed(), note=note)
    merged = JointSolution.build(
        problem,
        cp.precision_indices,
        cp.indices,
        status=cp.status,
        solver=cp.solver,
        solve_time=deadline.elapsed(),
        lower_bound=bound,
        note=note + "; lower bound from the best single-row dp",
    )
    return merged.replace(status="optimal") if merged.gap == 0 else merged
