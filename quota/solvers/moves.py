"""Moves between schedules (grid indices) for the heuristics: greedy lowering, repair, improvement.

A *lowering move* ``(l, g)`` sets layer l to the largest allowed index ``<= g`` and, under
monotonicity, clips every later layer to the same way; a *raising move* sets layer l to the
smallest allowed index ``>= g`` and, under monotonicity, lifts every earlier layer; a *layer move*
changes one layer only. Every generated candidate is allowed and (if required) monotone, so only
the linear rows remain to be checked. Candidates come as ``[M, L]`` int arrays in a fixed order,
which keeps every heuristic deterministic.
"""

from __future__ import annotations

import numpy as np

from quota.solvers.problem import AllocationProblem

_NONE = -1


def floor_table(allowed: np.ndarray) -> np.ndarray:
    """``out[l, g]``: the largest allowed index ``<= g`` at layer l, or -1; ``[L, G]``."""
    n_cand = allowed.shape[1]
    marked = np.where(allowed, np.arange(n_cand)[None, :], _NONE)
    return np.maximum.accumulate(marked, axis=1)


def ceil_table(allowed: np.ndarray) -> np.ndarray:
    """``out[l, g]``: the smallest allowed index ``>= g`` at layer l, or G; ``[L, G]``."""
    n_cand = allowed.shape[1]
    marked = np.where(allowed, np.arange(n_cand)[None, :], n_cand)
    return np.minimum.accumulate(marked[:, ::-1], axis=1)[:, ::-1]


def top_schedule(problem: AllocationProblem) -> np.ndarray | None:
    """The pointwise largest allowed (and, if required, monotone) schedule, or None if none exists."""
    floor = floor_table(problem.allowed)
    cap = problem.n_candidates - 1
    idx = np.empty(problem.n_layers, dtype=np.int64)
    for layer in range(problem.n_layers):
        g = floor[layer, cap if problem.monotone else -1]
        if g == _NONE:
            return None
        idx[layer] = g
        if problem.monotone:
            cap = int(g)
    return idx


