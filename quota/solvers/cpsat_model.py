"""The CP-SAT model of a problem (order encoding, integer rows and objective) and its solver settings.

Shared by the ``cpsat`` solver and by the exact infeasibility diagnosis (``minimize_cost``, passed to
``quota.solvers.diagnose.explain_infeasible`` as its ``joint`` step by ``cpsat``, ``mip`` and ``relax``).

OR-Tools is imported on first use (``load_cp_model``), so importing this module does not load it.

Presolve is off: in OR-Tools 9.15 it certified wrong optima and wrong infeasibility on small models
of this encoding (compare or-tools issues #5293 and #5274), and the encoding solves as fast without
it. The random tests against the DP oracle and brute force guard this. ``linearization_level = 2``
puts the implications into CP-SAT's LP, which gives the LP bound of the one-hot model.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from quota.solvers.constraints import Row
from quota.solvers.encoding import OrderLayout
from quota.solvers.problem import AllocationProblem
from quota.solvers.pairs import flow_rows, onehot_terms, usable_pairs
from quota.solvers.scaling import integer_objective, integer_pairs, integer_row, objective_scale


def load_cp_model() -> ModuleType:
    """``ortools.sat.python.cp_model``, imported lazily: OR-Tools is a heavy dependency that plain
    ``import quota.solvers`` must not load."""
    from ortools.sat.python import cp_model  # lazy: heavy optional dependency (OR-Tools)

    return cp_model


class CpEncoding:
    """A CP-SAT model holding the order-encoding variables of one problem."""

    def __init__(self, allowed: np.ndarray, monotone: bool) -> None:
        cp_model = load_cp_model()
        self.allowed = allowed
        self.monotone = monotone
        self.layout = OrderLayout.build(allowed, monotone)
        self.contradiction = self.layout.contradiction
        self.model = cp_model.CpModel()
        self.y = [self.model.new_bool_var(f"y{i}") for i in range(self.layout.n_vars)]
        for a, b in self.layout.implications:
            self.model.add_implication(self.y[a], self.y[b])
        for var, value in self.layout.forced.items():
            self.model.add(self.y[var] == value)

    def expression(self, coef: np.ndarray) -> Any:
        """``sum_l coef[l, g_l]`` for an integer ``[L, G]`` matrix, constant included (a CP-SAT LinearExpr)."""
        weights, constant = self.layout.linear(coef.astype(np.int64))
        nonzero = np.flatnonzero(weights)
        linear = load_cp_model().LinearExpr.weighted_sum([self.y[i] for i in nonzero], weights[nonzero].tolist())
        return linear + int(constant)

    def pair_expression(self, coef: np.ndarray) -> Any:
        """``sum_l coef[l, g_l, g_{l+1}]`` for integer ``[L-1, G, G]`` interactions: adds the pair
        literals ``z[l, a, b] <=> x[l, a] and x[l+1, b]`` by the transportation rows of
        ``quota.solvers.pairs`` (usable pairs only) and returns their weighted sum."""
        cp_model = load_cp_model()
        pairs = usable_pairs(self.allowed, self.monotone)
        z = [self.model.new_bool_var(f"z{l}_{a}_{b}") for l, a, b in pairs]
        for positions, layer, g, _ in flow_rows(pairs, self.allowed):
            terms, constant = onehot_terms(self.layout, layer, g)
            x = cp_model.LinearExpr.weighted_sum([self.y[v] for v in terms], list(terms.values())) + constant
            self.model.add(sum(z[p] for p in positions) == x)
        weights = [int(coef[l, a, b]) for l, a, b in pairs]
        return cp_model.LinearExpr.weighted_sum(z, weights)

    def add_rows(self, rows: tuple[Row, ...]) -> None:
        """Add each row under the integer scaling rule of ``quota.solvers.scaling``."""
        cp_model = load_cp_model()
        for row in rows:
            int_row = integer_row(row)
            weights, constant = self.layout.linear(int_row.coef)
            nonzero = np.flatnonzero(weights)
            if len(nonzero) == 0:
                self.contradiction |= int(constant) > int_row.rhs
                continue
            expr = cp_model.LinearExpr.weighted_sum([self.y[i] for i in nonzero], weights[nonzero].tolist())
            self.model.add(expr <= int_row.rhs - int(constant))

    def indices(self, solver: Any) -> list[int]:
        """The grid index of each layer in the solver's solution."""
        return self.layout.indices(np.array([solver.boolean_value(v) for v in self.y], dtype=np.int64))

    def add_hint(self, indices: list[int]) -> None:
        """Hint a schedule (grid indices) to the search."""
        for var, value in zip(self.y, self.layout.values_of(indices)):
            self.model.add_hint(var, bool(value))


