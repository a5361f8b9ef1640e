"""Token allocation solvers: choose how many visual tokens each decoder layer keeps.

One problem object (``AllocationProblem``), one result type (``Solution``), five solvers:

- ``"cpsat"``: OR-Tools CP-SAT, exact (default; deterministic with one worker).
- ``"mip"``: OR-Tools pywraplp with SCIP, exact.
- ``"relax"``: cvxpy LP relaxation with rounding: a lower bound, a schedule and its gap.
- ``"dp"``: exact dynamic programming (the test oracle; "sum" aggregate, budget rows only).
- ``"greedy"``: greedy marginal-gain baseline.

A solver that cannot express a feature of the problem raises ``UnsupportedFeatureError``; an
infeasible problem raises ``InfeasibleError`` stating the least achievable cost against the budget.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from quota.solvers.constraints import FEAS_RTOL, CostCap, FixedLayer, LinearConstraint, MinKeepBefore
from quota.solvers.dp import solve_dp
from quota.solvers.greedy import solve_greedy
from quota.solvers.problem import COST_KINDS, AllocationProblem, ProblemError, default_grid
from quota.solvers.solution import InfeasibleError, Solution, UnsupportedFeatureError

_BACKEND_FUNCTIONS = {  # name -> module that imports OR-Tools or cvxpy at its top
    "solve_cpsat": "quota.solvers.cpsat",
    "solve_mip": "quota.solvers.mip",
    "solve_relax": "quota.solvers.relax",
    "solve_sweep": "quota.solvers.relax",
}


def _backend(name: str) -> Callable[..., Any]:
    """A function of a backend module, imported on first call."""

    def call(*args: Any, **kw: Any) -> Any:
        return getattr(importlib.import_module(_BACKEND_FUNCTIONS[name]), name)(*args, **kw)

    call.__name__ = call.__qualname__ = name
    return call


def __getattr__(name: str) -> Any:
    """``from quota.solvers import solve_cpsat`` (etc.) imports the backend module then."""
    if name in _BACKEND_FUNCTIONS:
        return getattr(importlib.import_module(_BACKEND_FUNCTIONS[name]), name)
    raise AttributeError(f"module 'quota.solvers' has no attribute {name!r}")


SOLVERS: dict[str, Callable[..., Solution]] = {
    "cpsat": _backend("solve_cpsat"),
    "mip": _backend("solve_mip"),
    "relax": _backend("solve_relax"),
    "dp": solve_dp,
    "greedy": solve_greedy,
}


def solve(problem: AllocationProblem, solver: str = "cpsat", time_limit: float | None = 60.0, **kw: Any) -> Solution:
    """Solve ``problem`` with the named solver (one of ``SOLVERS``).

    ``time_limit`` (seconds) bounds the exact solvers and the LP; ``dp`` and ``greedy`` ignore it.
    Extra keyword arguments go to the solver (e.g. ``num_workers`` or ``hint`` for ``cpsat``).
    Raises ``InfeasibleError``, ``UnsupportedFeatureError``, or ``ValueError`` for an unknown solver."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    return SOLVERS[solver](problem, time_limit, **kw)


__all__ = [
    "COST_KINDS",
    "FEAS_RTOL",
    "SOLVERS",
    "AllocationProblem",
    "CostCap",
    "FixedLayer",
    "InfeasibleError",
    "LinearConstraint",
    "MinKeepBefore",
    "ProblemError",
    "Solution",
    "UnsupportedFeatureError",
    "default_grid",
    "solve",
    "solve_sweep",
]