def _valid(problem: AllocationProblem, cands: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Candidates ``[M, L]`` that are in range, allowed, monotone and differ from ``idx`` (duplicates
    may remain; they change no choice)."""
    n_cand = problem.n_candidates
    ok = (cands >= 0).all(axis=1) & (cands < n_cand).all(axis=1)
    cands = cands[ok]
    layers = np.arange(problem.n_layers)
    ok = problem.allowed[layers, cands].all(axis=1) & (cands != idx).any(axis=1)
    if problem.monotone:
        ok &= (np.diff(cands, axis=1) <= 0).all(axis=1)
    return cands[ok]


def lowering_moves(problem: AllocationProblem, idx: np.ndarray) -> np.ndarray:
    """Every lowering move from ``idx``, ``[M, L]``."""
    n_layers, n_cand = problem.n_layers, problem.n_candidates
    floor = floor_table(problem.allowed)  # [L, G]
    layer = np.arange(n_layers)[:, None, None]  # l
    target = np.arange(n_cand)[None, :, None]  # g
    other = np.arange(n_layers)[None, None, :]  # m
    if problem.monotone:
        lowered = np.where(floor.T[None] == _NONE, _NONE, np.minimum(idx[None, None, :], floor.T[None]))
        cands = np.where(other < layer, idx[None, None, :], lowered)  # [L, G, L]
    else:
        cands = np.where(other == layer, floor.T[None], idx[None, None, :])
    cands = np.where((target < idx[:, None, None]) | (other < layer), cands, _NONE)
    return _valid(problem, cands.reshape(-1, n_layers), idx)


def raising_moves(problem: AllocationProblem, idx: np.ndarray) -> np.ndarray:
    """Every raising move from ``idx``, ``[M, L]``."""
    n_layers, n_cand = problem.n_layers, problem.n_candidates
    ceil = ceil_table(problem.allowed)  # [L, G]
    layer = np.arange(n_layers)[:, None, None]
    target = np.arange(n_cand)[None, :, None]
    other = np.arange(n_layers)[None, None, :]
    if problem.monotone:
        raised = np.maximum(idx[None, None, :], ceil.T[None])
        cands = np.where(other > layer, idx[None, None, :], raised)
    else:
        cands = np.where(other == layer, ceil.T[None], idx[None, None, :])
    cands = np.where((target > idx[:, None, None]) | (other > layer), cands, _NONE)
    return _valid(problem, cands.reshape(-1, n_layers), idx)


def layer_moves(problem: AllocationProblem, idx: np.ndarray) -> np.ndarray:
    """Every single-layer change from ``idx``, ``[M, L]``."""
    n_layers, n_cand = problem.n_layers, problem.n_candidates
    cands = np.broadcast_to(idx, (n_layers, n_cand, n_layers)).copy()
    cands[np.arange(n_layers), :, np.arange(n_layers)] = np.arange(n_cand)[None, :]
    return _valid(problem, cands.reshape(-1, n_layers), idx)


def row_values(problem: AllocationProblem, cands: np.ndarray) -> np.ndarray:
    """Left-hand side of every row for every candidate, ``[R, M]``."""
    return np.stack([row.values(cands) for row in problem.rows])


def feasible_mask(problem: AllocationProblem, values: np.ndarray) -> np.ndarray:
    """Which candidates (columns of ``row_values``) satisfy every row, ``[M]``."""
    return np.all([row.holds(values[i]) for i, row in enumerate(problem.rows)], axis=0)


def lower_until_feasible(problem: AllocationProblem, idx: np.ndarray) -> np.ndarray | None:
    """Greedy marginal gain: repeatedly take the lowering move with the least objective increase per
    unit of normalized cost saved on the violated rows, until every row holds. None if it gets stuck
    (no move saves anything on a violated row)."""
    idx = np.asarray(idx, dtype=np.int64).copy()
    scales = np.array([row.scale or 1.0 for row in problem.rows])
    signed = np.array([1.0 if row.sense == "<=" else -1.0 for row in problem.rows])
    while True:
        current = row_values(problem, idx[None])[:, 0]
        per_row = np.array([not row.holds(current[i]) for i, row in enumerate(problem.rows)])
        if not per_row.any():
            return idx
        cands = lowering_moves(problem, idx)
        if len(cands) == 0:
            return None
        values = row_values(problem, cands)
        saved = ((current[:, None] - values) * (signed / scales)[:, None])[per_row].sum(axis=0)
        useful = saved > 0
        if not useful.any():
            return None
        increase = problem.objective_of_indices(cands) - problem.objective_of_indices(idx)
        ratio = np.where(useful, increase / np.where(useful, saved, 1.0), np.inf)
        idx = cands[int(np.argmin(ratio))]


def repair_rows(problem: AllocationProblem, idx: np.ndarray, max_steps: int = 1_000) -> np.ndarray | None:
    """Move toward feasibility when lowering alone cannot (``>=`` rows, rows not cost-like): repeatedly
    take the raising, lowering or single-layer move with the largest drop in total normalized excess
    over the rows (ties: the smaller objective). None if the excess stops dropping."""
    idx = np.asarray(idx, dtype=np.int64).copy()
    scales = np.array([row.scale or 1.0 for row in problem.rows])[:, None]

    def excess(values: np.ndarray) -> np.ndarray:
        over = np.stack([row.excess(values[i]) - row.tol for i, row in enumerate(problem.rows)])
        return (np.maximum(over, 0.0) / scales).sum(axis=0)

    current = float(excess(row_values(problem, idx[None]))[0])
    for _ in range(max_steps):
        if current <= 0:
            return idx
        cands = np.concatenate([raising_moves(problem, idx), lowering_moves(problem, idx), layer_moves(problem, idx)])
        if len(cands) == 0:
            return None
        left = excess(row_values(problem, cands))
        best = left.min()
        if best >= current:
            return None
        ties = np.flatnonzero(left <= best)
        idx = cands[ties[int(np.argmin(problem.objective_of_indices(cands[ties])))]]
        current = float(best)
    return None


def improve(problem: AllocationProblem, idx: np.ndarray, max_steps: int = 10_000) -> np.ndarray:
    """Local search from a feasible ``idx``: repeatedly apply the best feasible improving move
    (raising, lowering or single-layer). Moves that do not raise the budget cost go first (largest
    decrease); otherwise the best decrease per unit of budget cost. Returns a feasible schedule whose
    objective is no worse."""
    idx = np.asarray(idx, dtype=np.int64).copy()
    budget = problem.budget_row
    for _ in range(max_steps):
        cands = np.concatenate([raising_moves(problem, idx), lowering_moves(problem, idx), layer_moves(problem, idx)])
        if len(cands) == 0:
            break
        ok = feasible_mask(problem, row_values(problem, cands))
        cands = cands[ok]
        base = float(problem.objective_of_indices(idx))
        gain = base - problem.objective_of_indices(cands)
        better = gain > 1e-12 * max(1.0, abs(base))
        if not better.any():
            break
        cands, gain = cands[better], gain[better]
        extra = budget.values(cands) - float(budget.values(idx))
        free = extra <= 0
        if free.any():
            pick = int(np.flatnonzero(free)[np.argmax(gain[free])])
        else:
            pick = int(np.argmax(gain / extra))
        idx = cands[pick]
    return idx


def repair_monotone(problem: AllocationProblem, idx: np.ndarray, downward: bool) -> np.ndarray | None:
    """Project a schedule onto the allowed, monotone ones: ``downward`` lowers layers (forward pass,
    each to the largest allowed index not above itself or its predecessor); otherwise raises layers
    (backward pass). None if that is impossible."""
    idx = np.asarray(idx, dtype=np.int64).copy()
    if downward:
        floor = floor_table(problem.allowed)
        for layer in range(problem.n_layers):
            cap = idx[layer] if layer == 0 or not problem.monotone else min(idx[layer], idx[layer - 1])
            idx[layer] = floor[layer, cap]
            if idx[layer] == _NONE:
                return None
    else:
        ceil = ceil_table(problem.allowed)
        n_cand = problem.n_candidates
        for layer in range(problem.n_layers - 1, -1, -1):
            last = layer == problem.n_layers - 1 or not problem.monotone
            low = idx[layer] if last else max(idx[layer], idx[layer + 1])
            idx[layer] = ceil[layer, low]
            if idx[layer] == n_cand:
                return None
    if problem.monotone and (np.diff(idx) > 0).any():
        return None
    return idx
