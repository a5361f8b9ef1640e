"""The additive damage model's terms, from measured damages (numpy only, so that solving never imports torch).

- ``h_l(k) = D(l, k) - D(l + 1, k)``: the per-layer term, from the prune-from-layer damages ``D`` (keep all tokens
  before layer ``l``, ``k`` from ``l`` on; ``D(L, k) = 0``);
- ``J[l, a, b]``: the interaction of adjacent pruning points, from two-step schedules (all tokens before ``l``,
  ``grid[a]`` at ``l``, ``grid[b]`` from ``l + 1`` on) measured at a subgrid, less the additive prediction."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def per_layer_contributions(from_layer: np.ndarray) -> np.ndarray:
    """``h[l] = from_layer[l] - from_layer[l + 1]`` with ``from_layer[L] = 0`` (``[L, G]``)."""
    nxt = np.vstack([from_layer[1:], np.zeros_like(from_layer[:1])])
    return from_layer - nxt


def interaction_subgrid(n_grid: int, steps: int) -> tuple[int, ...]:
    """Grid indices of the interaction subgrid: about ``steps + 1`` indices evenly spaced over ``0 .. n_grid - 1``
    (rounded, distinct), always the first (the smallest keep count) and the last (N). ``steps >= 1``."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"interaction steps must be a positive integer, got {steps!r}")
    return tuple(sorted({int(round(x)) for x in np.linspace(0, n_grid - 1, min(steps, n_grid - 1) + 1)}))


def interaction_terms(from_layer: np.ndarray, measured: Mapping[tuple[int, int, int], float],
                      subgrid: Sequence[int]) -> np.ndarray:
    """``J`` ``[L-1, G, G]`` from the prune-from-layer damage ``from_layer`` ``[L, G]`` and the measured damage of
    two-step schedules ``measured[(l, a, b)]`` (:func:`pair_items`).

    At subgrid points ``a > b``: ``J[l, a, b] = measured - (h_l(grid[a]) + from_layer[l + 1, b])``, the
    measurement less the additive prediction (``h`` of :func:`per_layer_contributions`); pairs not measured
    (``grid[a] = N``) and subgrid points on or above the diagonal are 0. Between subgrid points ``J`` is the
    bilinear interpolation in (a, b) index space, then set to 0 exactly wherever ``a <= b`` (a step of 0 is the
    additive model's own prune-from-layer schedule; ``a < b`` is never feasible in a non-increasing schedule)."""
    n_layers, n_grid = from_layer.shape
    h = per_layer_contributions(from_layer)
    sub = np.asarray(subgrid)
    out = np.zeros((max(n_layers - 1, 0), n_grid, n_grid))
    for layer in range(n_layers - 1):
        at = np.zeros((len(sub), len(sub)))
        for i, a in enumerate(sub):
            for j, b in enumerate(sub):
                if (layer, a, b) in measured:
                    at[i, j] = measured[(layer, a, b)] - (h[layer, a] + from_layer[layer + 1, b])
        out[layer] = bilinear(at, sub, n_grid)
    return out * np.tril(np.ones((n_grid, n_grid)), -1)


def bilinear(values: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """``[size, size]``: ``values`` ``[m, m]`` given at ``points x points`` (ascending indices) interpolated
    bilinearly at every integer index pair (separable: along the second index, then along the first)."""
    idx = np.arange(size)
    rows = np.stack([np.interp(idx, points, row) for row in values])  # [m, size]
    return np.stack([np.interp(idx, points, rows[:, b]) for b in range(size)], axis=1)
