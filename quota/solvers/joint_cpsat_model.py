"""The CP-SAT model of a joint problem: the token model's order encoding plus a precision choice.

Variables, for each layer l (the joint domain is a product, ``allowed[l, p, g] = precision_ok[l, p]
and keep_ok[l, g]``, see ``quota.solvers.joint_constraints``):

- ``y[l, g]``: ``g_l >= g``, the order encoding of ``quota.solvers.encoding`` over ``keep_ok`` (with
  its implications ``y[l, g+1] => y[l, g]`` and, when monotone, ``y[l+1, g] => y[l, g]``);
- ``z[l, p]``: layer l runs option p, exactly one per layer over the allowed options;
- ``w[l, p, g] = z[l, p] and y[l, g]`` for every allowed option p except the layer's base option
  ``hat_l`` (the reference when allowed, else the first allowed option), one per order variable:
  clauses ``w => z``, ``w => y``, ``z and y => w``, ``w[l, p, g+1] => w[l, p, g]``. The base option's
  own product is ``y[l, g] - sum_{p != hat} w[l, p, g]``, kept in ``[0, z[l, hat]]`` and non-increasing
  in g by linear rows, so the LP relaxation equals the one-hot model's (the convex hull of each
  layer's choices under the chain), while propagation runs on two- and three-literal clauses.

A per-(layer, option, keep) matrix ``C`` is linear in these variables:
``C[l, p_l, g_l] = C[l, hat, g_l] + sum_{p != hat} (D[l, p, 0] z[l, p] + sum_{g >= 1} (D[l, p, g] -
D[l, p, g-1]) w[l, p, g])`` with ``D[l, p] = C[l, p] - C[l, hat]``; with one option this is exactly the
token model of ``quota.solvers.cpsat_model``. Rows become integer rows under the rule of
``quota.solvers.scaling`` (exact for integer multiples of a power of two; otherwise never admitting a
schedule the float check rejects, never excluding one that meets the row exactly). The objective is
scaled by a power of two to about 2**40 and rounded per (layer, option, keep) before the rewrite,
so a layer's integer value is within 1/2 of the scaled float one: a proven integer bound less
``L / 2`` is a proven float bound.

Solver settings are ``quota.solvers.cpsat_model.make_solver``'s (presolve off, linearization level 2,
one worker by default). OR-Tools is imported lazily through ``load_cp_model``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quota.solvers.constraints import Row
from quota.solvers.cpsat_model import CpEncoding, load_cp_model, make_solver
from quota.solvers.encoding import TRUE
from quota.solvers.joint_problem import JointProblem
from quota.solvers.scaling import integer_objective, integer_row


class JointCpModel:
    """A CP-SAT model holding the variables of one joint problem, with its domain and monotonicity."""

    def __init__(self, problem: JointProblem) -> None:
        cp_model = load_cp_model()
        self.problem = problem
        precision_ok = problem.allowed.any(axis=2)  # [L, P]
        keep_ok = problem.allowed.any(axis=1)  # [L, G]
        if not np.array_equal(problem.allowed, precision_ok[:, :, None] & keep_ok[:, None, :]):
            raise ValueError("the joint CP-SAT model needs a product domain (precision_ok x keep_ok)")
        self.enc = CpEncoding(keep_ok, problem.monotone)
        self.model = self.enc.model
        self.contradiction = self.enc.contradiction or not precision_ok.any(axis=1).all()
        code = self.enc.layout.code  # [L, G]
        self.hat = np.zeros(problem.n_layers, dtype=np.int64)  # [L] base option per layer
        self.z: dict[tuple[int, int], Any] = {}
        self.w: dict[tuple[int, int, int], Any] = {}  # (layer, option, order variable) -> w
        y = self.enc.y
        for layer in range(problem.n_layers):
            options = [int(p) for p in np.flatnonzero(precision_ok[layer])]
            if not options:
                continue
            ref = problem.reference_index
            self.hat[layer] = ref if ref in options else options[0]
            for p in options:
                self.z[layer, p] = self.model.new_bool_var(f"z{layer}_{p}")
            self.model.add_exactly_one([self.z[layer, p] for p in options])
            levels = [int(v) for v in dict.fromkeys(code[layer, 1:].tolist()) if v >= 0]  # order vars, g ascending
            others = [p for p in options if p != self.hat[layer]]
            for p in others:
                z = self.z[layer, p]
                for i, v in enumerate(levels):
                    w = self.w[layer, p, v] = self.model.new_bool_var(f"w{layer}_{p}_{v}")
                    self.model.add_implication(w, z)
                    self.model.add_implication(w, y[v])
                    self.model.add_bool_or([~z, ~y[v], w])
                    if i:
                        self.model.add_implication(w, self.w[layer, p, levels[i - 1]])
            if not others:
                continue
            z_hat = self.z[layer, int(self.hat[layer])]
            base_prev = None
            for v in levels:  # the base option's product y - sum w: in [0, z_hat], non-increasing in g
                rest = cp_model.LinearExpr.sum([self.w[layer, p, v] for p in others])
                base = y[v] - rest
                self.model.add(rest <= y[v])
                self.model.add(base <= z_hat)
                if base_prev is not None:
                    self.model.add(base <= base_prev)
                base_prev = base

    def expression(self, coef: np.ndarray) -> Any:
        """``sum_l coef[l, p_l, g_l]`` for an integer ``[L, P, G]`` matrix (a CP-SAT LinearExpr)."""
        coef = np.asarray(coef, dtype=np.int64)
        layers = np.arange(self.problem.n_layers)
        code = self.enc.layout.code  # [L, G]
        variables, weights = [], []
        for (layer, p), z in self.z.items():
            hat = int(self.hat[layer])
            if p == hat:
                continue
            diff = coef[layer, p] - coef[layer, hat]  # [G]
            steps = np.diff(diff)  # [G - 1], into g = 1..G-1
            on_z = int(diff[0] + steps[code[layer, 1:] == TRUE].sum())
            on_w: dict[int, int] = {}
            for g in np.flatnonzero(code[layer, 1:] >= 0):
                v = int(code[layer, g + 1])
                on_w[v] = on_w.get(v, 0) + int(steps[g])
            variables.append(z)
            weights.append(on_z)
            for v, weight in on_w.items():
                variables.append(self.w[layer, p, v])
                weights.append(weight)
        nonzero = [i for i, weight in enumerate(weights) if weight]
        extra = load_cp_model().LinearExpr.weighted_sum([variables[i] for i in nonzero], [weights[i] for i in nonzero])
        return self.enc.expression(coef[layers, self.hat]) + extra

    def add_rows(self, rows: tuple[Row, ...]) -> None:
        """Add each ``<=`` row (coefficients ``[L, P * G]``) under the integer rule of ``quota.solvers.scaling``."""
        shape = (self.problem.n_layers, self.problem.n_precisions, self.problem.n_candidates)
        for row in rows:
            int_row = integer_row(row)
            if not int_row.coef.any():
                self.contradiction |= int_row.rhs < 0
                continue
            self.model.add(self.expression(int_row.coef.reshape(shape)) <= int_row.rhs)

    def minimize(self, coef: np.ndarray) -> tuple[float, float]:
        """Minimize the float ``[L, P, G]`` matrix ``coef``; return ``(scale, shift)`` with
        ``true value ~= integer value / scale + shift``."""
        shape = np.shape(coef)
        scaled = integer_objective(np.asarray(coef, dtype=np.float64).reshape(1, shape[0], -1))
        self.model.minimize(self.expression(scaled.coef[0].reshape(shape)))
        return scaled.scale, scaled.shift

    def add_hint(self, precision_indices: list[int], keep_indices: list[int]) -> None:
        """Hint a schedule (index arrays ``[L]``) to the search."""
        self.enc.add_hint(list(keep_indices))
        y_values = self.enc.layout.values_of(list(keep_indices))
        for (layer, p), z in self.z.items():
            self.model.add_hint(z, p == precision_indices[layer])
        for (layer, p, v), w in self.w.items():
            self.model.add_hint(w, bool(p == precision_indices[layer] and y_values[v]))

    def indices(self, solver: Any) -> tuple[list[int], list[int]]:
        """``(precision indices, keep indices)`` ``[L]`` each of the solver's solution."""
        precision = [int(self.hat[layer]) for layer in range(self.problem.n_layers)]
        for (layer, p), z in self.z.items():
            if solver.boolean_value(z):
                precision[layer] = p
        return precision, self.enc.indices(solver)


