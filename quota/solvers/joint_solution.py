"""What every joint solver returns: ``JointSolution``, a feasible (precision, keep count) per layer.

A joint solver that finds no schedule raises (``quota.solvers.errors``) instead of returning one. The
status, gap and acceptance rule are those of ``Solution`` (``quota.solvers.solution``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quota.solvers.joint_problem import JointProblem
from quota.solvers.solution import STATUSES, Outcome, relative_gap


@dataclass(frozen=True)
class JointSolution(Outcome):
    """A joint solver's answer: always a feasible schedule.

    - ``precisions``: option name per layer. ``precision_indices``: their indices in the problem's
      ``precisions``.
    - ``schedule``: visual tokens kept per layer (grid values). ``indices``: their grid indices.
    - ``objective``: predicted damage of the schedule (recomputed in float64 from the problem);
      ``precision_damage`` and ``token_damage``: its two parts (they sum to ``objective``).
    - ``lower_bound``: a proven lower bound on the optimum (never above ``objective``), or None.
    - ``status``: ``"optimal"`` (proven), ``"time_limit"`` (stopped by the time limit, no proof) or
      ``"feasible"`` (no proof). ``proven_optimal``: status ``"optimal"``.
    - ``gap``: ``relative_gap(objective, lower_bound)`` (None without a bound).
    - ``solve_time``: seconds spent in the solver call. ``solver``: the solver whose schedule this
      is; ``requested``: the name the caller asked for (None when called directly); ``note``: one
      line on how the answer came about, or ``""``.
    - ``cost_ratios``: cost per kind as a fraction of the all-reference, all-tokens cost (the unit of
      ``budgets``); ``costs``: the same in absolute units (seconds, bytes, tokens...).
    """

    precisions: tuple[str, ...]
    precision_indices: tuple[int, ...]
    schedule: tuple[int, ...]
    indices: tuple[int, ...]
    objective: float
    precision_damage: float
    token_damage: float
    lower_bound: float | None
    status: str
    gap: float | None
    solve_time: float
    solver: str
    cost_ratios: dict[str, float] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    requested: str | None = None
    note: str = ""

    @classmethod
    def build(
        cls,
        problem: JointProblem,
        precision_indices: Any,
        indices: Any,
        *,
        status: str,
        solver: str,
        solve_time: float,
        lower_bound: float | None = None,
        note: str = "",
    ) -> JointSolution:
        """Assemble a JointSolution from index arrays ``[L]`` each, computing objective, gap and costs.

        A ``lower_bound`` above the schedule's objective (float noise) is clamped to it."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        p_idx = tuple(int(p) for p in precision_indices)
        g_idx = tuple(int(g) for g in indices)
        layers = np.arange(problem.n_layers)
        p_arr, g_arr = np.asarray(p_idx, dtype=np.int64), np.asarray(g_idx, dtype=np.int64)
        objective = float(problem.objective_of_indices(p_arr, g_arr))
        if lower_bound is not None:
            lower_bound = float(min(lower_bound, objective))
        costs = {kind: problem.cost_of_indices(p_idx, g_idx, kind) for kind in problem.costs}
        ratios = {kind: value / problem.full_cost(kind) for kind, value in costs.items() if problem.full_cost(kind) > 0}
        return cls(
            precisions=tuple(problem.precisions[p] for p in p_idx),
            precision_indices=p_idx,
            schedule=tuple(int(problem.grid[g]) for g in g_idx),
            indices=g_idx,
            objective=objective,
            precision_damage=float(problem.precision_damage[layers, p_arr].sum()),
            token_damage=float(problem.token_damage[p_arr, layers, g_arr].sum()),
            lower_bound=lower_bound,
            status=status,
            gap=relative_gap(objective, lower_bound),
            solve_time=float(solve_time),
            solver=solver,
            cost_ratios=ratios,
            costs=costs,
            note=note,
        )


    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict of every field (tuples become lists) plus ``proven_optimal``."""
        return {
            "precisions": list(self.precisions),
            "precision_indices": list(self.precision_indices),
            "schedule": list(self.schedule),
            "indices": list(self.indices),
            "objective": self.objective,
            "precision_damage": self.precision_damage,
            "token_damage": self.token_damage,
            "lower_bound": self.lower_bound,
            "status": self.status,
            "proven_optimal": self.proven_optimal,
            "gap": self.gap,
            "solve_time": self.solve_time,
            "solver": self.solver,
            "requested": self.requested,
            "note": self.note,
            "cost_ratios": dict(self.cost_ratios),
            "costs": dict(self.costs),
        }


__all__ = ["JointSolution"]
