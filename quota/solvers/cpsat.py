"""Exact solver: OR-Tools CP-SAT on the order encoding of ``quota.solvers.encoding``.

Rows become integer rows under the rule of ``quota.solvers.scaling`` (never admits a schedule the
float check rejects, never excludes one meeting the row exactly); the objective is scaled by a
power of two to about 2**40 and rounded; the reported objective is the float one of the schedule.
Model and settings: ``quota.solvers.cpsat_model``. 30 layers x 33 candidates prove optimal in about
0.05 s with one worker (65 candidates: about 0.15 s); 80 layers x 65-129 candidates often reach the
time limit (see docs/solvers.md).

Deterministic by default: one worker and a fixed seed give the same schedule for the same problem
(when the solve ends by proof rather than by the time limit).
"""

from __future__ import annotations

import numpy as np

from quota.solvers.cpsat_model import CpEncoding, load_cp_model, make_solver, set_objective, true_bound
from quota.solvers.errors import NoScheduleError, SolverError
from quota.solvers.infeasible import infeasible_error
from quota.solvers.limits import Deadline
from quota.solvers.problem import AllocationProblem
from quota.solvers.solution import Solution

NAME = "cpsat"


def problem_model(problem: AllocationProblem, name: str) -> tuple[CpEncoding, float, float]:
    """``(encoding, scale, shift)``: the CP-SAT model of ``problem`` (domains, order, every row) with its scaled
    objective (:func:`~quota.solvers.cpsat_model.set_objective`); ``InfeasibleError`` (naming solver ``name``) when
    the rows already contradict each other."""
    enc = CpEncoding(problem.allowed, problem.monotone)
    enc.add_rows(problem.rows)
    if enc.contradiction:
        raise infeasible_error(problem, name)
    scale, shift = set_objective(enc, problem)
    return enc, scale, shift


def solve_cpsat(
    problem: AllocationProblem,
    time_limit: float | None = 60.0,
    *,
    num_workers: int = 1,
    random_seed: int = 0,
    hint: list[int] | None = None,
    log: bool = False,
) -> Solution:
    """Solve ``problem`` exactly with CP-SAT within ``time_limit`` seconds (None: no limit).

    Returns status ``"optimal"`` (proven; ``lower_bound == objective``) or ``"time_limit"`` (a schedule
    and CP-SAT's proven bound). Raises ``InfeasibleError`` when the model is proven infeasible,
    ``NoScheduleError`` when no schedule was found within the limit, ``SolverArgumentError`` for a
    bad ``time_limit``. ``hint``: grid indices of a schedule to start from. ``num_workers > 1`` is
    faster on big problems but not deterministic."""
    cp_model = load_cp_model()
    deadline = Deadline(time_limit)
    enc, scale, shift = problem_model(problem, NAME)
    if hint is not None:
        enc.add_hint(list(hint))
    solver = make_solver(deadline.remaining(), num_workers, random_seed, log)
    status = solver.solve(enc.model)
    elapsed = deadline.elapsed()
    if status == cp_model.INFEASIBLE:
        raise infeasible_error(problem, NAME)
    if status == cp_model.MODEL_INVALID:
        raise SolverError(f"CP-SAT rejected the model: {enc.model.validate() or 'no reason given'}", solver=NAME)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        bound = true_bound(solver.best_objective_bound, scale, shift, problem)
        raise NoScheduleError(
            NAME, time_limit=deadline.limit, elapsed=elapsed, lower_bound=bound if np.isfinite(bound) else None
        )
    idx = enc.indices(solver)
    violations = problem.index_violations(idx)
    if violations:  # the scaling rule guarantees this never happens
        raise SolverError(f"CP-SAT returned a schedule violating {violations}", solver=NAME)
    if status == cp_model.OPTIMAL:
        objective = float(problem.objective_of_indices(np.asarray(idx)))
        return Solution.build(problem, idx, status="optimal", solver=NAME, solve_time=elapsed, lower_bound=objective)
    bound = true_bound(solver.best_objective_bound, scale, shift, problem)
    return Solution.build(problem, idx, status="time_limit", solver=NAME, solve_time=elapsed, lower_bound=bound)
