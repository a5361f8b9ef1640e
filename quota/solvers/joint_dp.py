"""Joint dynamic programming over (layer, keep index, budget units), vectorized in numpy.

For one budget row (one budget kind, or one ``CostCap``). Exact when the row's costs are integer
multiples of a power of two (token counts, bytes, seconds rounded up to multiples of ``2**-20``) and
the units fit the memory bound: after each layer's smallest cost is moved to the right-hand side and
the gcd divided out (``quota.solvers.scaling.integer_row``), the integer row *is* the float row. It is
the test oracle of the joint CP-SAT model.

State after layer l: ``value[g, b]``, the least damage of layers ``0..l`` with layer l at keep index g
and exactly b budget units used (``[G, B]``, ``B = capacity + 1``). Precision does not constrain the
next layer, but it changes the budget a layer uses, so it is a choice inside the knapsack, not a
pre-minimization: one layer step is

    value[g, b] = min over allowed p of  W[l, p, g] + best[g, b - cost[l, p, g]]

where ``best[g, b]`` is the least previous value over ``g' >= g`` (monotone: a suffix minimum over
the keep axis, ``quota.solvers.dp``'s) or over any ``g'``. Back-pointers ``[L, G, B]`` for the option
and for the previous keep index (one byte each up to 256 values) recover the schedule. Time
O(L * P * G * B); memory ``joint_dp_bytes`` (80 layers x 4 options x 33 keep counts at 7,175 units:
47 MiB, about 1 s on 2 cores). Ties go to the lowest option index, then the lowest keep index.

Float costs (measured seconds), or exact units too many for ``max_bytes``, are rounded as in
``quota.solvers.units``: a relaxed floor row gives a proven lower bound (optimal when its schedule is
feasible), a safe ceiling row a feasible schedule (``"feasible"`` with its gap unless they meet).
Several rows raise ``UnsupportedFeatureError`` (``"auto"`` then runs CP-SAT).
"""

from __future__ import annotations

import numpy as np

from quota.solvers.dp import MAX_BYTES, _best_previous
from quota.solvers.errors import NoScheduleError, SolverError, UnsupportedFeatureError, diagnosed
from quota.solvers.joint_diagnose import explain_joint_infeasible
from quota.solvers.joint_problem import JointProblem
from quota.solvers.joint_solution import JointSolution
from quota.solvers.limits import Deadline
from quota.solvers.scaling import integer_row
from quota.solvers.units import FLOAT_UNITS, MIN_UNITS, BudgetUnits, UnitRow, _rounded, parent_itemsize

NAME = "dp"
WORK_ARRAYS = 6  # [G, B] float64-sized arrays alive during one layer step
_PARENT_TYPES = {1: np.uint8, 2: np.uint16, 4: np.uint32}


class _OutOfTime(Exception):
    """The deadline passed during the DP."""


def joint_dp_bytes(n_layers: int, n_precisions: int, n_candidates: int, capacity: int) -> int:
    """Peak memory of the joint DP in bytes: option and keep back-pointers ``[L, G, B]`` plus
    ``WORK_ARRAYS`` float64 arrays ``[G, B]``, with ``B = capacity + 1``."""
    states = n_candidates * (max(capacity, 0) + 1)
    pointers = parent_itemsize(n_candidates) + parent_itemsize(n_precisions)
    return n_layers * states * pointers + WORK_ARRAYS * 8 * states


