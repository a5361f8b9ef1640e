"""The k best distinct schedules by dynamic programming: the DP of ``quota.solvers.dp`` with the k
best partial objectives per state instead of one.

State after layer l: ``value[g, b, r]``, the r-th least objective (r < k, ascending, ``inf`` where
fewer exist) of the *distinct* partial schedules of layers ``0..l`` ending at grid index g with
exactly b budget units used. The step into index g at ``b`` merges, over every allowed previous
index g', the lists ``value[g', b - cost, :] + interactions[l, g', g]`` (one list of ``G * k``
candidates) and keeps its k least by a stable sort, with back-pointers ``(g', r')``. Distinct
back-pointers are distinct partial schedules, and a schedule has one budget use, so the k least over
the last layer's states are the k best distinct schedules: exact (the standard k-shortest-paths
argument on the layered DAG of states). Ties at equal values are kept in the order (g', r'), which
is deterministic.

Exact budget units only (``quota.solvers.scaling.integer_row`` exact: token budgets always): rounded
units would rank infeasible schedules or drop feasible ones, so float budget costs raise
``UnsupportedFeatureError`` (CP-SAT enumeration takes them). Time O(L * G^2 * B * k log(G k)),
memory ``kbest_bytes`` (back-pointers ``[L, G, B, k]`` twice plus work arrays), refused above
``max_bytes`` with the size named.
"""

from __future__ import annotations

import numpy as np

from quota.solvers.diagnose import explain_infeasible
from quota.solvers.errors import NoScheduleError, UnsupportedFeatureError, diagnosed
from quota.solvers.features import require_supported
from quota.solvers.limits import Deadline
from quota.solvers.problem import AllocationProblem
from quota.solvers.scaling import integer_row
from quota.solvers.solution import Solution
from quota.solvers.units import parent_itemsize

NAME = "dp"
KBEST_WORK_ARRAYS = 5  # [G, B, k] float64/int64 arrays alive during one step
_TYPES = {1: np.uint8, 2: np.uint16, 4: np.uint32}


def kbest_bytes(n_layers: int, n_candidates: int, capacity: int, k: int) -> int:
    """Peak memory of the k-best DP in bytes: back-pointers (index and rank) ``[L, G, B, k]`` plus
    ``KBEST_WORK_ARRAYS`` float64 arrays ``[G, B, k]``, with ``B = capacity + 1``."""
    states = n_candidates * (max(capacity, 0) + 1) * k
    pointer = parent_itemsize(n_candidates) + parent_itemsize(k)
    return n_layers * states * pointer + KBEST_WORK_ARRAYS * 8 * states


def kbest_pass(
    problem: AllocationProblem, cost: np.ndarray, capacity: int, k: int, deadline: Deadline
) -> list[np.ndarray]:
    """Up to k distinct feasible schedules (grid indices ``[L]``) of least objective, in the DP's
    order (ascending value, ties by state order). ``cost``: ``[L, G]`` integer units, ``capacity``:
    the units allowed. Raises ``NoScheduleError`` when ``deadline`` passes."""
    weights, allowed, monotone, pairs = (
        problem.objective_matrix, problem.allowed, problem.monotone, problem.interactions
    )
    n_layers, n_cand = weights.shape
    if capacity < 0:
        return []
    n_budget = capacity + 1
    usable = allowed & (cost <= capacity)  # [L, G]
    g_type, r_type = _TYPES[parent_itemsize(n_cand)], _TYPES[parent_itemsize(k)]
    parent_g = np.zeros((n_layers, n_cand, n_budget, k), dtype=g_type)  # [L, G, B, k]
    parent_r = np.zeros((n_layers, n_cand, n_budget, k), dtype=r_type)  # [L, G, B, k]
    value = np.full((n_cand, n_budget, k), np.inf)  # [G, B, k]
    for g in np.flatnonzero(usable[0]):
        value[g, cost[0, g], 0] = weights[0, g]
    for layer in range(1, n_layers):
        if deadline.expired():
            raise NoScheduleError(NAME, time_limit=deadline.limit, elapsed=deadline.elapsed())
        previous, value = value, np.full((n_cand, n_budget, k), np.inf)
        for g in np.flatnonzero(usable[layer]):
            c = int(cost[layer, g])
            span = n_budget - c
            start = g if monotone else 0
            cands = previous[start:, :span, :]  # [G', span, k]
            if pairs is not None:
                cands = cands + pairs[layer - 1, start:, g][:, None, None]
            cands = cands.transpose(1, 0, 2).reshape(span, -1)  # [span, G' * k], order (g', r')
            order = np.argsort(cands, axis=1, kind="stable")[:, :k]  # [span, <=k]
            kept = order.shape[1]
            value[g, c:, :kept] = np.take_along_axis(cands, order, axis=1) + weights[layer, g]
            parent_g[layer, g, c:, :kept] = order // k + start
            parent_r[layer, g, c:, :kept] = order % k
    flat = value.ravel()
    order = np.argsort(flat, kind="stable")[:k]
    out = []
    for position in order:
        if not np.isfinite(flat[position]):
            break
        g, b, r = np.unravel_index(position, value.shape)
        g, b, r = int(g), int(b), int(r)
        idx = np.empty(n_layers, dtype=np.int64)
        idx[-1] = g
        for layer in range(n_layers - 1, 0, -1):
            prev_g, prev_r = int(parent_g[layer, g, b, r]), int(parent_r[layer, g, b, r])
            b -= int(cost[layer, g])
            g, r = prev_g, prev_r
            idx[layer - 1] = g
        out.append(idx)
    return out


def k_best_dp(problem: AllocationProblem, k: int, time_limit: float | None = None, *, max_bytes: int) -> list[Solution]:
    """The k best distinct schedules of ``problem`` by the k-best DP (module docstring), each a
    ``Solution`` with status ``"optimal"`` (proven: no unlisted schedule is better) and
    ``lower_bound`` its own objective, sorted by objective then grid indices.

    Raises ``UnsupportedFeatureError`` for what the DP cannot express, for budget costs that need
    rounded units, or for a size beyond ``max_bytes``; ``InfeasibleError`` when no schedule fits."""
    deadline = Deadline(time_limit)
    require_supported(problem, NAME, max_task=False, linear_constraints=False, cost_caps=False)
    row = integer_row(problem.budget_row)
    if not row.exact:
        raise UnsupportedFeatureError(
            NAME, "k best schedules with budget costs that are not integer multiples of a power of two", "use cpsat"
        )
    need = kbest_bytes(problem.n_layers, problem.n_candidates, row.rhs, k)
    if need > max_bytes:
        raise UnsupportedFeatureError(
            NAME,
            f"k={k} best of {problem.n_layers} layers x {problem.n_candidates} keep counts x {max(row.rhs, 0) + 1} "
            f"budget units: {need / 2**20:,.0f} MiB, above its memory bound of {max_bytes / 2**20:,.0f} MiB (max_bytes)",
            "use cpsat or a smaller k",
        )
    schedules = kbest_pass(problem, row.coef, row.rhs, k, deadline)
    if not schedules:
        raise diagnosed(explain_infeasible(problem), NAME)
    elapsed = deadline.elapsed()
    out = []
    for idx in schedules:
        value = float(problem.objective_of_indices(idx))
        out.append(Solution.build(problem, idx, status="optimal", solver=NAME, solve_time=elapsed, lower_bound=value))
    return sorted(out, key=lambda s: (s.objective, s.indices))