def minimize_joint_cost(problem: JointProblem, i: int, time_limit: float | None = 30.0) -> tuple[str, float | None]:
    """The least left-hand side of ``problem.rows[i]`` over schedules meeting every other row, the
    domain constraints and monotonicity, as ``(status, value)``: status ``"optimal"`` (value exact),
    ``"feasible"`` (the best found, an upper bound), ``"infeasible"`` or ``"unknown"`` (value None).
    The ``joint`` step of ``quota.solvers.joint_diagnose``."""
    cp_model = load_cp_model()
    enc = JointCpModel(problem)
    enc.add_rows(tuple(row for k, row in enumerate(problem.rows) if k != i))
    if enc.contradiction:
        return "infeasible", None
    shape = (problem.n_layers, problem.n_precisions, problem.n_candidates)
    enc.minimize(problem.rows[i].coef.reshape(shape))
    solver = make_solver(time_limit, 1, 0, False)
    status = solver.solve(enc.model)
    if status == cp_model.INFEASIBLE:
        return "infeasible", None
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return "unknown", None
    p_idx, g_idx = enc.indices(solver)
    value = float(problem.rows[i].values(problem.options(np.asarray(p_idx), np.asarray(g_idx))))
    return ("optimal" if status == cp_model.OPTIMAL else "feasible"), value
