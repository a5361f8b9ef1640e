"""Exact dynamic programming over (layer, keep index, budget units used), vectorized in numpy.

State after layer l: ``value[g, b]``, the least objective of layers ``0..l`` with layer l at grid
index g and exactly b budget units used (``[G, B]``, ``B = capacity + 1``). One layer step is, for
every (g, b) at once, the best previous state ``g' >= g`` (monotone: a suffix minimum over the keep
axis) or any ``g'`` (not monotone), at ``b - cost[l, g]`` units; back-pointers ``[L, G, B]`` (one
byte each for up to 256 keep counts) recover the schedule. Time O(L * G * B), memory
``quota.solvers.units.dp_bytes``: for 80 layers x 129 keep counts at a token budget of 0.3 of 576
tokens (13,824 units) about 220 MiB and a few seconds on a 2-core CPU.

Memory bound: ``max_bytes`` (default ``MAX_BYTES`` = 1 GiB). Budget units are exact when the budget
costs are integer multiples of a power of two (tokens always; see ``quota.solvers.units``) and fit
the bound; otherwise the DP rounds them (a relaxed pass for a proven lower bound, a safe pass for a
feasible schedule, improved by local search) and returns status ``"optimal"`` only when the bound
meets the schedule, else ``"feasible"`` with its gap: about ``L / units`` of the budget's worth of
objective (80 layers x 129 keep counts at about 2**14 units: gaps of 0.1-2% on synthetic latency
budgets). When not even ``MIN_UNITS`` units fit, it raises ``UnsupportedFeatureError`` naming the size.

Interactions between adjacent layers (``AllocationProblem.interactions``): the step into layer l+1
at index g adds ``interactions[l, g', g]`` to each previous ``value[g', b]`` before the minimum over
``g'``, so the state is unchanged and exact; the step costs O(G) per (g, b) instead of O(1) (time
O(L * G^2 * B), the same memory bound).

It expresses: the ``"sum"`` aggregate (any number of tasks and task weights), extra objective terms,
interactions, any damage curves (non-monotone, negative), ``MinKeepBefore`` and ``FixedLayer``, monotonicity on or
off. It raises ``UnsupportedFeatureError`` for ``"max_task"``, ``LinearConstraint`` and ``CostCap``.
"""

from __future__ import annotations

import numpy as np

from quota.solvers.diagnose import explain_infeasible
from quota.solvers.errors import NoScheduleError, SolverError, diagnosed
from quota.solvers.features import require_supported
from quota.solvers.limits import Deadline
from quota.solvers.moves import improve
from quota.solvers.problem import AllocationProblem
from quota.solvers.solution import Solution
from quota.solvers.units import FLOAT_UNITS, UnitRow, budget_units, parent_itemsize

NAME = "dp"
MAX_BYTES = 2**30
IMPROVE_STEPS = 200  # local-search moves applied to the safe pass's schedule (rounded units only)
_PARENT_TYPES = {1: np.uint8, 2: np.uint16, 4: np.uint32}


class _OutOfTime(Exception):
    """The deadline passed during a DP pass."""


def _best_previous(value: np.ndarray, monotone: bool) -> tuple[np.ndarray, np.ndarray]:
    """For each next index g and budget b, the best previous value over the allowed previous indices
    (``g' >= g`` when ``monotone``, any otherwise) and its index: ``[G, B]`` each (``[1, B]`` when
    not monotone, the same for every g). ``value``: ``[G, B]``."""
    n_cand = value.shape[0]
    dtype = _PARENT_TYPES[parent_itemsize(n_cand)]
    if not monotone:
        arg = np.argmin(value, axis=0)  # [B]
        best = np.take_along_axis(value, arg[None], axis=0)  # [1, B]
        return best, arg.astype(dtype)[None]
    best = np.minimum.accumulate(value[::-1], axis=0)[::-1]  # [G, B] suffix minimum over g' >= g
    # g attains its suffix minimum when value[g] <= best[g + 1]; the arg of (g, b) is the first such
    # g' >= g (every index between g and g' passes its minimum on unchanged).
    attains = np.ones(value.shape, dtype=bool)  # [G, B]
    np.less_equal(value[:-1], best[1:], out=attains[:-1])
    marks = np.where(attains, np.arange(n_cand, dtype=dtype)[:, None], dtype(n_cand - 1))  # [G, B]
    arg = np.minimum.accumulate(marks[::-1], axis=0)[::-1]  # [G, B]
    return best, arg


def _pair_step(
    value: np.ndarray, pair: np.ndarray, g: int, span: int, monotone: bool
) -> tuple[np.ndarray, np.ndarray]:
    """For next index g and the first ``span`` budget columns: the best ``value[g', b] + pair[g', g]``
    over the allowed previous indices ``g'`` (``g' >= g`` when ``monotone``) and its first arg,
    ``[span]`` each. ``value``: ``[G, B]``; ``pair``: ``[G, G]`` (this layer pair's interactions)."""
    start = g if monotone else 0
    total = value[start:, :span] + pair[start:, g][:, None]  # [G - start, span]
    arg = np.argmin(total, axis=0)  # [span]; the first (smallest) g' attaining the minimum
    return np.take_along_axis(total, arg[None], axis=0)[0], arg + start


