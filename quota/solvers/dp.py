"""Exact dynamic programming over (layer, grid index, budget units used): the test oracle.

It expresses: the ``"sum"`` aggregate (any number of tasks, any task weights), extra objective
terms, ``MinKeepBefore`` and ``FixedLayer``, monotonicity on or off, and a budget whose cost curve
is exactly integer after scaling by a power of two (tokens, KV bytes; see ``quota.solvers.scaling``).
It raises ``UnsupportedFeatureError`` for ``"max_task"``, ``LinearConstraint``, ``CostCap``, a budget
cost that is not exactly discretizable, or more than ``MAX_STATES`` states.

Cost: O(L * G * B) time and memory, B = integer budget units (after dividing by the gcd).
"""

from __future__ import annotations

import time

import numpy as np

from quota.solvers.features import require_supported
from quota.solvers.problem import AllocationProblem
from quota.solvers.scaling import integer_row
from quota.solvers.solution import Solution, UnsupportedFeatureError

NAME = "dp"
MAX_STATES = 50_000_000


def cheapest_schedule(weights: np.ndarray, allowed: np.ndarray, monotone: bool) -> tuple[float, np.ndarray] | None:
    """Minimum of ``sum_l weights[l, g_l]`` over allowed (and, if ``monotone``, non-increasing) index
    sequences, with its arg-min ``[L]``; None when no such sequence exists. ``weights``: ``[L, G]``."""
    n_layers, n_cand = weights.shape
    best = np.where(allowed[0], weights[0], np.inf)  # [G], best value ending at layer 0 with index g
    parents = []
    for layer in range(1, n_layers):
        if monotone:  # previous index g' >= g: suffix minimum
            prev_val = np.minimum.accumulate(best[::-1])[::-1]
            prev_arg = _suffix_argmin(best)
        else:
            prev_val = np.full(n_cand, best.min())
            prev_arg = np.full(n_cand, int(np.argmin(best)))
        best = np.where(allowed[layer], weights[layer] + prev_val, np.inf)
        parents.append(prev_arg)
    if not np.isfinite(best).any():
        return None
    idx = np.empty(n_layers, dtype=np.int64)
    idx[-1] = int(np.argmin(best))
    for layer in range(n_layers - 1, 0, -1):
        idx[layer - 1] = parents[layer - 1][idx[layer]]
    return float(weights[np.arange(n_layers), idx].sum()), idx


def _suffix_argmin(values: np.ndarray) -> np.ndarray:
    """``out[g] = argmin_{g' >= g} values[g']`` (the largest such g' on ties)."""
    out = np.empty(len(values), dtype=np.int64)
    arg = len(values) - 1
    for g in range(len(values) - 1, -1, -1):
        if values[g] < values[arg]:
            arg = g
        out[g] = arg
    return out


def solve_dp(problem: AllocationProblem, time_limit: float | None = None) -> Solution:
    """Solve ``problem`` exactly by dynamic programming (``time_limit`` is accepted and ignored).

    Returns status ``"optimal"``; raises ``InfeasibleError`` when no schedule fits."""
    from quota.solvers.diagnose import explain_infeasible

    start = time.perf_counter()
    require_supported(problem, NAME, max_task=False, linear_constraints=False, cost_caps=False)
    int_row = integer_row(problem.budget_row)
    if not int_row.exact:
        raise UnsupportedFeatureError(
            NAME,
            f"budget kind {problem.budget_kind!r} with costs that are not integer multiples of a power of two",
            "use cpsat or mip",
        )
    n_layers, n_cand = problem.n_layers, problem.n_candidates
    units = int_row.rhs
    if n_layers * n_cand * (max(units, 0) + 1) > MAX_STATES:
        raise UnsupportedFeatureError(NAME, f"a budget of {units} integer units (too many DP states)")
    if units < 0:
        raise explain_infeasible(problem, exact=True)

    cost = int_row.coef  # [L, G] int, each layer's minimum 0
    weights = problem.objective_matrix  # [L, G]
    allowed = problem.allowed & (cost <= units)
    n_budget = units + 1
    # value[g, b]: best objective of layers 0..l with layer l at index g and exactly b units used
    value = np.full((n_cand, n_budget), np.inf)
    for g in np.flatnonzero(allowed[0]):
        value[g, cost[0, g]] = weights[0, g]
    parents = np.zeros((n_layers, n_cand, n_budget), dtype=np.int16 if n_cand < 2**15 else np.int32)
    for layer in range(1, n_layers):
        prev_val, prev_arg = _best_previous(value, problem.monotone)  # [G, B] each
        value = np.full((n_cand, n_budget), np.inf)
        for g in np.flatnonzero(allowed[layer]):
            c = cost[layer, g]
            value[g, c:] = prev_val[g, : n_budget - c] + weights[layer, g]
            parents[layer, g, c:] = prev_arg[g, : n_budget - c]
    if not np.isfinite(value).any():
        raise explain_infeasible(problem, exact=True)
    g, b = np.unravel_index(int(np.argmin(value)), value.shape)
    idx = [int(g)]
    for layer in range(n_layers - 1, 0, -1):
        prev = int(parents[layer, g, b])
        b -= cost[layer, g]
        g = prev
        idx.append(g)
    idx.reverse()
    objective = float(problem.objective_of_indices(np.asarray(idx)))
    return Solution.build(
        problem, idx, status="optimal", solver=NAME, solve_time=time.perf_counter() - start, lower_bound=objective
    )


def _best_previous(value: np.ndarray, monotone: bool) -> tuple[np.ndarray, np.ndarray]:
    """For each next index g and budget b: the best previous value over allowed previous indices
    (``g' >= g`` when monotone, any ``g'`` otherwise) and its arg, each ``[G, B]``."""
    n_cand = value.shape[0]
    if not monotone:
        arg = np.argmin(value, axis=0)
        best = value[arg, np.arange(value.shape[1])]
        return np.broadcast_to(best, value.shape), np.broadcast_to(arg, value.shape)
    best = value.copy()
    arg = np.broadcast_to(np.arange(n_cand)[:, None], value.shape).copy()
    for g in range(n_cand - 2, -1, -1):
        take = best[g + 1] < best[g]
        best[g] = np.where(take, best[g + 1], best[g])
        arg[g] = np.where(take, arg[g + 1], arg[g])
    return best, arg
