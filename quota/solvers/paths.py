"""Cheapest schedule under a per-layer additive weight: a shortest path over the layers.

Used to find the least achievable cost of a row (infeasibility diagnosis) and the pointwise
bounds of a problem; no budget dimension (see ``quota.solvers.dp`` for the budgeted DP).
"""

from __future__ import annotations

import numpy as np


def suffix_argmin(values: np.ndarray) -> np.ndarray:
    """``out[g] = argmin_{g' >= g} values[g']`` for a ``[G]`` array (the largest such g' on ties)."""
    out = np.empty(len(values), dtype=np.int64)
    arg = len(values) - 1
    for g in range(len(values) - 1, -1, -1):
        if values[g] < values[arg]:
            arg = g
        out[g] = arg
    return out


def cheapest_schedule(weights: np.ndarray, allowed: np.ndarray, monotone: bool) -> tuple[float, np.ndarray] | None:
    """Minimum of ``sum_l weights[l, g_l]`` over allowed (and, if ``monotone``, non-increasing) index
    sequences, with its arg-min ``[L]``; None when no such sequence exists. ``weights``, ``allowed``:
    ``[L, G]``. O(L * G) time."""
    n_layers, n_cand = weights.shape
    best = np.where(allowed[0], weights[0], np.inf)  # [G], best value ending at layer 0 with index g
    parents = []
    for layer in range(1, n_layers):
        if monotone:  # previous index g' >= g: suffix minimum
            prev_val = np.minimum.accumulate(best[::-1])[::-1]
            prev_arg = suffix_argmin(best)
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