def joint_dp_pass(
    weights: np.ndarray, allowed: np.ndarray, cost: np.ndarray, capacity: int, monotone: bool, deadline: Deadline
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(precision indices, keep indices)`` ``[L]`` each minimizing ``sum_l weights[l, p_l, g_l]`` over
    allowed (monotone if asked) schedules with ``sum_l cost[l, p_l, g_l] <= capacity``, or None.

    ``weights``: ``[L, P, G]`` float; ``allowed``: ``[L, P, G]`` bool; ``cost``: ``[L, P, G]`` int64 >= 0.
    Raises ``_OutOfTime`` when ``deadline`` passes (checked between layers)."""
    n_layers, n_prec, n_cand = weights.shape
    if capacity < 0:
        return None
    n_budget = capacity + 1
    usable = allowed & (cost <= capacity)  # [L, P, G]
    ptype = _PARENT_TYPES[parent_itemsize(n_prec)]
    parent_p = np.empty((n_layers, n_cand, n_budget), dtype=ptype)  # [L, G, B]
    parent_g = np.empty((n_layers, n_cand, n_budget), dtype=_PARENT_TYPES[parent_itemsize(n_cand)])  # [L, G, B]
    best = np.full((1, n_budget), np.inf)  # [1, B]: before layer 0, nothing used
    best[0, 0] = 0.0
    arg = np.zeros((1, n_budget), dtype=parent_g.dtype)  # [1, B]
    value = best
    for layer in range(n_layers):
        if layer > 0:
            if deadline.expired():
                raise _OutOfTime
            best, arg = _best_previous(value, monotone)  # [G or 1, B] each
        value = np.full((n_cand, n_budget), np.inf)  # [G, B]
        for g in np.flatnonzero(usable[layer].any(axis=0)):
            row = g if best.shape[0] > 1 else 0
            target, via_p, via_g = value[g], parent_p[layer, g], parent_g[layer, g]  # [B] views
            for p in np.flatnonzero(usable[layer, :, g]):
                c = int(cost[layer, p, g])
                candidate = best[row, : n_budget - c] + weights[layer, p, g]  # [B - c]
                better = candidate < target[c:]
                np.copyto(target[c:], candidate, where=better)
                np.copyto(via_p[c:], ptype(p), where=better)
                np.copyto(via_g[c:], arg[row, : n_budget - c], where=better)
    flat = int(np.argmin(value))
    if not np.isfinite(value.flat[flat]):
        return None
    g, b = divmod(flat, n_budget)
    p_idx = np.empty(n_layers, dtype=np.int64)
    g_idx = np.empty(n_layers, dtype=np.int64)
    for layer in range(n_layers - 1, -1, -1):
        p = int(parent_p[layer, g, b])
        p_idx[layer], g_idx[layer] = p, g
        previous = int(parent_g[layer, g, b])
        b -= int(cost[layer, p, g])
        g = previous
    return p_idx, g_idx


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB" if n_bytes >= 2**20 else f"{n_bytes / 2**10:,.0f} KiB"


def joint_units(
    problem: JointProblem, *, max_bytes: int = MAX_BYTES, float_units: int = FLOAT_UNITS
) -> tuple[BudgetUnits, str]:
    """The DP's integer view of the problem's one row (``BudgetUnits``: exact, or a relaxed and a safe
    rounding; see ``quota.solvers.units``) and the row's cost kind. Raises ``UnsupportedFeatureError``
    for several rows, or when not even ``MIN_UNITS`` units fit in ``max_bytes``."""
    n_layers, n_prec, n_cand = problem.n_layers, problem.n_precisions, problem.n_candidates
    if len(problem.rows) != 1:
        names = "; ".join(row.name for row in problem.rows)
        raise UnsupportedFeatureError(NAME, f"{len(problem.rows)} budget rows ({names})", "cpsat takes any number")
    row, kind = problem.rows[0], problem.row_kinds[0]
    per_unit = joint_dp_bytes(n_layers, n_prec, n_cand, 1) - joint_dp_bytes(n_layers, n_prec, n_cand, 0)
    fit = max_bytes // per_unit - 1  # the largest capacity within max_bytes
    size = f"{n_layers} layers x {n_prec} precisions x {n_cand} keep counts"
    if fit < MIN_UNITS:
        need = _mib(joint_dp_bytes(n_layers, n_prec, n_cand, MIN_UNITS))
        raise UnsupportedFeatureError(
            NAME,
            f"{size}: even {MIN_UNITS} budget units need {need}, above its memory bound of {_mib(max_bytes)} (max_bytes)",
            "use cpsat",
        )
    int_row = integer_row(row)
    if int_row.exact and int_row.rhs <= fit:
        units = UnitRow(int_row.coef, int_row.rhs)
        need = _mib(joint_dp_bytes(n_layers, n_prec, n_cand, units.capacity))
        return BudgetUnits(
            True, units, units, f"exact integer budget units ({max(units.capacity, 0)} units, {need})"
        ), kind
    if int_row.exact:
        need = _mib(joint_dp_bytes(n_layers, n_prec, n_cand, int_row.rhs))
        why = f"{int_row.rhs} exact budget units need {need}, above the memory bound of {_mib(max_bytes)}"
    else:
        why = f"costs[{kind!r}] are not integer multiples of a power of two"
    return _rounded(row, min(float_units, fit), fit, why), kind


def solve_joint_dp(
    problem: JointProblem,
    time_limit: float | None = None,
    *,
    max_bytes: int = MAX_BYTES,
    float_units: int = FLOAT_UNITS,
) -> JointSolution:
    """Solve ``problem`` (one budget row) by dynamic programming within ``max_bytes`` of memory.

    Status ``"optimal"`` (always with exact units; with rounded units when proven) or ``"feasible"``
    with a proven ``lower_bound`` (rounded units, not proven). ``time_limit`` (seconds, None: no limit)
    is checked between layers: ``NoScheduleError`` when it passes first. Raises ``InfeasibleError``
    when no schedule fits (the least achievable cost against the budget), ``UnsupportedFeatureError``
    for several rows or a size beyond ``max_bytes``. ``float_units``: the capacity aimed at when rounding."""
    deadline = Deadline(time_limit)
    units, kind = joint_units(problem, max_bytes=max_bytes, float_units=float_units)
    shape = (problem.n_layers, problem.n_precisions, problem.n_candidates)
    weights, allowed, monotone = problem.objective_matrix, problem.allowed, problem.monotone
    try:
        first = joint_dp_pass(
            weights, allowed, units.relaxed.cost.reshape(shape), units.relaxed.capacity, monotone, deadline
        )
        if first is None:  # the relaxed row admits every feasible schedule: there is none
            raise diagnosed(explain_joint_infeasible(problem), NAME)
        bound = float(problem.objective_of_indices(*first))
        note = f"{kind}: {units.note}"
        if not problem.index_violations(*first):
            return JointSolution.build(
                problem,
                *first,
                status="optimal",
                solver=NAME,
                solve_time=deadline.elapsed(),
                lower_bound=bound,
                note=note,
            )
        if units.exact:  # the exact integer row is the float row: this cannot happen
            raise SolverError(f"dp returned a schedule violating {problem.index_violations(*first)}", solver=NAME)
        second = joint_dp_pass(
            weights, allowed, units.safe.cost.reshape(shape), units.safe.capacity, monotone, deadline
        )
    except _OutOfTime:
        raise NoScheduleError(NAME, time_limit=deadline.limit, elapsed=deadline.elapsed()) from None
    if second is None or problem.index_violations(*second):
        raise NoScheduleError(
            NAME,
            time_limit=deadline.limit,
            elapsed=deadline.elapsed(),
            lower_bound=bound,
            reason="the safe rounding of the budget (every schedule left is within rounding of the budget)",
        )
    solution = JointSolution.build(
        problem, *second, status="feasible", solver=NAME, solve_time=deadline.elapsed(), lower_bound=bound, note=note
    )
    return solution.replace(status="optimal") if solution.gap == 0 else solution
