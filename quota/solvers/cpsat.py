"""Exact solver: OR-Tools CP-SAT on the order encoding of ``quota.solvers.encoding``.

Rows become integer rows under the rule of ``quota.solvers.scaling`` (never admits a schedule the
float check rejects, never excludes one meeting the row exactly); the objective is scaled by a
power of two to about 2**40 and rounded; the reported objective is the float one of the schedule.
``"max_task"`` adds an integer ``z >= sum_l damage_t[l, g_l]`` per task and minimizes ``z`` plus extras.

Presolve is off: in OR-Tools 9.15 it certified wrong optima and wrong infeasibility on small models
of this encoding (compare or-tools issues #5293 and #5274), and the encoding solves as fast without
it. The random tests against the DP oracle and brute force guard this. ``linearization_level = 2``
puts the implications into CP-SAT's LP, which gives the LP bound of the one-hot model: 30 layers x
33 candidates prove optimal in about 0.05 s with one worker (65 candidates: about 0.15 s).

Deterministic by default: one worker and a fixed seed give the same schedule for the same problem
(when the solve ends by proof rather than by the time limit).
"""

from __future__ import annotations

import time

import numpy as np
from ortools.sat.python import cp_model

from quota.solvers.constraints import Row
from quota.solvers.encoding import OrderLayout
from quota.solvers.problem import AllocationProblem
from quota.solvers.scaling import integer_objective, integer_row, objective_scale
from quota.solvers.solution import Solution

NAME = "cpsat"


class CpEncoding:
    """A CP-SAT model holding the order-encoding variables of one problem."""

    def __init__(self, allowed: np.ndarray, monotone: bool) -> None:
        self.layout = OrderLayout.build(allowed, monotone)
        self.contradiction = self.layout.contradiction
        self.model = cp_model.CpModel()
        self.y = [self.model.new_bool_var(f"y{i}") for i in range(self.layout.n_vars)]
        for a, b in self.layout.implications:
            self.model.add_implication(self.y[a], self.y[b])
        for var, value in self.layout.forced.items():
            self.model.add(self.y[var] == value)

    def expression(self, coef: np.ndarray) -> cp_model.LinearExpr:
        """``sum_l coef[l, g_l]`` for an integer ``[L, G]`` matrix, constant included."""
        weights, constant = self.layout.linear(coef.astype(np.int64))
        nonzero = np.flatnonzero(weights)
        return cp_model.LinearExpr.weighted_sum([self.y[i] for i in nonzero], weights[nonzero].tolist()) + int(constant)

    def add_rows(self, rows: tuple[Row, ...]) -> None:
        """Add each row under the integer scaling rule."""
        for row in rows:
            int_row = integer_row(row)
            weights, constant = self.layout.linear(int_row.coef)
            nonzero = np.flatnonzero(weights)
            if len(nonzero) == 0:
                self.contradiction |= int(constant) > int_row.rhs
                continue
            expr = cp_model.LinearExpr.weighted_sum([self.y[i] for i in nonzero], weights[nonzero].tolist())
            self.model.add(expr <= int_row.rhs - int(constant))

    def indices(self, solver: cp_model.CpSolver) -> list[int]:
        """The grid index of each layer in the solver's solution."""
        return self.layout.indices(np.array([solver.boolean_value(v) for v in self.y], dtype=np.int64))

    def add_hint(self, indices: list[int]) -> None:
        """Hint a schedule (grid indices) to the search."""
        for var, value in zip(self.y, self.layout.values_of(indices)):
            self.model.add_hint(var, bool(value))


def _objective(enc: CpEncoding, problem: AllocationProblem) -> tuple[float, float]:
    """Set the scaled objective on ``enc.model``; return ``(scale, shift)`` with
    ``true objective ~= integer objective / scale + shift``."""
    if problem.aggregate == "sum":
        scaled = integer_objective(problem.objective_matrix[None])
        enc.model.minimize(enc.expression(scaled.coef[0]))
        return scaled.scale, scaled.shift
    extra = problem.extra_matrix[None]
    scale = objective_scale(problem.task_matrices, extra)
    tasks = integer_objective(problem.task_matrices, scale)
    extras = integer_objective(extra, scale)
    upper = int(tasks.coef.max(axis=2).sum(axis=1).max())
    z = enc.model.new_int_var(0, upper, "worst_task")
    for t in range(tasks.coef.shape[0]):
        enc.model.add(z >= enc.expression(tasks.coef[t]))
    enc.model.minimize(z + enc.expression(extras.coef[0]))
    return scale, tasks.shift + extras.shift


