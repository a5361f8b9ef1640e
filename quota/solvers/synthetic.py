"""Synthetic allocation problems of any size, for tests and the solver benchmark (no profile needed).

``synthetic_problem(n_layers, n_candidates, shape)`` builds damage curves like measured ones:
early layers more sensitive, damage 0 at k = N and growing as tokens are dropped. Shapes:

- ``"smooth"``: ``s_l * (1 - k/N) ** p_l`` plus a small non-increasing ripple (convex-ish curves);
- ``"staircase"``: the smooth curve held constant over blocks of N/8 tokens (plateaus, many ties,
  as when a kernel pads to tiles);
- ``"noisy"``: the smooth curve plus independent noise of 20% of the layer's sensitivity at every
  k < N (non-monotone curves, negative values).

The budget kind is ``"tokens"`` unless ``budget_kind`` says otherwise; ``"latency"`` adds a float
latency curve (tile steps plus a per-token term, not integer) to exercise rounded DP units.
"""

from __future__ import annotations

import numpy as np

from quota.solvers.problem import AllocationProblem, default_grid

SHAPES = ("smooth", "staircase", "noisy")


def synthetic_damage(n_layers: int, grid: np.ndarray, n_tokens: int, shape: str, seed: int) -> np.ndarray:
    """Damage ``[L, G]`` of the given shape (see the module docstring)."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    rng = np.random.default_rng(seed)
    sensitivity = np.exp(-np.arange(n_layers) / max(n_layers / 4, 1.0)) * rng.uniform(0.5, 1.5, n_layers)  # [L]
    power = rng.uniform(1.0, 3.0, n_layers)  # [L]
    kept = grid.astype(np.float64)  # [G]
    if shape == "staircase":
        block = n_tokens / 8
        kept = np.floor(kept / block) * block
        kept[grid == n_tokens] = n_tokens
    dropped = 1.0 - kept / n_tokens  # [G]
    damage = sensitivity[:, None] * dropped[None, :] ** power[:, None]  # [L, G]
    ripple = np.sort(rng.uniform(0, 0.05, (n_layers, len(grid))), axis=1)[:, ::-1] * sensitivity[:, None]
    if shape != "staircase":
        damage = damage + ripple - ripple[:, -1:]
    if shape == "noisy":
        noise = rng.normal(0.0, 0.2, (n_layers, len(grid))) * sensitivity[:, None]  # [L, G]
        noise[:, grid == n_tokens] = 0.0
        damage = damage + noise
    return damage


def synthetic_problem(
    n_layers: int,
    n_candidates: int,
    shape: str = "smooth",
    *,
    n_tokens: int = 576,
    budget: float = 0.3,
    budget_kind: str = "tokens",
    seed: int = 0,
) -> AllocationProblem:
    """A problem with ``n_layers`` layers and a grid of ``n_candidates`` keep counts
    (``default_grid(n_tokens, n_candidates - 1)``: 17, 33, 65, 129 give 0, N/16, ..., N)."""
    grid = default_grid(n_tokens, n_candidates - 1)
    if len(grid) != n_candidates:
        raise ValueError(f"default_grid({n_tokens}, {n_candidates - 1}) has {len(grid)} values, not {n_candidates}")
    grid_array = np.asarray(grid)
    damage = synthetic_damage(n_layers, grid_array, n_tokens, shape, seed)
    costs = {}
    if budget_kind == "latency":
        text = 40
        tiles = np.ceil((grid_array + text) / 64)  # [G]
        per_layer = np.linspace(1.2, 0.8, n_layers)[:, None]  # [L, 1] later layers a little cheaper
        costs["latency"] = per_layer * (1e-4 * tiles + 3.1e-7 * grid_array)[None, :]  # seconds
    return AllocationProblem(
        n_tokens=n_tokens, grid=grid, damage=damage, budget=budget, costs=costs, budget_kind=budget_kind
    )
