"""``solve_k_best``: the k best distinct feasible schedules of a problem, exact.

Solvers: ``"dp"`` (the k-best DP of ``quota.solvers.kbest_dp``: "sum" aggregate, domain constraints,
interactions, exact budget units, memory bound), ``"cpsat"`` (enumeration with no-good cuts,
``quota.solvers.kbest_cpsat``: every feature), ``"auto"`` (the DP when it can take the problem, else
CP-SAT).

Tie rule: the returned objectives are the k least objectives over all feasible schedules (with
multiplicity). The list is sorted by objective, then by grid indices (lexicographically, ascending).
When several schedules tie at the k-th objective, which of them are returned is the solver's
deterministic choice (the same for the same problem, solver and arguments), not specified further.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

from quota.solvers.dp import MAX_BYTES
from quota.solvers.errors import SolverArgumentError, UnsupportedFeatureError
from quota.solvers.kbest_cpsat import k_best_cpsat
from quota.solvers.kbest_dp import k_best_dp
from quota.solvers.limits import Deadline
from quota.solvers.problem import AllocationProblem
from quota.solvers.solution import Solution

K_BEST_SOLVERS = ("auto", "dp", "cpsat")


def solve_k_best(
    problem: AllocationProblem,
    k: int,
    solver: str = "auto",
    time_limit: float | None = 60.0,
    *,
    max_bytes: int = MAX_BYTES,
    **cpsat_options: Any,
) -> list[Solution]:
    """Up to ``k`` distinct feasible schedules of ``problem`` in non-decreasing objective order (the
    tie rule is in the module docstring); fewer when fewer exist.

    ``solver``: one of ``K_BEST_SOLVERS``. ``time_limit``: seconds for the whole call (None: no
    limit). ``max_bytes``: the k-best DP's memory bound. ``cpsat_options`` (``num_workers``,
    ``random_seed``) go to CP-SAT when it runs. Each ``Solution`` has ``requested`` set to ``solver``
    and a ``note`` giving its rank. Raises ``SolverArgumentError`` for a bad ``k``, ``solver`` or
    ``time_limit``; ``InfeasibleError`` when no schedule fits; ``UnsupportedFeatureError`` (``"dp"``)
    for a problem the k-best DP cannot take; ``NoScheduleError`` when the limit passes first."""
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise SolverArgumentError("k", f"k must be a positive integer, got {k!r}")
    if solver not in K_BEST_SOLVERS:
        raise SolverArgumentError("solver", f"solver must be one of {', '.join(K_BEST_SOLVERS)}, got {solver!r}")
    deadline = Deadline(time_limit)
    k = int(k)
    why = ""
    if solver == "cpsat":
        found = k_best_cpsat(problem, k, deadline.remaining(), **cpsat_options)
    else:
        try:
            found = k_best_dp(problem, k, deadline.remaining(), max_bytes=max_bytes)
        except UnsupportedFeatureError as error:
            if solver == "dp":
                raise
            why = f", cpsat because dp does not support {error.feature}"
            found = k_best_cpsat(problem, k, deadline.remaining(), **cpsat_options)
    found = sorted(found, key=lambda s: (s.objective, s.indices))
    return [
        s.replace(requested=solver, note=f"rank {rank} of {len(found)} best (k={k}{why})")
        for rank, s in enumerate(found, start=1)
    ]
