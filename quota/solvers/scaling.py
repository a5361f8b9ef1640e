"""Integer versions of float rows and objectives, for solvers that need integer coefficients.

Row rule (``integer_row``), for a row ``sum_l c[l, g_l] <= rhs`` with tolerance ``tol`` (see
``quota.solvers.constraints``); a ``>=`` row is negated first:

- exact case: every coefficient is an integer multiple of ``q = 2**-j`` (``j <= 30``, e.g. token
  counts, KV bytes, halves): ``a = c / q`` and ``R = floor((rhs + tol) / q)``. Then
  ``sum a <= R`` holds exactly when ``lhs <= rhs + tol``: the integer row *is* the float row.
- float case: ``S = 2**ceil(log2((L + 1) / tol))``, ``a = round(S * c)``, ``R = floor(S * rhs + L/2 + 1/4)``.
  Each ``a`` is within 1/2 of ``S * c``, so a schedule's integer sum is within ``L/2`` of ``S * lhs``:
  every schedule with ``lhs <= rhs`` is admitted, and every admitted one has
  ``lhs <= rhs + (L + 1/4) / S <= rhs + tol``. The integer row never admits a schedule the float
  check rejects, and never excludes one that meets the row exactly; only schedules inside the
  tolerance band ``(rhs, rhs + tol]`` may go either way.

Both cases then subtract each layer's smallest coefficient (moved to the right-hand side) and divide
by the gcd, which changes no decision.

Objective rule (``integer_objective``): values are shifted per layer by their smallest value and
multiplied by a power of two ``S`` such that the summed per-layer range is about ``2**40``, then
rounded (``interactions`` likewise per pair of layers, ``integer_pairs``, sharing the scale). The
integer optimum's true objective is within ``L / S`` (``2L / S`` with interactions) (about ``1e-11`` relative to the
objective's range) of the true optimum; solvers report the true float objective of their schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quota.solvers.constraints import Row

_MAX_EXACT_POWER = 30
_OBJECTIVE_RANGE = 2.0**40


@dataclass(frozen=True)
class IntRow:
    """``sum_l coef[l, g_l] <= rhs`` in integers (``coef`` int64 ``[L, G]``, each layer's minimum 0).

    ``exact`` tells whether the integer row equals the float row under the tolerance rule."""

    coef: np.ndarray
    rhs: int
    exact: bool


def exact_quantum(coef: np.ndarray) -> float | None:
    """The largest ``q = 2**-j`` (``0 <= j <= 30``) with every ``coef / q`` an integer that sums exactly
    in float64 over layers, or None."""
    layers = coef.shape[0]
    for j in range(_MAX_EXACT_POWER + 1):
        scaled = coef * 2.0**j
        if np.abs(scaled).max(initial=0.0) * layers >= 2.0**52:
            return None
        if np.array_equal(scaled, np.round(scaled)):
            return 2.0**-j
    return None


def _reduce(a: np.ndarray, rhs: int, exact: bool) -> IntRow:
    low = a.min(axis=1)
    a = a - low[:, None]
    rhs = rhs - int(low.sum())
    divisor = int(np.gcd.reduce(a.ravel())) if a.any() else 1
    if divisor > 1:
        a = a // divisor
        rhs = rhs // divisor  # floor: sum a*d <= R  <=>  sum a <= floor(R / d)
    return IntRow(a.astype(np.int64), int(rhs), exact)


def integer_row(row: Row) -> IntRow:
    """The integer ``<=`` row for ``row`` under the rule in this module's docstring."""
    coef, rhs = row.as_upper()
    tol = row.tol
    layers = coef.shape[0]
    quantum = exact_quantum(coef)
    if quantum is not None:
        a = np.round(coef / quantum).astype(np.int64)
        return _reduce(a, int(math.floor((rhs + tol) / quantum)), exact=True)
    scale = 2.0 ** math.ceil(math.log2((layers + 1) / tol))
    a = np.round(coef * scale).astype(np.int64)
    return _reduce(a, int(math.floor(rhs * scale + layers / 2 + 0.25)), exact=False)


@dataclass(frozen=True)
class IntObjective:
    """Integer objective matrices ``coef`` (``[K, L, G]`` int64) with ``true ~= coef / scale + shift``
    per matrix, where ``shift`` is the summed per-layer shift shared by every matrix."""

    coef: np.ndarray
    scale: float
    shift: float

    def true_value(self, integer_value: float) -> float:
        """The float objective corresponding to an integer objective value."""
        return integer_value / self.scale + self.shift


def objective_scale(*matrices: np.ndarray, pairs: np.ndarray | None = None) -> float:
    """The power of two mapping the largest summed per-layer range of any ``[K, L, G]`` input, plus the
    summed per-pair range of ``pairs`` (``[L-1, G, G]`` interactions, if given), to about 2**40."""
    span = max(float((m - m.min(axis=(0, 2))[None, :, None]).max(axis=2).sum(axis=1).max()) for m in matrices)
    if pairs is not None:
        span += float((pairs.max(axis=(1, 2)) - pairs.min(axis=(1, 2))).sum())
    return 1.0 if span <= 0 else 2.0 ** math.floor(math.log2(_OBJECTIVE_RANGE / span))


def integer_pairs(pairs: np.ndarray, scale: float) -> IntObjective:
    """``[L-1, G, G]`` interactions as integers under the objective rule: each pair's minimum is
    shifted out, the rest multiplied by ``scale`` and rounded (``coef`` ``[L-1, G, G]`` int64)."""
    low = pairs.min(axis=(1, 2))  # [L-1]
    coef = np.round((pairs - low[:, None, None]) * scale).astype(np.int64)
    return IntObjective(coef, scale, float(low.sum()))


def integer_objective(matrices: np.ndarray, scale: float | None = None) -> IntObjective:
    """Scale ``[K, L, G]`` float matrices to integers under the rule in this module's docstring.

    The per-layer shift is the minimum over every matrix and grid point, so ``max_k`` and ``sum_k``
    of the summed matrices keep their order. ``scale`` defaults to ``objective_scale(matrices)``."""
    low = matrices.min(axis=(0, 2))  # [L]
    scale = objective_scale(matrices) if scale is None else scale
    coef = np.round((matrices - low[None, :, None]) * scale).astype(np.int64)
    return IntObjective(coef, scale, float(low.sum()))
