"""Which problem features a solver can express; a solver calls ``require_supported`` first.

Features checked: the ``"max_task"`` aggregate, ``LinearConstraint`` (all, or only ``<=`` rows whose
coefficients never decrease with k: ``cost_like``), ``CostCap``, and pairwise ``interactions``.
"""

from __future__ import annotations

from quota.solvers.constraints import CostCap, LinearConstraint, Row, describe
from quota.solvers.errors import UnsupportedFeatureError
from quota.solvers.problem import AllocationProblem

_ALTERNATIVES = "cpsat, mip and relax express every feature"


def require_supported(
    problem: AllocationProblem,
    solver: str,
    *,
    max_task: bool = True,
    linear_constraints: bool | str = True,
    cost_caps: bool = True,
    interactions: bool = True,
) -> None:
    """Raise ``UnsupportedFeatureError`` naming ``solver`` and the first feature of ``problem`` it lacks.

    ``linear_constraints`` is True (any), False (none) or ``"cost_like"`` (only ``<=`` rows with
    coefficients non-decreasing in k)."""
    if problem.interactions is not None and not interactions:
        raise UnsupportedFeatureError(
            solver, "interaction terms between adjacent layers (interactions)", "dp, cpsat and auto express them"
        )
    if problem.aggregate == "max_task" and not max_task:
        raise UnsupportedFeatureError(solver, "aggregate='max_task'", _ALTERNATIVES)
    for c in problem.constraints:
        if isinstance(c, CostCap) and not cost_caps:
            raise UnsupportedFeatureError(solver, f"CostCap constraints ({describe(c)})", _ALTERNATIVES)
        if isinstance(c, LinearConstraint):
            if linear_constraints is False:
                raise UnsupportedFeatureError(solver, f"LinearConstraint ({describe(c)})", _ALTERNATIVES)
            if linear_constraints == "cost_like":
                if not Row(c.coef, c.rhs, c.sense, c.name, "LinearConstraint").cost_like:
                    raise UnsupportedFeatureError(
                        solver,
                        f"LinearConstraint ({describe(c)}) unless it is '<=' with coefficients non-decreasing in k",
                        _ALTERNATIVES,
                    )