def _solver(time_limit: float | None, num_workers: int, random_seed: int, log: bool) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    if time_limit is not None:
        solver.parameters.max_time_in_seconds = float(time_limit)
    solver.parameters.num_workers = int(num_workers)
    solver.parameters.random_seed = int(random_seed)
    solver.parameters.log_search_progress = bool(log)
    # OR-Tools 9.15's presolve certified wrong optima and wrong infeasibility on small models of this
    # encoding (compare or-tools issues #5293 and #5274); the model needs no presolve to be fast.
    solver.parameters.cp_model_presolve = False
    # Put the implications into the LP relaxation: the bound is then the (strong) LP bound of the
    # one-hot model; at the default level some knapsacks with non-convex curves stalled for minutes.
    solver.parameters.linearization_level = 2
    return solver


def solve_cpsat(
    problem: AllocationProblem,
    time_limit: float | None = 60.0,
    *,
    num_workers: int = 1,
    random_seed: int = 0,
    hint: list[int] | None = None,
    log: bool = False,
) -> Solution:
    """Solve ``problem`` exactly with CP-SAT.

    Status ``"optimal"`` (proven; ``lower_bound == objective``), ``"time_limit"`` (a schedule and a
    proven bound), or ``"unknown"`` (no schedule within ``time_limit`` seconds). Raises
    ``InfeasibleError`` when the model is proven infeasible. ``hint``: grid indices of a schedule to
    start from. ``num_workers > 1`` is faster on big problems but not deterministic."""
    from quota.solvers.diagnose import explain_infeasible

    start = time.perf_counter()
    enc = CpEncoding(problem.allowed, problem.monotone)
    enc.add_rows(problem.rows)
    if enc.contradiction:
        raise _infeasible(problem, explain_infeasible)
    scale, shift = _objective(enc, problem)
    if hint is not None:
        enc.add_hint(list(hint))
    solver = _solver(time_limit, num_workers, random_seed, log)
    status = solver.solve(enc.model)
    elapsed = time.perf_counter() - start
    if status == cp_model.INFEASIBLE:
        raise _infeasible(problem, explain_infeasible)
    if status == cp_model.MODEL_INVALID:
        raise RuntimeError(f"CP-SAT rejected the model: {enc.model.validate()}")
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        bound = _true_bound(solver.best_objective_bound, scale, shift, problem)
        return Solution.build(problem, None, status="unknown", solver=NAME, solve_time=elapsed, lower_bound=bound)
    idx = enc.indices(solver)
    _check(problem, idx)
    if status == cp_model.OPTIMAL:
        objective = float(problem.objective_of_indices(np.asarray(idx)))
        return Solution.build(problem, idx, status="optimal", solver=NAME, solve_time=elapsed, lower_bound=objective)
    bound = _true_bound(solver.best_objective_bound, scale, shift, problem)
    return Solution.build(problem, idx, status="time_limit", solver=NAME, solve_time=elapsed, lower_bound=bound)


def _true_bound(int_bound: float, scale: float, shift: float, problem: AllocationProblem) -> float:
    """A proven lower bound in float units from CP-SAT's integer bound, allowing for the rounding
    of the scaled objective (at most 1/2 per layer for each rounded matrix in the objective)."""
    slack = 0.5 * problem.n_layers * (1 if problem.aggregate == "sum" else 2)
    return (int_bound - slack) / scale + shift


def _check(problem: AllocationProblem, idx: list[int]) -> None:
    violations = problem.index_violations(idx)
    if violations:  # the scaling rule guarantees this never happens
        raise RuntimeError(f"CP-SAT returned a schedule violating {violations}")


def _infeasible(problem: AllocationProblem, explain) -> Exception:
    error = explain(problem)
    if error is None:
        return RuntimeError("CP-SAT proved infeasibility but the diagnosis found a feasible schedule")
    return error


def minimize_cost(
    problem: AllocationProblem, coef: np.ndarray, time_limit: float | None = 30.0
) -> tuple[str, float | None]:
    """The least ``sum_l coef[l, g_l]`` over schedules meeting every constraint except the budget
    (domains, monotonicity, ``LinearConstraint``, ``CostCap``), as ``(status, value)``: status
    ``"optimal"`` (value exact), ``"feasible"`` (value of the best schedule found, an upper bound),
    ``"infeasible"`` or ``"unknown"`` (value None). Used to explain infeasibility."""
    enc = CpEncoding(problem.allowed, problem.monotone)
    enc.add_rows(problem.extra_rows)
    if enc.contradiction:
        return "infeasible", None
    scaled = integer_objective(np.asarray(coef, dtype=np.float64)[None])
    enc.model.minimize(enc.expression(scaled.coef[0]))
    solver = _solver(time_limit, 1, 0, False)
    status = solver.solve(enc.model)
    if status == cp_model.INFEASIBLE:
        return "infeasible", None
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return "unknown", None
    idx = enc.indices(solver)
    value = float(np.asarray(coef)[np.arange(problem.n_layers), idx].sum())
    return ("optimal" if status == cp_model.OPTIMAL else "feasible"), value
