"""The error to raise when a solver backend proves (or suspects) that a problem has no schedule.

The full diagnosis (``quota.solvers.diagnose``) with its exact joint step (CP-SAT's
``minimize_cost``). When the diagnosis finds a schedule after all, the backend and the diagnosis
disagree: that is a ``SolverError`` naming the backend, never a silent success.
"""

from __future__ import annotations

from quota.solvers.cpsat_model import minimize_cost
from quota.solvers.diagnose import explain_infeasible
from quota.solvers.errors import InfeasibleError, SolverError
from quota.solvers.problem import AllocationProblem


def infeasible_error(problem: AllocationProblem, solver: str, what: str = "proved infeasibility") -> SolverError:
    """An ``InfeasibleError`` explaining why ``problem`` has no schedule (tagged with ``solver``), or a
    ``SolverError`` when the diagnosis finds a schedule although ``solver`` ``what``."""
    error = explain_infeasible(problem, joint=minimize_cost)
    if error is None:
        return SolverError(f"solver {solver!r} {what} but the diagnosis found a feasible schedule", solver=solver)
    return _tagged(error, solver)


def _tagged(error: InfeasibleError, solver: str) -> InfeasibleError:
    error.solver = solver
    return error
