"""The joint front door ``solve_joint``: one name per joint solver, the acceptance rule of ``solve_problem``.

Every joint solver is exact: ``"auto"`` (the DP when it fits, else CP-SAT), ``"dp"``, ``"cpsat"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quota.solvers.errors import SolverArgumentError
from quota.solvers.joint_auto import solve_joint_auto
from quota.solvers.joint_cpsat import solve_joint_cpsat
from quota.solvers.joint_dp import solve_joint_dp
from quota.solvers.joint_problem import JointProblem
from quota.solvers.joint_solution import JointSolution
from quota.solvers.limits import check_accept_gap, check_time_limit
from quota.solvers.registry import accept

JOINT_SOLVERS: dict[str, Callable[..., JointSolution]] = {
    "auto": solve_joint_auto,
    "dp": solve_joint_dp,
    "cpsat": solve_joint_cpsat,
}


def solve_joint(
    problem: JointProblem,
    solver: str = "auto",
    time_limit: float | None = 60.0,
    *,
    accept_gap: float | None = None,
    **options: Any,
) -> JointSolution:
    """Solve the joint precision and token problem with the named solver; return an accepted
    ``JointSolution``, or raise.

    Arguments:

    - ``problem``: the ``JointProblem`` (budgets as fractions of the all-reference, all-tokens cost of
      their kind; absolute caps as ``CostCap``; damage in the profile's units, lower is better).
    - ``solver``: one of ``JOINT_SOLVERS``, all exact: ``"auto"`` (default: the DP whenever the problem
      fits it, i.e. one budget row with costs in integer multiples of a power of two within the
      memory bound, else CP-SAT; ``JointSolution.solver`` names the one that ran), ``"dp"``, ``"cpsat"``.
    - ``time_limit``: seconds of wall time, a positive finite number, or None (default 60). A bad
      value raises ``SolverArgumentError`` naming ``time_limit``.
    - ``accept_gap``: as in ``solve_problem``: a proven optimum is always returned; an unproven
      schedule (CP-SAT stopped by its time limit) raises ``GapTooLargeError`` unless its relative gap
      is at most ``accept_gap`` (None: only proven optima; ``float('inf')``: any schedule).
    - ``options``: passed to the solver: ``num_workers``, ``random_seed``, ``hint`` (``(precision
      indices, keep indices)``), ``log`` for ``cpsat`` (and ``auto`` when it runs CP-SAT);
      ``max_bytes`` (DP memory bound, bytes) for ``dp`` and ``auto``.

    Raises (all ``SolverError``): ``SolverArgumentError`` (unknown solver, a problem that is not a
    ``JointProblem``, bad ``time_limit`` or ``accept_gap``), ``InfeasibleError`` (no schedule fits;
    states the least achievable cost against the budget), ``UnsupportedFeatureError`` (``dp`` asked for
    a problem it cannot take), ``NoScheduleError`` (no schedule within the time limit),
    ``GapTooLargeError`` (an unproven schedule whose gap is not accepted; it is on ``.solution``).
    """
    if solver not in JOINT_SOLVERS:
        raise SolverArgumentError("solver", f"solver must be one of {', '.join(JOINT_SOLVERS)}, got {solver!r}")
    if not isinstance(problem, JointProblem):
        raise SolverArgumentError("problem", f"problem must be a JointProblem, got {type(problem).__name__}")
    time_limit = check_time_limit(time_limit)
    accept_gap = check_accept_gap(accept_gap)
    solution = JOINT_SOLVERS[solver](problem, time_limit, **options).replace(requested=solver)
    return accept(solution, accept_gap, heuristic=False, time_limit=time_limit)
