"""The solver registry and the front door ``solve``: one name per solver, one acceptance rule.

Exact solvers (``EXACT_SOLVERS``) prove optimality: ``"auto"``, ``"dp"``, ``"cpsat"``, ``"mip"``.
Heuristics (``HEURISTIC_SOLVERS``) do not: ``"relax"`` (LP bound and rounding), ``"greedy"`` (no bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from quota.solvers.auto import solve_auto
from quota.solvers.cpsat import solve_cpsat
from quota.solvers.dp import solve_dp
from quota.solvers.errors import GapTooLargeError, SolverArgumentError
from quota.solvers.greedy import solve_greedy
from quota.solvers.limits import check_accept_gap, check_time_limit
from quota.solvers.mip import solve_mip
from quota.solvers.problem import AllocationProblem
from quota.solvers.relax import solve_relax
from quota.solvers.solution import Solution

SOLVERS: dict[str, Callable[..., Solution]] = {
    "auto": solve_auto,
    "dp": solve_dp,
    "cpsat": solve_cpsat,
    "mip": solve_mip,
    "relax": solve_relax,
    "greedy": solve_greedy,
}
EXACT_SOLVERS = ("auto", "dp", "cpsat", "mip")
HEURISTIC_SOLVERS = ("relax", "greedy")


def accept(solution: Solution, accept_gap: float | None, *, heuristic: bool, time_limit: float | None) -> Solution:
    """``solution`` if the caller accepts it, else raise ``GapTooLargeError``.

    A proven optimum is always accepted. Otherwise, with ``accept_gap`` None: accepted only from a
    heuristic (asking for one is asking for an unproven answer); with a number: accepted when the
    relative gap is at most ``accept_gap`` (no bound counts as an infinite gap)."""
    if solution.proven_optimal:
        return solution
    if accept_gap is None:
        if heuristic:
            return solution
        raise GapTooLargeError(solution, accept_gap=None, time_limit=time_limit)
    gap = math.inf if solution.gap is None else solution.gap
    if gap <= accept_gap:
        return solution
    raise GapTooLargeError(solution, accept_gap=accept_gap, time_limit=time_limit)


def solve_problem(
    problem: AllocationProblem,
    solver: str = "auto",
    time_limit: float | None = 60.0,
    *,
    accept_gap: float | None = None,
    **options: Any,
) -> Solution:
    """Solve ``problem`` with the named solver and return an accepted ``Solution``, or raise.

    Arguments:

    - ``problem``: the ``AllocationProblem`` (budget as a fraction of the all-tokens cost of its
      ``budget_kind``; damage in the profile's units, lower is better).
    - ``solver``: one of ``SOLVERS``. Exact (prove optimality): ``"auto"`` (default: the DP whenever
      the problem fits it, else CP-SAT; ``Solution.solver`` names the one that ran), ``"dp"``,
      ``"cpsat"``, ``"mip"``. Heuristics: ``"relax"`` (LP lower bound, rounded schedule, gap against the
      LP bound), ``"greedy"`` (marginal-gain lowering, no bound).
    - ``time_limit``: seconds of wall time for the solve, a positive finite number, or None for no
      limit (default 60). The DP checks it between layers; ``greedy`` ignores it; ``relax`` gives it to
      the LP. A bad value raises ``SolverArgumentError`` (a ``ValueError``) naming ``time_limit``.
    - ``accept_gap``: the largest relative gap ``(objective - lower_bound) / |objective|`` accepted for
      a schedule that is not proven optimal, a number >= 0 (``float('inf')``: any schedule), or None
      (default). A proven optimum is always returned. With None, an exact solver's unproven schedule
      (time limit hit) raises ``GapTooLargeError``, while a heuristic's schedule is returned with its
      status ``"feasible"`` and its gap (``relax``: against its LP bound; ``greedy``: None). With a
      number, every solver is held to it; ``greedy`` has no bound, so only ``inf`` accepts it.
    - ``options``: passed to the solver: ``num_workers``, ``random_seed``, ``hint`` (grid indices),
      ``log`` for ``cpsat`` (and ``auto`` when it runs CP-SAT); ``max_bytes`` (DP memory bound, bytes)
      for ``dp`` and ``auto``; ``float_units`` for ``dp``; ``log`` for ``mip``.

    Raises (all ``SolverError``): ``SolverArgumentError`` (unknown solver, bad ``time_limit`` or
    ``accept_gap``), ``InfeasibleError`` (no schedule fits; states the least achievable cost against
    the budget), ``UnsupportedFeatureError`` (the solver cannot express the problem or it exceeds the
    DP's memory bound), ``NoScheduleError`` (no schedule within the time limit), ``RelaxationLimitError``
    (the LP stopped at its limit), ``GapTooLargeError`` (a schedule whose gap is not accepted; the
    schedule is on the exception as ``.solution``).
    """
    if solver not in SOLVERS:
        raise SolverArgumentError("solver", f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    time_limit = check_time_limit(time_limit)
    accept_gap = check_accept_gap(accept_gap)
    solution = SOLVERS[solver](problem, time_limit, **options).replace(requested=solver)
    return accept(solution, accept_gap, heuristic=solver in HEURISTIC_SOLVERS, time_limit=time_limit)
