"""Validation and normalization of AllocationProblem fields.

Every error is a ``ProblemError`` whose message starts with the field name (``budget``, ``grid``,
``damage``, ``costs['flops']``, ``constraints[2].layer``, ...) and shows the offending value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from quota.solvers.constraints import SENSES, CostCap, FixedLayer, LinearConstraint, MinKeepBefore
from quota.solvers.errors import ProblemError

COST_KINDS = ("tokens", "flops", "kv", "latency")
AGGREGATES = ("sum", "max_task")


def _error(message: str) -> ProblemError:
    return ProblemError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _finite_array(name: str, value: Any, ndims: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise _error(f"{name} must be a numeric array, got {type(value).__name__}: {exc}") from None
    if array.ndim not in ndims:
        raise _error(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape {array.shape}")
    if array.size == 0:
        raise _error(f"{name} must not be empty, got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise _error(f"{name} must be finite, got {array[where]} at index {where}")
    array.flags.writeable = False
    return array


def _check_shape(name: str, array: np.ndarray, shape: tuple[int, int]) -> None:
    if array.shape != shape:
        raise _error(f"{name} must have shape {shape} ([L, G]), got {array.shape}")


def _grid(n_tokens: int, grid: Any) -> tuple[int, ...]:
    values = list(np.asarray(grid).ravel()) if not isinstance(grid, (list, tuple)) else list(grid)
    if not values:
        raise _error("grid must not be empty")
    if not all(_is_int(v) or (isinstance(v, (float, np.floating)) and float(v).is_integer()) for v in values):
        raise _error(f"grid must hold integers, got {values}")
    values = [int(v) for v in values]
    if any(b <= a for a, b in zip(values, values[1:])):
        raise _error(f"grid must be sorted and unique, got {values}")
    if values[0] < 0 or values[-1] > n_tokens:
        bad = [v for v in values if not 0 <= v <= n_tokens]
        raise _error(f"grid values must lie in [0, n_tokens={n_tokens}], got {bad}")
    if values[-1] != n_tokens:
        raise _error(f"grid must contain n_tokens={n_tokens}, got {values}")
    return tuple(values)


def _costs(costs: Any, grid: tuple[int, ...], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    if costs is None:
        costs = {}
    if not hasattr(costs, "items"):
        raise _error(f"costs must be a mapping kind -> [L, G] array, got {type(costs).__name__}")
    out: dict[str, np.ndarray] = {}
    for kind, curve in costs.items():
        if kind not in COST_KINDS:
            raise _error(f"costs has unknown kind {kind!r}; known kinds: {', '.join(COST_KINDS)}")
        name = f"costs[{kind!r}]"
        array = _finite_array(name, curve, (2,))
        _check_shape(name, array, shape)
        if (array < 0).any():
            where = tuple(int(i) for i in np.argwhere(array < 0)[0])
            raise _error(f"{name} must be non-negative, got {array[where]} at index {where}")
        drops = np.diff(array, axis=1) < 0
        if drops.any():
            layer, g = (int(i) for i in np.argwhere(drops)[0])
            raise _error(
                f"{name} must be non-decreasing in k, but layer {layer} costs {array[layer, g]} at k={grid[g]} "
                f"and {array[layer, g + 1]} at k={grid[g + 1]}"
            )
        out[kind] = array
    if "tokens" not in out:
        tokens = np.broadcast_to(np.asarray(grid, dtype=np.float64), shape).copy()
        tokens.flags.writeable = False
        out["tokens"] = tokens
    return out


def _constraint(i: int, c: Any, grid: tuple[int, ...], costs: dict[str, np.ndarray], shape: tuple[int, int]) -> Any:
    name = f"constraints[{i}]"
    n_tokens, n_layers = grid[-1], shape[0]
    if isinstance(c, MinKeepBefore):
        if not _is_int(c.layer) or not 0 <= c.layer <= n_layers:
            raise _error(f"{name}.layer of MinKeepBefore must be an integer in [0, {n_layers}], got {c.layer!r}")
        if not _is_int(c.tokens) or not 0 <= c.tokens <= n_tokens:
            raise _error(f"{name}.tokens must be an integer in [0, {n_tokens}], got {c.tokens!r}")
        return c
    if isinstance(c, FixedLayer):
        if not _is_int(c.layer) or not 0 <= c.layer < n_layers:
            raise _error(f"{name}.layer of FixedLayer must be an integer in [0, {n_layers - 1}], got {c.layer!r}")
        if not _is_int(c.tokens) or c.tokens not in grid:
            raise _error(f"{name}.tokens of FixedLayer must be a grid value, got {c.tokens!r}")
        return c
    if isinstance(c, LinearConstraint):
        coef = _finite_array(f"{name}.coef", c.coef, (2,))
        _check_shape(f"{name}.coef", coef, shape)
        if c.sense not in SENSES:
            raise _error(f"{name}.sense must be one of {SENSES}, got {c.sense!r}")
        if not isinstance(c.rhs, (int, float, np.integer, np.floating)) or not np.isfinite(c.rhs):
            raise _error(f"{name}.rhs must be a finite number, got {c.rhs!r}")
        return LinearConstraint(coef, float(c.rhs), c.sense, str(c.name))
    if isinstance(c, CostCap):
        if c.kind not in costs:
            raise _error(f"{name}.kind of CostCap must be a kind in costs ({', '.join(costs)}), got {c.kind!r}")
        if not isinstance(c.value, (int, float, np.integer, np.floating)) or not np.isfinite(c.value):
            raise _error(f"{name}.value must be a finite number, got {c.value!r}")
        return CostCap(c.kind, float(c.value))
    raise _error(f"{name} must be MinKeepBefore, FixedLayer, LinearConstraint or CostCap, got {type(c).__name__}")


def _interactions(value: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """``interactions`` as a read-only ``[L-1, G, G]`` float64 array, or None."""
    if value is None:
        return None
    n_layers, n_cand = shape
    want = (n_layers - 1, n_cand, n_cand)
    if n_layers < 2:
        raise _error(f"interactions needs at least 2 layers (pairs of adjacent layers), got {n_layers} layer")
    array = _finite_array("interactions", value, (3,))
    if array.shape != want:
        raise _error(f"interactions must have shape {want} ([L-1, G, G]), got {array.shape}")
    return array


class _Fields:
    """Attribute access to a field mapping (``fields.budget``)."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.__dict__.update(fields)


