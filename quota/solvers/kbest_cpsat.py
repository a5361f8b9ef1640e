"""The k best distinct schedules by CP-SAT with no-good cuts.

One model (``quota.solvers.cpsat_model``: order encoding, integer rows, scaled objective, pair
literals for interactions) is solved to proven optimality; its schedule is excluded by a no-good
clause over the order variables (a schedule is one assignment of them, pair literals follow), and the
model is solved again, up to k times or until it is infeasible. Each solve proves its schedule best
among those not yet listed, so the list is the k best distinct schedules, exact up to the objective
rounding of ``quota.solvers.scaling`` (schedules within about ``2L / 2**40`` of the objective range
may swap). Every feature of the problem is expressed. Cost: k CP-SAT solves, each a little harder
than the last.
"""

from __future__ import annotations

from quota.solvers.cpsat import problem_model
from quota.solvers.cpsat_model import load_cp_model, make_solver, true_bound
from quota.solvers.errors import NoScheduleError, SolverError
from quota.solvers.infeasible import infeasible_error
from quota.solvers.limits import Deadline
from quota.solvers.problem import AllocationProblem
from quota.solvers.solution import Solution

NAME = "cpsat"


def k_best_cpsat(
    problem: AllocationProblem, k: int, time_limit: float | None = 60.0, *, num_workers: int = 1, random_seed: int = 0
) -> list[Solution]:
    """Up to k distinct feasible schedules of least objective, in solve order (non-decreasing).

    Each proven one has status ``"optimal"`` and ``lower_bound`` its objective (no unlisted schedule is
    better). When ``time_limit`` (shared by all solves) stops a solve, its schedule, if any, is listed
    with status ``"time_limit"`` and CP-SAT's bound, and the enumeration ends there. Raises
    ``InfeasibleError`` when no schedule fits, ``NoScheduleError`` when the limit passes before the
    first schedule."""
    cp_model = load_cp_model()
    deadline = Deadline(time_limit)
    enc, scale, shift = problem_model(problem, NAME)
    out: list[Solution] = []
    while len(out) < k:
        solver = make_solver(deadline.remaining(), num_workers, random_seed, False)
        status = solver.solve(enc.model)
        if status == cp_model.INFEASIBLE:
            break
        if status == cp_model.MODEL_INVALID:
            raise SolverError(f"CP-SAT rejected the model: {enc.model.validate() or 'no reason given'}", solver=NAME)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            if not out:
                raise NoScheduleError(NAME, time_limit=deadline.limit, elapsed=deadline.elapsed())
            break
        idx = enc.indices(solver)
        violations = problem.index_violations(idx)
        if violations:  # the scaling rule guarantees this never happens
            raise SolverError(f"CP-SAT returned a schedule violating {violations}", solver=NAME)
        proven = status == cp_model.OPTIMAL
        objective = float(problem.objective_of_indices(idx))
        bound = objective if proven else true_bound(solver.best_objective_bound, scale, shift, problem)
        out.append(
            Solution.build(
                problem,
                idx,
                status="optimal" if proven else "time_limit",
                solver=NAME,
                solve_time=deadline.elapsed(),
                lower_bound=bound,
            )
        )
        if not proven or enc.layout.n_vars == 0:
            break
        values = enc.layout.values_of(idx)
        enc.model.add_bool_or([enc.y[i] if v == 0 else enc.y[i].Not() for i, v in enumerate(values)])
    if not out:
        raise infeasible_error(problem, NAME)
    return out
