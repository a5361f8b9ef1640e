"""Exact joint solver: OR-Tools CP-SAT on the model of ``quota.solvers.joint_cpsat_model``.

Takes every feature of a ``JointProblem``: any number of budgets and ``CostCap`` rows, every domain
constraint, monotone or not, any curves. Integer rows follow ``quota.solvers.scaling``: exact when a
row's costs are integer multiples of a power of two (token counts, bytes, times rounded to
``2**-20`` s), else scaled so that no returned schedule violates the float row beyond the shared
tolerance (``FEAS_RTOL``) and no schedule meeting it exactly is excluded; ``"optimal"`` is therefore
optimal over the float rows up to that tolerance band. The reported objective is the float one.

Deterministic by default: one worker and a fixed seed give the same schedule for the same problem
(when the solve ends by proof rather than by the time limit).
"""

from __future__ import annotations

import numpy as np

from quota.solvers.cpsat_model import load_cp_model, make_solver
from quota.solvers.errors import NoScheduleError, SolverError
from quota.solvers.joint_cpsat_model import JointCpModel, minimize_joint_cost
from quota.solvers.joint_diagnose import explain_joint_infeasible
from quota.solvers.joint_problem import JointProblem
from quota.solvers.joint_solution import JointSolution
from quota.solvers.limits import Deadline

NAME = "cpsat"


def joint_infeasible_error(problem: JointProblem, solver: str) -> SolverError:
    """The diagnosis of a problem ``solver`` found infeasible: an ``InfeasibleError`` tagged with
    ``solver``, or a ``SolverError`` when the diagnosis finds a schedule after all."""
    error = explain_joint_infeasible(problem, joint=minimize_joint_cost)
    if error is None:
        return SolverError(f"solver {solver!r} proved infeasibility but the diagnosis found a schedule", solver=solver)
    error.solver = solver
    return error


def _bound(int_bound: float, scale: float, shift: float, n_layers: int) -> float | None:
    """A proven float lower bound from CP-SAT's integer bound (each layer's rounding is at most 1/2)."""
    return (int_bound - 0.5 * n_layers) / scale + shift if np.isfinite(int_bound) else None


def solve_joint_cpsat(
    problem: JointProblem,
    time_limit: float | None = 60.0,
    *,
    num_workers: int = 1,
    random_seed: int = 0,
    hint: tuple[list[int], list[int]] | None = None,
    log: bool = False,
) -> JointSolution:
    """Solve ``problem`` exactly with CP-SAT within ``time_limit`` seconds (None: no limit).

    Returns status ``"optimal"`` (proven; ``lower_bound == objective``) or ``"time_limit"`` (a schedule
    and CP-SAT's proven bound). Raises ``InfeasibleError`` when the model is proven infeasible (with the
    least achievable cost against the budget), ``NoScheduleError`` when no schedule was found within
    the limit, ``SolverArgumentError`` for a bad ``time_limit``. ``hint``: ``(precision indices, keep
    indices)`` of a schedule to start from. ``num_workers > 1`` is faster on big problems but not
    deterministic."""
    cp_model = load_cp_model()
    deadline = Deadline(time_limit)
    enc = JointCpModel(problem)
    enc.add_rows(problem.rows)
    if enc.contradiction:
        raise joint_infeasible_error(problem, NAME)
    scale, shift = enc.minimize(problem.objective_matrix)
    if hint is not None:
        enc.add_hint(list(hint[0]), list(hint[1]))
    solver = make_solver(deadline.remaining(), num_workers, random_seed, log)
    status = solver.solve(enc.model)
    elapsed = deadline.elapsed()
    if status == cp_model.INFEASIBLE:
        raise joint_infeasible_error(problem, NAME)
    if status == cp_model.MODEL_INVALID:
        raise SolverError(f"CP-SAT rejected the model: {enc.model.validate() or 'no reason given'}", solver=NAME)
    bound = _bound(solver.best_objective_bound, scale, shift, problem.n_layers)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise NoScheduleError(NAME, time_limit=deadline.limit, elapsed=elapsed, lower_bound=bound)
    p_idx, g_idx = enc.indices(solver)
    violations = problem.index_violations(p_idx, g_idx)
    if violations:  # the scaling rule guarantees this never happens
        raise SolverError(f"CP-SAT returned a schedule violating {violations}", solver=NAME)
    if status == cp_model.OPTIMAL:
        objective = float(problem.objective_of_indices(np.asarray(p_idx), np.asarray(g_idx)))
        return JointSolution.build(
            problem, p_idx, g_idx, status="optimal", solver=NAME, solve_time=elapsed, lower_bound=objective
        )
    return JointSolution.build(
        problem, p_idx, g_idx, status="time_limit", solver=NAME, solve_time=elapsed, lower_bound=bound
    )
