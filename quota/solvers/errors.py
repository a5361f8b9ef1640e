"""How a solve fails: every error ``quota.solvers`` raises on purpose derives from ``SolverError``.

Each message is one line and states the numbers that matter (budget, least cost, objective, bound,
gap, time limit). The classes:

- ``ProblemError``: an ``AllocationProblem`` field is invalid (also a ``ValueError``).
- ``SolverArgumentError``: an argument of ``solve_problem`` is invalid (unknown solver, a ``time_limit`` that
  is not positive and finite, a negative ``accept_gap``; also a ``ValueError``).
- ``InfeasibleError``: no schedule satisfies the budget and constraints (also a ``ValueError``).
- ``UnsupportedFeatureError``: the solver cannot express a feature of the problem, or the problem
  does not fit its memory bound (also a ``ValueError``).
- ``NoScheduleError``: no feasible schedule was found within the time limit, and infeasibility was
  not proven either.
- ``RelaxationLimitError``: the LP relaxation stopped at its limit before its optimum.
- ``GapTooLargeError``: a schedule was found but not proven optimal, and its gap is above what the
  caller accepts (``accept_gap``); the schedule is kept on the exception as ``solution``.
"""

from __future__ import annotations

import math
from typing import Any


def seconds(value: float | None) -> str:
    """A time limit as text: ``"60 s"``, ``"0.001 s"``, or ``"no limit"``."""
    return "no limit" if value is None else f"{value:g} s"


def number(value: float | None) -> str:
    """A float as text with 6 significant digits, or ``"none"``."""
    return "none" if value is None else f"{value:.6g}"


class SolverError(Exception):
    """Base class of every error raised on purpose by ``quota.solvers``. ``solver``: the solver's
    registered name, or None when no solver was involved (a problem or argument error)."""

    def __init__(self, message: str, *, solver: str | None = None) -> None:
        super().__init__(message)
        self.solver = solver


class ProblemError(SolverError, ValueError):
    """An AllocationProblem field is invalid; the message names the field and the offending value."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class SolverArgumentError(SolverError, ValueError):
    """An argument of ``solve`` (or of a solver function) is invalid; the message names it.
    ``argument``: its name (``"solver"``, ``"time_limit"``, ``"accept_gap"``...)."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


class InfeasibleError(SolverError, ValueError):
    """No schedule satisfies the budget and the constraints.

    The message states the least achievable budget-kind cost (as a ratio of the full cost; that is,
    the cost of the cheapest schedule meeting every other constraint) against the budget, and what
    binds. Attributes: ``least_cost`` (ratio, or None when even the other constraints conflict),
    ``budget``, ``budget_kind``, ``binding`` (the constraint kinds that make it infeasible).
    """

    def __init__(
        self,
        message: str,
        *,
        least_cost: float | None,
        budget: float,
        budget_kind: str,
        binding: str,
        solver: str | None = None,
    ) -> None:
        super().__init__(message, solver=solver)
        self.least_cost = least_cost
        self.budget = budget
        self.budget_kind = budget_kind
        self.binding = binding


class UnsupportedFeatureError(SolverError, ValueError):
    """A solver was asked for a problem it cannot take: a feature it cannot express (e.g. ``max_task``
    in ``dp``) or a size beyond its memory bound. Attributes: ``solver``, ``feature``."""

    def __init__(self, solver: str, feature: str, hint: str = "") -> None:
        message = f"solver {solver!r} does not support {feature}"
        if hint:
            message += f"; {hint}"
        super().__init__(message, solver=solver)
        self.feature = feature


class NoScheduleError(SolverError):
    """No feasible schedule was found within the time limit (and infeasibility was not proven).

    Attributes: ``solver``, ``time_limit`` (seconds or None), ``elapsed`` (seconds), ``lower_bound``
    (a proven lower bound on the objective, or None), ``reason`` (what stopped the search)."""

    def __init__(
        self,
        solver: str,
        *,
        time_limit: float | None,
        elapsed: float,
        lower_bound: float | None = None,
        reason: str = "the time limit",
    ) -> None:
        message = (
            f"solver {solver!r} found no feasible schedule within {reason} "
            f"(time limit {seconds(time_limit)}, {elapsed:.3g} s spent; lower bound {number(lower_bound)}); "
            "raise the time limit or try another solver"
        )
        super().__init__(message, solver=solver)
        self.time_limit = time_limit
        self.elapsed = elapsed
        self.lower_bound = lower_bound
        self.reason = reason


class RelaxationLimitError(SolverError):
    """The LP relaxation stopped at its limit (time or iterations) before reaching its optimum, so it
    has neither a bound nor a schedule. Attributes: ``solver``, ``lp_status`` (cvxpy's status),
    ``time_limit`` (seconds or None), ``elapsed`` (seconds)."""

    def __init__(self, solver: str, *, lp_status: str, time_limit: float | None, elapsed: float) -> None:
        message = (
            f"solver {solver!r}: the LP relaxation stopped with status {lp_status!r} before its optimum "
            f"(time limit {seconds(time_limit)}, {elapsed:.3g} s spent); no bound and no schedule; "
            "raise the time limit or use solver 'auto', 'dp' or 'cpsat'"
        )
        super().__init__(message, solver=solver)
        self.lp_status = lp_status
        self.time_limit = time_limit
        self.elapsed = elapsed


class GapTooLargeError(SolverError):
    """A schedule was found but not proven optimal, and its relative gap exceeds ``accept_gap``.

    Attributes: ``solver``, ``objective``, ``lower_bound`` (None: no bound), ``gap`` (``inf`` when there
    is no bound), ``accept_gap`` (None: only proven optima accepted), ``time_limit``, ``status``, and
    ``solution`` (the rejected ``Solution``, for callers that want to look at it anyway)."""

    def __init__(self, solution: Any, *, accept_gap: float | None, time_limit: float | None) -> None:
        gap = math.inf if solution.gap is None else float(solution.gap)
        wanted = "only a proven optimum (accept_gap=None)" if accept_gap is None else f"a gap of at most {accept_gap:g}"
        if solution.lower_bound is None:
            remedy = "it has no lower bound, so only accept_gap=inf takes it"
        else:
            remedy = f"pass accept_gap >= {gap:.4g} to take it"
        if solution.status == "time_limit":
            remedy += " or raise the time limit"
        message = (
            f"solver {solution.solver!r} ended with status {solution.status!r} (time limit {seconds(time_limit)}): "
            f"objective {number(solution.objective)} against lower bound {number(solution.lower_bound)}, "
            f"gap {gap:.4g}, but the caller accepts {wanted}; {remedy}"
        )
        super().__init__(message, solver=solution.solver)
        self.solution = solution
        self.objective = solution.objective
        self.lower_bound = solution.lower_bound
        self.gap = gap
        self.accept_gap = accept_gap
        self.time_limit = time_limit
        self.status = solution.status


def diagnosed(error: InfeasibleError | None, solver: str) -> SolverError:
    """The infeasibility diagnosis of a problem a solver found no schedule for, attributed to ``solver``; a
    diagnosis that found a feasible schedule (``None``) is a contradiction, reported as such."""
    if error is None:
        return SolverError(f"{solver} found no schedule but the diagnosis found a feasible one", solver=solver)
    error.solver = solver
    return error
