"""Integer budget units for the dynamic program (``quota.solvers.dp``), exact or rounded.

The DP counts budget used in integer units, so it needs ``sum_l cost[l, g_l] <= rhs`` as an integer
row. Two cases:

- **exact** (``BudgetUnits.exact``): every budget cost is an integer multiple of a power of two
  (``quota.solvers.scaling.integer_row``; token counts always are, so are KV bytes and analytic
  flop counts). After subtracting each layer's cheapest cost and dividing by the gcd, the integer
  row *is* the float row (tolerance rule included). One DP pass is exact.
- **rounded**: float costs (measured latency, say), or exact units too many for the memory bound.
  With a power of two ``S`` chosen so the capacity is within a factor sqrt(2) of ``float_units``
  units (fewer when the memory bound demands), two integer rows bracket the float one:

  - ``relaxed``: ``floor(S * cost)`` against ``floor(S * (rhs + tol)) + 1``. Every feasible schedule
    fits it, so its DP optimum is a proven lower bound; when that optimum's schedule meets the float
    row too, it is optimal.
  - ``safe``: ``ceil(S * cost)`` against ``floor(S * rhs)``. Every schedule fitting it is feasible, so
    its DP optimum is a feasible schedule (an upper bound).

  Schedules whose cost lies within about ``L / S`` of the budget may be excluded by ``safe``; the gap
  between the two optima says how much that can cost.

Each layer's smallest integer cost is moved to the right-hand side, so ``cost.min(axis=1) == 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quota.solvers.constraints import Row
from quota.solvers.errors import UnsupportedFeatureError
from quota.solvers.scaling import integer_row

FLOAT_UNITS = 2**14  # capacity aimed at when rounding float costs
MIN_UNITS = 64  # below this many units the rounding is too coarse to be worth a DP
WORK_ARRAYS = 6  # [G, B] float64/int64 arrays alive during one DP layer
_MAX_SAFE_INT = 2.0**52


@dataclass(frozen=True)
class UnitRow:
    """An integer row ``sum_l cost[l, g_l] <= capacity``; ``cost`` is ``[L, G]`` int64 with each
    layer's minimum 0. ``capacity < 0`` means nothing fits."""

    cost: np.ndarray
    capacity: int


@dataclass(frozen=True)
class BudgetUnits:
    """The DP's integer view of the budget row: ``relaxed`` (admits every feasible schedule) and
    ``safe`` (admits only feasible ones); the same object when ``exact``. ``note``: one line saying
    which case applies and the unit count."""

    exact: bool
    relaxed: UnitRow
    safe: UnitRow
    note: str


def parent_itemsize(n_candidates: int) -> int:
    """Bytes per stored back-pointer: the smallest unsigned integer holding a grid index."""
    return 1 if n_candidates <= 2**8 else 2 if n_candidates <= 2**16 else 4


def dp_bytes(n_layers: int, n_candidates: int, capacity: int) -> int:
    """Peak memory of one DP pass in bytes: back-pointers ``[L, G, B]`` plus ``WORK_ARRAYS`` float64
    arrays ``[G, B]``, with ``B = capacity + 1``."""
    states = n_candidates * (max(capacity, 0) + 1)
    return n_layers * states * parent_itemsize(n_candidates) + WORK_ARRAYS * 8 * states


def max_units(n_layers: int, n_candidates: int, max_bytes: int) -> int:
    """The largest capacity whose DP fits in ``max_bytes``."""
    per_unit = n_candidates * (n_layers * parent_itemsize(n_candidates) + WORK_ARRAYS * 8)
    return max_bytes // per_unit - 1


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"


def _rounded(row: Row, units: int, fit: int, why: str) -> BudgetUnits:
    """The relaxed/safe pair for a float row at about ``units`` (and at most ``fit``) units of capacity."""
    coef, rhs = row.as_upper()  # [L, G]
    tol = row.tol
    n_layers = coef.shape[0]
    span = rhs - float(coef.min(axis=1).sum())  # budget left above the cheapest schedule
    span = max(span, tol, 1e-300)
    largest = max(float(np.abs(coef).max()), abs(rhs) + tol, 1e-300)
    scale = 2.0 ** round(math.log2(units / span))  # a power of two: cost * scale is exact in float64
    scale = min(scale, 2.0 ** math.floor(math.log2(_MAX_SAFE_INT / (largest * (n_layers + 1)))))  # int64-exact sums
    while True:
        low = np.floor(coef * scale).astype(np.int64)  # [L, G]
        high = np.ceil(coef * scale).astype(np.int64)  # [L, G]
        low_min, high_min = low.min(axis=1), high.min(axis=1)  # [L]
        relaxed = UnitRow(low - low_min[:, None], math.floor((rhs + tol) * scale) + 1 - int(low_min.sum()))
        if relaxed.capacity <= fit:
            break
        scale /= 2
    safe = UnitRow(high - high_min[:, None], math.floor(rhs * scale) - int(high_min.sum()))
    note = (
        f"{why}: rounded to {max(relaxed.capacity, 0)} units (a relaxed floor row for the bound, a safe ceiling "
        "row for the schedule); optimal only when proven"
    )
    return BudgetUnits(False, relaxed, safe, note)


def budget_units(
    row: Row, n_candidates: int, *, solver: str, max_bytes: int, float_units: int = FLOAT_UNITS
) -> BudgetUnits:
    """The DP's integer budget for ``row`` (the problem's budget row) within ``max_bytes``.

    Exact when the costs are integer multiples of a power of two and the units fit; otherwise
    rounded to at most ``float_units`` units (fewer if memory demands). Raises
    ``UnsupportedFeatureError`` (naming the size) when even ``MIN_UNITS`` units would not fit."""
    n_layers = row.coef.shape[0]
    fit = max_units(n_layers, n_candidates, max_bytes)
    if fit < MIN_UNITS:
        need = dp_bytes(n_layers, n_candidates, MIN_UNITS)
        raise UnsupportedFeatureError(
            solver,
            f"{n_layers} layers x {n_candidates} keep counts: even {MIN_UNITS} budget units need {_mib(need)}, "
            f"above its memory bound of {_mib(max_bytes)} (max_bytes)",
            "use cpsat",
        )
    int_row = integer_row(row)
    if int_row.exact and int_row.rhs <= fit:
        units = UnitRow(int_row.coef, int_row.rhs)
        size = _mib(dp_bytes(n_layers, n_candidates, units.capacity))
        note = f"exact integer budget units ({max(units.capacity, 0)} units, {size})"
        return BudgetUnits(True, units, units, note)
    if int_row.exact:
        why = (
            f"{int_row.rhs} exact budget units need {_mib(dp_bytes(n_layers, n_candidates, int_row.rhs))}, "
            f"above the memory bound of {_mib(max_bytes)}"
        )
    else:
        why = "budget costs are not integer multiples of a power of two"
    return _rounded(row, min(float_units, fit), fit, why)
