"""Exact solver: OR-Tools ``pywraplp`` with SCIP, on the order encoding of ``quota.solvers.encoding``.

Binary ``y`` variables, implications as ``y_a <= y_b``, every row and the objective in float
coefficients (rows divided by their scale so SCIP's tolerances are relative). SCIP runs with
``numerics/feastol = 1e-9``, a zero gap limit and one thread, so the same problem gives the same
schedule. The returned schedule is checked against the float rows with the shared tolerance rule;
if SCIP's own tolerance let a row slip, the row's right-hand side is tightened by the excess and
the model re-solved (at most ``MAX_TIGHTEN`` times). ``"max_task"`` uses an epigraph variable;
``interactions`` use the exact pair linearization of ``quota.solvers.pairs``.

OR-Tools is imported on first use (``_pywraplp``), so importing this module does not load it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from quota.solvers.constraints import Row
from quota.solvers.encoding import OrderLayout
from quota.solvers.errors import NoScheduleError, SolverError
from quota.solvers.infeasible import infeasible_error
from quota.solvers.limits import Deadline
from quota.solvers.pairs import flow_rows, onehot_terms, usable_pairs
from quota.solvers.problem import AllocationProblem
from quota.solvers.solution import Solution

NAME = "mip"
MAX_TIGHTEN = 3
_SCIP_PARAMS = "numerics/feastol = 1e-9\nlimits/gap = 0\nlimits/absgap = 0\n"


def _pywraplp() -> ModuleType:
    """``ortools.linear_solver.pywraplp``, imported lazily: OR-Tools is a heavy dependency that plain
    ``import quota.solvers`` must not load."""
    from ortools.linear_solver import pywraplp  # lazy: heavy optional dependency (OR-Tools)

    return pywraplp


def _build(problem: AllocationProblem, layout: OrderLayout, rows: list[tuple[Row, float]]) -> tuple[Any, list]:
    """A SCIP model; ``rows`` pairs each row with an extra tightening of its right-hand side."""
    solver = _pywraplp().Solver.CreateSolver("SCIP")
    if solver is None:  # pragma: no cover - SCIP ships with ortools wheels
        raise SolverError("OR-Tools was built without SCIP", solver=NAME)
    y = [solver.BoolVar(f"y{i}") for i in range(layout.n_vars)]
    for a, b in layout.implications:
        solver.Add(y[a] <= y[b])
    for var, value in layout.forced.items():
        y[var].SetBounds(value, value)
    for row, tighten in rows:
        coef, rhs = row.as_upper()
        scale = row.scale or 1.0
        weights, constant = layout.linear(coef / scale)
        nonzero = np.flatnonzero(weights)
        bound = rhs / scale - float(constant) - tighten / scale
        solver.Add(solver.Sum([float(weights[i]) * y[i] for i in nonzero]) <= bound)
    if problem.aggregate == "sum":
        weights, constant = layout.linear(problem.objective_matrix)
        objective = solver.Sum([float(w) * v for w, v in zip(weights, y) if w != 0]) + float(constant)
    else:
        worst = solver.NumVar(-solver.infinity(), solver.infinity(), "worst_task")
        for task in problem.task_matrices:
            weights, constant = layout.linear(task)
            solver.Add(worst >= solver.Sum([float(w) * v for w, v in zip(weights, y) if w != 0]) + float(constant))
        weights, constant = layout.linear(problem.extra_matrix)
        objective = worst + solver.Sum([float(w) * v for w, v in zip(weights, y) if w != 0]) + float(constant)
    if problem.interactions is not None:
        objective = objective + _pair_objective(solver, problem, layout, y)
    solver.Minimize(objective)
    return solver, y


def _pair_objective(solver: Any, problem: AllocationProblem, layout: OrderLayout, y: list) -> Any:
    """The interaction term by the transportation rows of ``quota.solvers.pairs`` (continuous
    ``z`` in [0, 1]: integral whenever ``y`` is)."""
    pairs = usable_pairs(problem.allowed, problem.monotone)
    z = [solver.NumVar(0.0, 1.0, f"z{l}_{a}_{b}") for l, a, b in pairs]
    for positions, layer, g, _ in flow_rows(pairs, problem.allowed):
        terms, constant = onehot_terms(layout, layer, g)
        solver.Add(solver.Sum([z[p] for p in positions]) == solver.Sum([c * y[v] for v, c in terms.items()]) + constant)
    return solver.Sum([float(problem.interactions[l, a, b]) * z[p] for p, (l, a, b) in enumerate(pairs)])


def solve_mip(problem: AllocationProblem, time_limit: float | None = 60.0, *, log: bool = False) -> Solution:
    """Solve ``problem`` exactly with SCIP within ``time_limit`` seconds (None: no limit).

    Status ``"optimal"`` or ``"time_limit"`` (a schedule and SCIP's bound, None when SCIP has none).
    Raises ``InfeasibleError`` when SCIP proves infeasibility, ``NoScheduleError`` when it found no
    schedule within the limit, ``SolverArgumentError`` for a bad ``time_limit``."""
    pywraplp = _pywraplp()
    deadline = Deadline(time_limit)
    layout = OrderLayout.build(problem.allowed, problem.monotone)
    if layout.contradiction:
        raise infeasible_error(problem, NAME)
    tightening = {i: 0.0 for i in range(len(problem.rows))}
    for _ in range(MAX_TIGHTEN + 1):
        solver, y = _build(problem, layout, [(row, tightening[i]) for i, row in enumerate(problem.rows)])
        solver.SetNumThreads(1)
        solver.SetSolverSpecificParametersAsString(_SCIP_PARAMS)
        if deadline.limit is not None:
            solver.SetTimeLimit(int(np.ceil(deadline.remaining() * 1000)))
        if log:
            solver.EnableOutput()
        status = solver.Solve()
        if status == pywraplp.Solver.INFEASIBLE:
            raise infeasible_error(problem, NAME)
        if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
            raise NoScheduleError(NAME, time_limit=deadline.limit, elapsed=deadline.elapsed())
        idx = layout.indices(np.array([v.solution_value() for v in y]))
        slipped = False
        for i, row in enumerate(problem.rows):
            excess = float(row.excess(row.values(np.asarray(idx))))
            if excess > row.tol:
                tightening[i] += excess
                slipped = True
        if not slipped:
            break
    else:
        raise SolverError(
            f"SCIP kept returning schedules outside the rows after {MAX_TIGHTEN} tightenings", solver=NAME
        )
    elapsed = deadline.elapsed()
    if status == pywraplp.Solver.OPTIMAL:
        objective = float(problem.objective_of_indices(np.asarray(idx)))
        return Solution.build(problem, idx, status="optimal", solver=NAME, solve_time=elapsed, lower_bound=objective)
    bound = float(solver.Objective().BestBound())
    bound = bound if np.isfinite(bound) and abs(bound) < 1e19 else None  # SCIP reports -1e20 for "none yet"
    return Solution.build(problem, idx, status="time_limit", solver=NAME, solve_time=elapsed, lower_bound=bound)