def validate_problem(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check every AllocationProblem field (given as field name -> value); return the normalized values
    to store (field -> value)."""
    problem = _Fields(fields)
    n_tokens = problem.n_tokens
    if not _is_int(n_tokens) or n_tokens < 1:
        raise _error(f"n_tokens must be a positive integer, got {n_tokens!r}")
    grid = _grid(int(n_tokens), problem.grid)
    damage = _finite_array("damage", problem.damage, (2, 3))
    if damage.shape[-1] != len(grid):
        raise _error(f"damage must have a last axis of len(grid)={len(grid)}, got shape {damage.shape}")
    shape = (int(damage.shape[-2]), len(grid))
    n_tasks = 1 if damage.ndim == 2 else int(damage.shape[0])

    budget = problem.budget
    if not isinstance(budget, (int, float, np.integer, np.floating)) or isinstance(budget, bool):
        raise _error(f"budget must be a number in (0, 1], got {budget!r}")
    if not (np.isfinite(budget) and 0.0 < float(budget) <= 1.0):
        raise _error(f"budget must lie in (0, 1], got {budget!r}")

    costs = _costs(problem.costs, grid, shape)
    if problem.budget_kind not in costs:
        raise _error(f"budget_kind must be a kind in costs ({', '.join(costs)}), got {problem.budget_kind!r}")
    if costs[problem.budget_kind][:, -1].sum() <= 0:
        raise _error(f"costs[{problem.budget_kind!r}] must have a positive full cost (at k=N) for the budget")
    if not isinstance(problem.monotone, (bool, np.bool_)):
        raise _error(f"monotone must be a bool, got {problem.monotone!r}")
    if problem.aggregate not in AGGREGATES:
        raise _error(f"aggregate must be one of {AGGREGATES}, got {problem.aggregate!r}")

    if problem.task_weights is None:
        weights = np.ones(n_tasks)
        weights.flags.writeable = False
    else:
        weights = _finite_array("task_weights", problem.task_weights, (1,))
        if weights.shape != (n_tasks,):
            raise _error(f"task_weights must have shape ({n_tasks},) (one per task), got {weights.shape}")
        if (weights < 0).any():
            raise _error(f"task_weights must be non-negative, got {weights.tolist()}")

    extras = []
    for i, term in enumerate(problem.extra_costs):
        array = _finite_array(f"extra_costs[{i}]", term, (2,))
        _check_shape(f"extra_costs[{i}]", array, shape)
        extras.append(array)
    if problem.extra_weights is None:
        extra_weights = tuple(1.0 for _ in extras)
    else:
        extra_weights = tuple(problem.extra_weights)
        if len(extra_weights) != len(extras):
            raise _error(
                f"extra_weights must have one weight per extra_costs term ({len(extras)}), got {len(extra_weights)}"
            )
        for i, w in enumerate(extra_weights):
            if not isinstance(w, (int, float, np.integer, np.floating)) or not np.isfinite(w):
                raise _error(f"extra_weights[{i}] must be a finite number, got {w!r}")
        extra_weights = tuple(float(w) for w in extra_weights)

    constraints = tuple(_constraint(i, c, grid, costs, shape) for i, c in enumerate(problem.constraints))
    return {
        "interactions": _interactions(getattr(problem, "interactions", None), shape),
        "n_tokens": int(n_tokens),
        "grid": grid,
        "damage": damage,
        "budget": float(budget),
        "costs": costs,
        "monotone": bool(problem.monotone),
        "task_weights": weights,
        "extra_costs": tuple(extras),
        "extra_weights": extra_weights,
        "constraints": constraints,
    }