def set_objective(enc: CpEncoding, problem: AllocationProblem) -> tuple[float, float]:
    """Set the scaled objective on ``enc.model``; return ``(scale, shift)`` with
    ``true objective ~= integer objective / scale + shift``.

    ``"max_task"`` adds an integer ``z >= sum_l damage_t[l, g_l]`` per task and minimizes ``z`` plus extras.
    ``interactions`` add the pair literals of ``CpEncoding.pair_expression`` under the same scale."""
    inter = problem.interactions
    if problem.aggregate == "sum":
        scale = objective_scale(problem.objective_matrix[None], pairs=inter)
        scaled = integer_objective(problem.objective_matrix[None], scale)
        objective, shift = enc.expression(scaled.coef[0]), scaled.shift
    else:
        extra = problem.extra_matrix[None]
        scale = objective_scale(problem.task_matrices, extra, pairs=inter)
        tasks = integer_objective(problem.task_matrices, scale)
        extras = integer_objective(extra, scale)
        upper = int(tasks.coef.max(axis=2).sum(axis=1).max())
        z = enc.model.new_int_var(0, upper, "worst_task")
        for t in range(tasks.coef.shape[0]):
            enc.model.add(z >= enc.expression(tasks.coef[t]))
        objective, shift = z + enc.expression(extras.coef[0]), tasks.shift + extras.shift
    if inter is not None:
        pairs = integer_pairs(inter, scale)
        objective, shift = objective + enc.pair_expression(pairs.coef), shift + pairs.shift
    enc.model.minimize(objective)
    return scale, shift


def true_bound(int_bound: float, scale: float, shift: float, problem: AllocationProblem) -> float:
    """A proven lower bound in float units from CP-SAT's integer bound, allowing for the rounding
    of the scaled objective (at most 1/2 per layer for each rounded matrix in the objective)."""
    slack = 0.5 * problem.n_layers * (1 if problem.aggregate == "sum" else 2)
    if problem.interactions is not None:
        slack += 0.5 * (problem.n_layers - 1)
    return (int_bound - slack) / scale + shift


def make_solver(time_limit: float | None, num_workers: int, random_seed: int, log: bool) -> Any:
    """A configured ``CpSolver`` (see the module docstring for presolve and linearization)."""
    solver = load_cp_model().CpSolver()
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


def minimize_cost(
    problem: AllocationProblem, coef: np.ndarray, time_limit: float | None = 30.0
) -> tuple[str, float | None]:
    """The least ``sum_l coef[l, g_l]`` over schedules meeting every constraint except the budget
    (domains, monotonicity, ``LinearConstraint``, ``CostCap``), as ``(status, value)``: status
    ``"optimal"`` (value exact), ``"feasible"`` (value of the best schedule found, an upper bound),
    ``"infeasible"`` or ``"unknown"`` (value None). The ``joint`` step of the diagnosis."""
    cp_model = load_cp_model()
    enc = CpEncoding(problem.allowed, problem.monotone)
    enc.add_rows(problem.extra_rows)
    if enc.contradiction:
        return "infeasible", None
    scaled = integer_objective(np.asarray(coef, dtype=np.float64)[None])
    enc.model.minimize(enc.expression(scaled.coef[0]))
    solver = make_solver(time_limit, 1, 0, False)
    status = solver.solve(enc.model)
    if status == cp_model.INFEASIBLE:
        return "infeasible", None
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return "unknown", None
    idx = enc.indices(solver)
    value = float(np.asarray(coef)[np.arange(problem.n_layers), idx].sum())
    return ("optimal" if status == cp_model.OPTIMAL else "feasible"), value