def dp_pass(
    weights: np.ndarray,
    allowed: np.ndarray,
    units: UnitRow,
    monotone: bool,
    deadline: Deadline,
    pairs: np.ndarray | None = None,
) -> np.ndarray | None:
    """Grid indices ``[L]`` minimizing ``sum_l weights[l, g_l] + sum_l pairs[l, g_l, g_{l+1}]`` over
    allowed (monotone if asked) schedules with ``sum_l units.cost[l, g_l] <= units.capacity``, or None
    when there is none. ``weights``, ``allowed``: ``[L, G]``; ``pairs``: ``[L-1, G, G]`` or None.
    Ties go to the smallest previous index, with or without ``pairs`` (so zero ``pairs`` give the
    schedule of None). Raises ``_OutOfTime`` when ``deadline`` passes."""
    n_layers, n_cand = weights.shape
    cap = units.capacity
    if cap < 0:
        return None
    n_budget = cap + 1
    cost = units.cost  # [L, G] int64
    usable = allowed & (cost <= cap)  # [L, G]
    dtype = _PARENT_TYPES[parent_itemsize(n_cand)]
    parents = np.empty((n_layers, n_cand, n_budget), dtype=dtype)  # [L, G, B]; unreached cells never read
    value = np.full((n_cand, n_budget), np.inf)  # [G, B]
    for g in np.flatnonzero(usable[0]):
        value[g, cost[0, g]] = weights[0, g]
    for layer in range(1, n_layers):
        if deadline.expired():
            raise _OutOfTime
        if pairs is not None:
            previous, value = value, np.full((n_cand, n_budget), np.inf)  # [G, B] each
            for g in np.flatnonzero(usable[layer]):
                c = int(cost[layer, g])
                best_g, arg_g = _pair_step(previous, pairs[layer - 1], g, n_budget - c, monotone)  # [B - c]
                np.add(best_g, weights[layer, g], out=value[g, c:])
                parents[layer, g, c:] = arg_g
            continue
        best, arg = _best_previous(value, monotone)  # [G or 1, B] each
        value = np.full((n_cand, n_budget), np.inf)  # [G, B]
        for g in np.flatnonzero(usable[layer]):
            c = int(cost[layer, g])
            row = g if monotone else 0
            np.add(best[row, : n_budget - c], weights[layer, g], out=value[g, c:])
            parents[layer, g, c:] = arg[row, : n_budget - c]
    flat = int(np.argmin(value))
    if not np.isfinite(value.flat[flat]):
        return None
    g, b = divmod(flat, n_budget)
    idx = np.empty(n_layers, dtype=np.int64)
    idx[-1] = g
    for layer in range(n_layers - 1, 0, -1):
        prev = int(parents[layer, g, b])
        b -= int(cost[layer, g])
        g = prev
        idx[layer - 1] = g
    return idx


def solve_dp(
    problem: AllocationProblem,
    time_limit: float | None = None,
    *,
    max_bytes: int = MAX_BYTES,
    float_units: int = FLOAT_UNITS,
) -> Solution:
    """Solve ``problem`` by dynamic programming within ``max_bytes`` of memory.

    Status ``"optimal"`` (always, with exact budget units; with rounded units when proven) or
    ``"feasible"`` with a proven ``lower_bound`` (rounded units, not proven). ``time_limit`` (seconds,
    None: no limit) is checked between layers: ``NoScheduleError`` when it passes first. Raises
    ``InfeasibleError`` when no schedule fits, ``UnsupportedFeatureError`` for a feature the DP cannot
    express or a size beyond ``max_bytes``. ``float_units``: the capacity aimed at when rounding."""
    deadline = Deadline(time_limit)
    require_supported(problem, NAME, max_task=False, linear_constraints=False, cost_caps=False)
    units = budget_units(
        problem.budget_row, problem.n_candidates, solver=NAME, max_bytes=max_bytes, float_units=float_units
    )
    weights = problem.objective_matrix  # [L, G]
    try:
        inter = problem.interactions
        first = dp_pass(weights, problem.allowed, units.relaxed, problem.monotone, deadline, inter)
        if first is None:  # the relaxed row admits every feasible schedule: there is none
            raise diagnosed(explain_infeasible(problem), NAME)
        bound = float(problem.objective_of_indices(first))
        if not problem.index_violations(first):
            return Solution.build(
                problem,
                first,
                status="optimal",
                solver=NAME,
                solve_time=deadline.elapsed(),
                lower_bound=bound,
                note=units.note,
            )
        if units.exact:  # the exact integer row is the float row: this cannot happen
            raise SolverError(f"dp returned a schedule violating {problem.index_violations(first)}", solver=NAME)
        second = dp_pass(weights, problem.allowed, units.safe, problem.monotone, deadline, inter)
    except _OutOfTime:
        raise NoScheduleError(NAME, time_limit=deadline.limit, elapsed=deadline.elapsed()) from None
    if second is None or problem.index_violations(second):
        raise NoScheduleError(
            NAME,
            time_limit=deadline.limit,
            elapsed=deadline.elapsed(),
            lower_bound=bound,
            reason="the safe rounding of the budget (every schedule left is within rounding of the budget)",
        )
    second = improve(problem, second, max_steps=IMPROVE_STEPS)  # spend the slack the rounding left
    solution = Solution.build(
        problem,
        second,
        status="feasible",
        solver=NAME,
        solve_time=deadline.elapsed(),
        lower_bound=bound,
        note=units.note,
    )
    return solution.replace(status="optimal") if solution.gap == 0 else solution
