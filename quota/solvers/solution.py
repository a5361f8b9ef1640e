"""What every solver returns: ``Solution``, a feasible schedule with its objective, bound and status.

A solver that finds no schedule raises (``quota.solvers.errors``) instead of returning one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quota.solvers.errors import InfeasibleError, UnsupportedFeatureError
from quota.solvers.problem import AllocationProblem

STATUSES = ("optimal", "feasible", "time_limit")


def relative_gap(objective: float | None, bound: float | None) -> float | None:
    """``(objective - bound) / max(|objective|, 1e-12)``, 0 when they agree to 1e-12; None if either is None."""
    if objective is None or bound is None:
        return None
    diff = objective - bound
    if diff <= 1e-12 * max(1.0, abs(objective)):
        return 0.0
    return float(diff / max(abs(objective), 1e-12))


class Outcome:
    """What every solver result shares: its status says whether the schedule is proven optimal, and it is
    rebuilt with some fields changed. Mixed into frozen dataclasses with a ``status`` field."""

    status: str

    @property
    def proven_optimal(self) -> bool:
        """Whether the schedule is proven optimal (status ``"optimal"``; then ``gap == 0``)."""
        return self.status == "optimal"

    @property
    def found(self) -> bool:
        """Whether a schedule was found (always True: solvers raise when they find none)."""
        return True

    def replace(self, **changes: Any):
        """A copy with some fields changed (``requested``, ``note``, ``solve_time``...)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Solution(Outcome):
    """A solver's answer: always a feasible schedule.

    - ``schedule``: tokens kept per layer (grid values). ``indices``: their grid indices.
    - ``objective``: the problem's objective at ``schedule`` (recomputed in float64 from the problem).
    - ``lower_bound``: a proven lower bound on the optimum (never above ``objective``), or None.
    - ``status``: ``"optimal"`` (proven), ``"time_limit"`` (stopped by the time limit, no proof) or
      ``"feasible"`` (a heuristic or rounded answer, no proof).
    - ``gap``: ``relative_gap(objective, lower_bound)`` (None without a bound).
    - ``solve_time``: seconds spent in the solver call.
    - ``solver``: the registered name of the solver whose schedule this is (``"dp"`` or ``"cpsat"``
      when ``"auto"`` was asked for). ``requested``: the name the caller asked for (None when a solver
      function was called directly). ``note``: one line on how the answer came about (e.g. why
      ``"auto"`` picked its solver, or how the DP rounded a float budget), or ``""``.
    - ``cost_ratios``: cost of ``schedule`` per cost kind, as a fraction of the full cost.
    """

    schedule: tuple[int, ...]
    indices: tuple[int, ...]
    objective: float
    lower_bound: float | None
    status: str
    gap: float | None
    solve_time: float
    solver: str
    cost_ratios: dict[str, float] = field(default_factory=dict)
    requested: str | None = None
    note: str = ""

    @classmethod
    def build(
        cls,
        problem: AllocationProblem,
        indices: Any,
        *,
        status: str,
        solver: str,
        solve_time: float,
        lower_bound: float | None = None,
        note: str = "",
    ) -> Solution:
        """Assemble a Solution from grid indices ``[L]``, computing objective, gap and cost ratios.

        A ``lower_bound`` above the schedule's objective (float noise of an LP) is clamped to it."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        idx = tuple(int(g) for g in indices)
        objective = float(problem.objective_of_indices(np.asarray(idx)))
        if lower_bound is not None:
            lower_bound = float(min(lower_bound, objective))
        layers = np.arange(problem.n_layers)
        ratios = {
            kind: float(curve[layers, list(idx)].sum() / problem.full_cost(kind))
            for kind, curve in problem.costs.items()
            if problem.full_cost(kind) > 0
        }
        return cls(
            schedule=problem.schedule_of(idx),
            indices=idx,
            objective=objective,
            lower_bound=lower_bound,
            status=status,
            gap=relative_gap(objective, lower_bound),
            solve_time=float(solve_time),
            solver=solver,
            cost_ratios=ratios,
            note=note,
        )


    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict of every field (tuples become lists) plus ``proven_optimal``."""
        return {
            "schedule": list(self.schedule),
            "indices": list(self.indices),
            "objective": self.objective,
            "lower_bound": self.lower_bound,
            "status": self.status,
            "proven_optimal": self.proven_optimal,
            "gap": self.gap,
            "solve_time": self.solve_time,
            "solver": self.solver,
            "requested": self.requested,
            "note": self.note,
            "cost_ratios": dict(self.cost_ratios),
        }


__all__ = ["STATUSES", "InfeasibleError", "Solution", "UnsupportedFeatureError", "relative_gap"]
