"""Convex relaxation (cvxpy LP) with rounding: a lower bound and a feasible schedule with its gap.

LP. Weights ``lam[l, g] >= 0`` with ``sum_g lam[l, g] = 1`` per layer (a point of the convex hull of
the layer's curve points), ``lam[l, g] = 0`` where the grid index is not allowed, monotonicity as
suffix sums ``sum_{g' >= g} lam[l+1, g'] <= sum_{g' >= g} lam[l, g']`` (the LP relaxation of the
exact model), every row linear in ``lam`` (normalized by its scale, with the shared tolerance), and
the objective linear in ``lam`` (``"max_task"``: an epigraph variable). Its optimum is a lower bound
on the integer optimum. The budget is a ``cp.Parameter``: ``solve_sweep`` compiles once and
re-solves per budget. Solved with HiGHS (shipped with cvxpy).

Rounding. Per layer the lowest and the highest index carrying LP weight give two schedules (both
monotone when the LP is); each is projected onto the allowed monotone schedules and lowered
greedily until the rows hold (when lowering cannot fix a row, ``repair_rows`` moves both ways to
shrink the total excess), then improved by local search
(``quota.solvers.moves.improve``) and the better one is returned with ``gap`` against the LP bound.
Status ``"optimal"`` when the gap is within ``OPTIMAL_GAP`` (the LP solver's tolerance),
``"feasible"`` otherwise. When rounding finds no feasible schedule though one exists (possible with
``>=`` or non-monotone linear rows) it raises ``NoScheduleError`` carrying the LP bound; when none
exists (the LP can be feasible while the integer problem is not), the exact diagnosis raises
``InfeasibleError``. An LP stopped by its time limit raises ``RelaxationLimitError``. Pairwise
``interactions`` raise ``UnsupportedFeatureError``.

cvxpy is imported on first use (``_cvxpy``), so importing this module does not load it.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from quota.solvers.constraints import FEAS_RTOL
from quota.solvers.errors import InfeasibleError, NoScheduleError, RelaxationLimitError
from quota.solvers.features import require_supported
from quota.solvers.infeasible import infeasible_error
from quota.solvers.limits import Deadline, check_time_limit
from quota.solvers.moves import improve, lower_until_feasible, repair_monotone, repair_rows
from quota.solvers.problem import AllocationProblem
from quota.solvers.solution import Solution

NAME = "relax"
LP_SOLVER = "HIGHS"
SUPPORT_EPS = 1e-7
OPTIMAL_GAP = 1e-7  # gap at which the LP bound (HiGHS tolerances ~1e-7) certifies the rounded schedule
_banner_silenced = False


def _cvxpy() -> ModuleType:
    """``cvxpy``, imported lazily: a heavy dependency that plain ``import quota.solvers`` must not load."""
    import cvxpy  # lazy: heavy optional dependency (cvxpy)

    return cvxpy


def _silence_highs_banner() -> None:
    """HiGHS prints a copyright banner to the C-level stdout the first time a solver object is made
    in a process, which would corrupt machine-readable output; make that first object with fd 1
    pointed at /dev/null."""
    global _banner_silenced
    if _banner_silenced:
        return
    _banner_silenced = True
    try:
        import highspy  # lazy: heavy optional dependency (HiGHS, shipped with cvxpy)
    except ImportError:  # pragma: no cover - cvxpy then reports the missing solver itself
        return
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


class Relaxation:
    """The LP of one problem with the budget as a parameter; build once, ``solve(budget)`` many times."""

    def __init__(self, problem: AllocationProblem) -> None:
        cp = _cvxpy()
        self.problem = problem
        n_layers, n_cand = problem.n_layers, problem.n_candidates
        self.lam = cp.Variable((n_layers, n_cand), nonneg=True)
        self.budget = cp.Parameter(nonneg=True, value=problem.budget)
        lam = self.lam
        constraints = [cp.sum(lam, axis=1) == 1]
        if not problem.allowed.all():
            constraints.append(lam <= problem.allowed.astype(np.float64))
        if problem.monotone and n_layers > 1 and n_cand > 1:
            suffix = np.triu(np.ones((n_cand, n_cand)))[1:]  # [G-1, G]: row g-1 sums the g' >= g
            tails = lam @ suffix.T  # [L, G-1]
            constraints.append(tails[1:] <= tails[:-1])
        row = problem.budget_row
        constraints.append(cp.sum(cp.multiply(row.coef / problem.full_cost(), lam)) <= self.budget + FEAS_RTOL)
        for extra in problem.extra_rows:
            coef, rhs = extra.as_upper()
            scale = extra.scale or 1.0
            constraints.append(cp.sum(cp.multiply(coef / scale, lam)) <= rhs / scale + FEAS_RTOL)
        if problem.aggregate == "sum":
            objective = cp.sum(cp.multiply(problem.objective_matrix, lam))
        else:
            worst = cp.Variable()
            for task in problem.task_matrices:
                constraints.append(worst >= cp.sum(cp.multiply(task, lam)))
            objective = worst + cp.sum(cp.multiply(problem.extra_matrix, lam))
        self.lp = cp.Problem(cp.Minimize(objective), constraints)

    def solve(self, budget: float, time_limit: float | None = None) -> tuple[float, np.ndarray] | None:
        """LP optimum and weights ``[L, G]`` at ``budget``; None when the LP is infeasible. Raises
        ``RelaxationLimitError`` when the LP stops (time or iteration limit) before its optimum."""
        cp = _cvxpy()
        deadline = Deadline(time_limit)
        self.budget.value = float(budget)
        _silence_highs_banner()
        options = {} if deadline.limit is None else {"time_limit": float(deadline.limit)}
        with warnings.catch_warnings():  # cvxpy warns of inaccurate solutions; the status is checked below
            warnings.simplefilter("ignore", UserWarning)
            self.lp.solve(solver=LP_SOLVER, **options)
        if self.lp.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
            return None
        if self.lp.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            raise RelaxationLimitError(
                NAME, lp_status=str(self.lp.status), time_limit=deadline.limit, elapsed=deadline.elapsed()
            )
        return float(self.lp.value), np.asarray(self.lam.value)


def round_weights(problem: AllocationProblem, weights: np.ndarray) -> np.ndarray | None:
    """Best feasible schedule (grid indices) rounded from LP weights ``[L, G]``, or None."""
    support = weights > SUPPORT_EPS
    support[np.arange(problem.n_layers), np.argmax(weights, axis=1)] = True
    low = repair_monotone(problem, np.array([np.flatnonzero(s)[0] for s in support]), downward=True)
    high = repair_monotone(problem, np.array([np.flatnonzero(s)[-1] for s in support]), downward=False)
    candidates = []
    for start in (low, high):
        if start is None:
            continue
        fixed = lower_until_feasible(problem, start)
        if fixed is None or problem.index_violations(fixed):
            fixed = repair_rows(problem, start)
        if fixed is not None and not problem.index_violations(fixed):
            candidates.append(improve(problem, fixed))
    if not candidates:
        return None
    values = [float(problem.objective_of_indices(c)) for c in candidates]
    return candidates[int(np.argmin(values))]


def solve_sweep(
    problem: AllocationProblem, budgets: Sequence[float], time_limit: float | None = None
) -> list[Solution]:
    """Relax-and-round ``problem`` at each budget, compiling the LP once.

    Returns one Solution per budget, in order; the first one's ``solve_time`` includes building the
    LP. ``time_limit`` (seconds, None: no limit) bounds each LP solve. Raises ``InfeasibleError`` for
    the first budget at which the problem is infeasible, ``RelaxationLimitError`` when an LP stops at
    its limit, ``NoScheduleError`` (with the LP bound) when rounding finds no schedule."""
    time_limit = check_time_limit(time_limit)
    require_supported(problem, NAME, interactions=False)
    deadline = Deadline(None)
    relaxation = Relaxation(problem)
    out = []
    for i, budget in enumerate(budgets):
        if i > 0:
            deadline = Deadline(None)
        at_budget = problem if budget == problem.budget else problem.replace(budget=budget)
        lp = relaxation.solve(budget, time_limit)
        if lp is None:
            raise infeasible_error(at_budget, NAME, "found the LP relaxation infeasible")
        bound, weights = lp
        idx = round_weights(at_budget, weights)
        elapsed = deadline.elapsed()
        if idx is None:
            error = infeasible_error(at_budget, NAME, "found no rounded schedule")
            if isinstance(error, InfeasibleError):
                raise error
            raise NoScheduleError(
                NAME, time_limit=time_limit, elapsed=elapsed, lower_bound=bound, reason="rounding of the LP optimum"
            )
        solution = Solution.build(at_budget, idx, status="feasible", solver=NAME, solve_time=elapsed, lower_bound=bound)
        if solution.gap is not None and solution.gap <= OPTIMAL_GAP:
            solution = Solution.build(
                at_budget, idx, status="optimal", solver=NAME, solve_time=elapsed, lower_bound=bound
            )
        out.append(solution)
    return out


def solve_relax(problem: AllocationProblem, time_limit: float | None = None) -> Solution:
    """Relax-and-round ``problem`` at its own budget (see ``solve_sweep``)."""
    return solve_sweep(problem, [problem.budget], time_limit)[0]
