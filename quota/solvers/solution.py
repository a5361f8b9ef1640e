"""What every solver returns (``Solution``) and how a solve fails (``InfeasibleError``,
``UnsupportedFeatureError``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from quota.solvers.problem import AllocationProblem

STATUSES = ("optimal", "feasible", "time_limit", "unknown", "bound_only")


def relative_gap(objective: float | None, bound: float | None) -> float | None:
    """``(objective - bound) / max(|objective|, 1e-12)``, 0 when they agree to 1e-12; None if either is None."""
    if objective is None or bound is None:
        return None
    diff = objective - bound
    if diff <= 1e-12 * max(1.0, abs(objective)):
        return 0.0
    return float(diff / max(abs(objective), 1e-12))


@dataclass(frozen=True)
class Solution:
    """A solver's answer.

    - ``schedule``: tokens kept per layer (grid values), or None when no feasible schedule was found
      (status ``"unknown"``: time limit hit first; ``"bound_only"``: the relaxation could not round).
    - ``indices``: grid indices of ``schedule``.
    - ``objective``: the problem's objective at ``schedule`` (recomputed in float64 from the problem).
    - ``lower_bound``: a proven lower bound on the optimum (never above ``objective``), or None.
    - ``status``: ``"optimal"`` (proven), ``"feasible"`` (no optimality proof), ``"time_limit"``
      (stopped by the time limit with a schedule), ``"unknown"``, ``"bound_only"``.
    - ``gap``: ``relative_gap(objective, lower_bound)``.
    - ``solve_time``: seconds spent in the solver call. ``solver``: its registered name.
    - ``cost_ratios``: cost of ``schedule`` per cost kind, as a fraction of the full cost.
    """

    schedule: tuple[int, ...] | None
    indices: tuple[int, ...] | None
    objective: float | None
    lower_bound: float | None
    status: str
    gap: float | None
    solve_time: float
    solver: str
    cost_ratios: dict[str, float] = field(default_factory=dict)

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
    ) -> Solution:
        """Assemble a Solution from grid indices (or None), computing objective, gap and cost ratios.

        A ``lower_bound`` above the schedule's objective (float noise of an LP) is clamped to it."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if indices is None:
            return cls(None, None, None, lower_bound, status, None, solve_time, solver, {})
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
        )

    @property
    def found(self) -> bool:
        """Whether a schedule was found."""
        return self.schedule is not None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict of every field (tuples become lists)."""
        return {
            "schedule": None if self.schedule is None else list(self.schedule),
            "indices": None if self.indices is None else list(self.indices),
            "objective": self.objective,
            "lower_bound": self.lower_bound,
            "status": self.status,
            "gap": self.gap,
            "solve_time": self.solve_time,
            "solver": self.solver,
            "cost_ratios": dict(self.cost_ratios),
        }


class InfeasibleError(ValueError):
    """No schedule satisfies the budget and the constraints.

    The message states the least achievable budget-kind cost (as a ratio of the full cost; that is,
    the cost of the cheapest schedule meeting every other constraint) against the budget, and what
    binds. Attributes: ``least_cost`` (ratio, or None when even the other constraints conflict),
    ``budget``, ``budget_kind``, ``binding`` (the constraint kinds that make it infeasible).
    """

    def __init__(
        self, message: str, *, least_cost: float | None, budget: float, budget_kind: str, binding: str
    ) -> None:
        super().__init__(message)
        self.least_cost = least_cost
        self.budget = budget
        self.budget_kind = budget_kind
        self.binding = binding


class UnsupportedFeatureError(ValueError):
    """A solver was asked for a problem feature it cannot express (e.g. ``max_task`` in ``dp``)."""

    def __init__(self, solver: str, feature: str, hint: str = "") -> None:
        message = f"solver {solver!r} does not support {feature}"
        if hint:
            message += f"; {hint}"
        super().__init__(message)
        self.solver = solver
        self.feature = feature
