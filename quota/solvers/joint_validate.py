"""Validation and normalization of JointProblem fields.

Every error is a one-line ``ProblemError`` whose message starts with the field name (``precisions``,
``token_damage``, ``costs['ttft']``, ``budgets['decode']``, ``constraints[1].precisions``...) and shows
the offending value.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from quota.solvers.constraints import CostCap, FixedLayer, LinearConstraint, MinKeepBefore
from quota.solvers.errors import ProblemError
from quota.solvers.joint_constraints import AllowedPrecisions

JOINT_COST_KINDS = ("tokens", "ttft", "decode", "weight_bytes", "kv_bytes", "flops")
"""Cost kinds of a joint problem: ``tokens`` (visual tokens kept), ``ttft`` (prefill seconds),
``decode`` (seconds per generated token), ``weight_bytes``, ``kv_bytes``, ``flops``."""


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _array(name: str, value: Any) -> np.ndarray:
    """A float64 copy of ``value``, or a ProblemError naming ``name``."""
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ProblemError(f"{name} must be a numeric array, got {type(value).__name__}: {exc}") from None


def _finite(name: str, value: Any, shapes: tuple[tuple[int, ...], ...], what: str) -> np.ndarray:
    """A float64 copy of ``value`` with one of ``shapes`` and finite entries."""
    array = _array(name, value)
    if array.shape not in shapes:
        raise ProblemError(f"{name} must have shape {' or '.join(map(str, shapes))} ({what}), got {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ProblemError(f"{name} must be finite, got {array[where]} at index {where}")
    return array


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=np.float64).copy()
    array.flags.writeable = False
    return array


def _grid(n_tokens: Any, grid: Any) -> tuple[int, ...]:
    if not _is_int(n_tokens) or n_tokens < 1:
        raise ProblemError(f"n_tokens must be a positive integer, got {n_tokens!r}")
    values = list(np.asarray(grid).ravel()) if not isinstance(grid, (list, tuple)) else list(grid)
    if not values or not all(_is_int(v) or (_is_number(v) and float(v).is_integer()) for v in values):
        raise ProblemError(f"grid must be a non-empty sequence of integers, got {values}")
    values = [int(v) for v in values]
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ProblemError(f"grid must be sorted and unique, got {values}")
    if values[0] < 0 or values[-1] != n_tokens:
        raise ProblemError(f"grid values must lie in [0, n_tokens={n_tokens}] and end at n_tokens, got {values}")
    return tuple(values)


def _precisions(precisions: Any, reference: Any) -> tuple[tuple[str, ...], str]:
    if isinstance(precisions, str) or not isinstance(precisions, (list, tuple)) or not precisions:
        raise ProblemError(f"precisions must be a non-empty sequence of names, got {precisions!r}")
    if not all(isinstance(p, str) and p for p in precisions):
        raise ProblemError(f"precisions must be non-empty strings, got {list(precisions)!r}")
    if len(set(precisions)) != len(precisions):
        raise ProblemError(f"precisions must be unique, got {list(precisions)!r}")
    names = tuple(str(p) for p in precisions)
    if reference is None:
        return names, names[-1]
    if reference not in names:
        raise ProblemError(f"reference must be one of precisions ({', '.join(names)}), got {reference!r}")
    return names, str(reference)


def _costs(costs: Any, grid: tuple[int, ...], shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    if costs is None:
        costs = {}
    if not isinstance(costs, Mapping):
        raise ProblemError(f"costs must be a mapping kind -> [L, P, G] array, got {type(costs).__name__}")
    n_layers, n_prec, n_cand = shape
    out: dict[str, np.ndarray] = {}
    for kind, curve in costs.items():
        if kind not in JOINT_COST_KINDS:
            raise ProblemError(f"costs has unknown kind {kind!r}; known kinds: {', '.join(JOINT_COST_KINDS)}")
        name = f"costs[{kind!r}]"
        array = _finite(name, curve, (shape, shape[:2]), "[L, P, G], or [L, P] for no dependence on k")
        array = np.broadcast_to(array[:, :, None], shape) if array.ndim == 2 else array
        if (array < 0).any():
            where = tuple(int(i) for i in np.argwhere(array < 0)[0])
            raise ProblemError(f"{name} must be non-negative, got {array[where]} at index {where}")
        drops = np.diff(array, axis=2) < 0
        if drops.any():
            layer, p, g = (int(i) for i in np.argwhere(drops)[0])
            raise ProblemError(
                f"{name} must be non-decreasing in k, but layer {layer} option {p} costs {array[layer, p, g]} "
                f"at k={grid[g]} and {array[layer, p, g + 1]} at k={grid[g + 1]}"
            )
        out[kind] = _frozen(array)
    if "tokens" not in out:
        out["tokens"] = _frozen(np.broadcast_to(np.asarray(grid, dtype=np.float64), (n_layers, n_prec, n_cand)))
    return out


def _constraint(i: int, c: Any, grid: tuple[int, ...], precisions: tuple[str, ...], costs: dict, n_layers: int) -> Any:
    name = f"constraints[{i}]"
    n_tokens = grid[-1]
    if isinstance(c, MinKeepBefore):
        if not _is_int(c.layer) or not 0 <= c.layer <= n_layers:
            raise ProblemError(f"{name}.layer of MinKeepBefore must be an integer in [0, {n_layers}], got {c.layer!r}")
        if not _is_int(c.tokens) or not 0 <= c.tokens <= n_tokens:
            raise ProblemError(f"{name}.tokens must be an integer in [0, {n_tokens}], got {c.tokens!r}")
        return c
    if isinstance(c, FixedLayer):
        if not _is_int(c.layer) or not 0 <= c.layer < n_layers:
            raise ProblemError(f"{name}.layer of FixedLayer must be an integer in [0, {n_layers - 1}], got {c.layer!r}")
        if not _is_int(c.tokens) or c.tokens not in grid:
            raise ProblemError(f"{name}.tokens of FixedLayer must be a grid value, got {c.tokens!r}")
        return c
    if isinstance(c, AllowedPrecisions):
        if not _is_int(c.layer) or not 0 <= c.layer < n_layers:
            raise ProblemError(
                f"{name}.layer of AllowedPrecisions must be an integer in [0, {n_layers - 1}], got {c.layer!r}"
            )
        names = (c.precisions,) if isinstance(c.precisions, str) else tuple(c.precisions)
        unknown = [p for p in names if p not in precisions]
        if not names or unknown:
            raise ProblemError(
                f"{name}.precisions must be a non-empty subset of precisions ({', '.join(precisions)}), "
                f"got {list(names)!r}"
            )
        return AllowedPrecisions(int(c.layer), tuple(str(p) for p in names))
    if isinstance(c, CostCap):
        if c.kind not in costs:
            raise ProblemError(f"{name}.kind of CostCap must be a kind in costs ({', '.join(costs)}), got {c.kind!r}")
        if not _is_number(c.value) or not np.isfinite(c.value):
            raise ProblemError(
                f"{name}.value must be a finite number (in the units of costs[{c.kind!r}]), got {c.value!r}"
            )
        return CostCap(c.kind, float(c.value))
    if isinstance(c, LinearConstraint):
        raise ProblemError(f"{name} is a LinearConstraint ([L, G]), which joint problems do not take; use a CostCap")
    raise ProblemError(
        f"{name} must be MinKeepBefore, FixedLayer, AllowedPrecisions or CostCap, got {type(c).__name__}"
    )


def validate_joint(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check every JointProblem field (field name -> value); return the normalized values to store."""
    grid = _grid(fields["n_tokens"], fields["grid"])
    precisions, reference = _precisions(fields["precisions"], fields["reference"])
    n_prec, n_cand = len(precisions), len(grid)
    raw = _array("precision_damage", fields["precision_damage"])
    if raw.ndim != 2 or raw.shape[0] < 1:
        raise ProblemError(f"precision_damage must have shape (L, P={n_prec}) with L >= 1 ([L, P]), got {raw.shape}")
    n_layers = int(raw.shape[0])
    precision_damage = _finite("precision_damage", raw, ((n_layers, n_prec),), "[L, P]")
    token_damage = _finite(
        "token_damage",
        fields["token_damage"],
        ((n_prec, n_layers, n_cand), (n_layers, n_cand)),
        "[P, L, G], or [L, G] for one curve under every precision",
    )
    if token_damage.ndim == 2:
        token_damage = np.broadcast_to(token_damage, (n_prec, n_layers, n_cand))
    costs = _costs(fields["costs"], grid, (n_layers, n_prec, n_cand))
    ref = precisions.index(reference)

    budgets = fields["budgets"]
    if budgets is None:
        budgets = {}
    if not isinstance(budgets, Mapping):
        raise ProblemError(f"budgets must be a mapping kind -> fraction, got {type(budgets).__name__}")
    for kind, value in budgets.items():
        if kind not in costs:
            raise ProblemError(f"budgets has kind {kind!r}, which is not in costs ({', '.join(costs)})")
        if not _is_number(value) or not (np.isfinite(value) and value > 0):
            raise ProblemError(
                f"budgets[{kind!r}] must be a positive finite fraction of the all-{reference} all-tokens cost, "
                f"got {value!r}"
            )
    monotone = fields["monotone"]
    if not isinstance(monotone, (bool, np.bool_)):
        raise ProblemError(f"monotone must be a bool, got {monotone!r}")
    constraints = tuple(
        _constraint(i, c, grid, precisions, costs, n_layers) for i, c in enumerate(fields["constraints"])
    )
    capped = [c.kind for c in constraints if isinstance(c, CostCap)]
    if not budgets and not capped:
        raise ProblemError("budgets must name at least one cost kind (or constraints hold a CostCap)")
    for kind in dict.fromkeys([*budgets, *capped]):
        if costs[kind][:, ref, -1].sum() <= 0:
            raise ProblemError(
                f"costs[{kind!r}] must have a positive all-{reference} all-tokens cost to carry a budget or cap"
            )
    return {
        "n_tokens": int(fields["n_tokens"]),
        "grid": grid,
        "precisions": precisions,
        "reference": reference,
        "precision_damage": _frozen(precision_damage),
        "token_damage": _frozen(token_damage),
        "costs": costs,
        "budgets": {str(k): float(v) for k, v in budgets.items()},
        "monotone": bool(monotone),
        "constraints": constraints,
    }
