"""User constraints on a schedule, and the linear rows they lower to.

Two constraint kinds restrict which grid values a layer may take (a *domain*): ``MinKeepBefore`` and
``FixedLayer``. Two are linear in the per-layer choice: ``LinearConstraint`` and ``CostCap``. The
budget is a linear constraint too. Every linear constraint lowers to a ``Row``:

    sum_l coef[l, g_l]  (sense)  rhs

with one fixed feasibility rule shared by every solver and by ``AllocationProblem.violations``: a
row holds when it holds within ``Row.tol = FEAS_RTOL * scale``, where ``scale`` is the larger of
``|rhs|`` and ``sum_l max_g |coef[l, g]|``. The tolerance absorbs float noise in ``budget * full``
(``0.3 * 17280`` is not exactly 5184 in binary); it is far below any real cost difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEAS_RTOL = 1e-9
SENSES = ("<=", ">=")


@dataclass(frozen=True)
class MinKeepBefore:
    """Every layer ``l < layer`` keeps at least ``tokens`` visual tokens (``0 <= layer <= L``)."""

    layer: int
    tokens: int


@dataclass(frozen=True)
class FixedLayer:
    """Layer ``layer`` keeps exactly ``tokens`` visual tokens; ``tokens`` must be a grid value."""

    layer: int
    tokens: int


@dataclass(frozen=True, eq=False)
class LinearConstraint:
    """``sum_l coef[l, g_l] (sense) rhs`` with ``coef`` of shape ``[L, G]`` and sense ``"<="`` or ``">="``.

    Example, a latency cap of 40 ms built from a measured latency curve ``lat`` (``[L, G]``, seconds):
    ``LinearConstraint(lat, 0.040, "<=", "latency_cap")``.
    """

    coef: np.ndarray
    rhs: float
    sense: str = "<="
    name: str = "linear"


@dataclass(frozen=True)
class CostCap:
    """Absolute cap on a cost kind other than (or besides) the budget's: ``sum_l costs[kind][l, g_l] <= value``.

    ``value`` is in the units of that cost curve (e.g. KV bytes), not a ratio.
    """

    kind: str
    value: float


Constraint = MinKeepBefore | FixedLayer | LinearConstraint | CostCap
DOMAIN_CONSTRAINTS = (MinKeepBefore, FixedLayer)
ROW_CONSTRAINTS = (LinearConstraint, CostCap)


def describe(constraint: Constraint) -> str:
    """A short human-readable name of a constraint, used in error messages."""
    if isinstance(constraint, MinKeepBefore):
        return f"MinKeepBefore(layer={constraint.layer}, tokens={constraint.tokens})"
    if isinstance(constraint, FixedLayer):
        return f"FixedLayer(layer={constraint.layer}, tokens={constraint.tokens})"
    if isinstance(constraint, LinearConstraint):
        return f"LinearConstraint({constraint.name!r}, {constraint.sense} {constraint.rhs:g})"
    if isinstance(constraint, CostCap):
        return f"CostCap({constraint.kind!r} <= {constraint.value:g})"
    return repr(constraint)


@dataclass(frozen=True, eq=False)
class Row:
    """One lowered linear constraint ``sum_l coef[l, g_l] (sense) rhs``.

    ``kind`` is ``"budget"``, ``"CostCap"`` or ``"LinearConstraint"``; ``name`` is human-readable.
    ``coef`` is ``[L, G]`` float64.
    """

    coef: np.ndarray
    rhs: float
    sense: str
    name: str
    kind: str

    @property
    def scale(self) -> float:
        """The magnitude the tolerance is relative to: ``max(|rhs|, sum_l max_g |coef[l, g]|)``."""
        return float(max(abs(self.rhs), np.abs(self.coef).max(axis=1).sum()))

    @property
    def tol(self) -> float:
        """Absolute feasibility tolerance of this row."""
        return FEAS_RTOL * self.scale

    @property
    def cost_like(self) -> bool:
        """True for a ``<=`` row whose coefficients never decrease with k (lowering k never hurts it)."""
        return self.sense == "<=" and bool(np.all(np.diff(self.coef, axis=1) >= 0))

    def values(self, indices: np.ndarray) -> np.ndarray:
        """Left-hand sides of schedules given as grid indices ``[..., L]``; returns ``[...]``."""
        indices = np.asarray(indices)
        layers = np.arange(self.coef.shape[0])
        return self.coef[layers, indices].sum(axis=-1)

    def excess(self, lhs: np.ndarray | float) -> np.ndarray | float:
        """How far ``lhs`` is on the wrong side of ``rhs`` (<= 0 when the row holds, tolerance aside)."""
        return lhs - self.rhs if self.sense == "<=" else self.rhs - lhs

    def holds(self, lhs: np.ndarray | float) -> np.ndarray | bool:
        """Whether the row holds for left-hand side(s) ``lhs`` under the shared tolerance rule."""
        return self.excess(lhs) <= self.tol

    def as_upper(self) -> tuple[np.ndarray, float]:
        """``(coef, rhs)`` of the equivalent ``<=`` row (a ``>=`` row is negated)."""
        if self.sense == "<=":
            return self.coef, self.rhs
        return -self.coef, -self.rhs


def layer_mask(constraint: Constraint, grid: np.ndarray, layer: int) -> np.ndarray | None:
    """The grid indices a domain constraint allows at ``layer`` (``[G]`` bool), or None when it does
    not restrict that layer (or is not a domain constraint)."""
    if isinstance(constraint, MinKeepBefore) and layer < constraint.layer:
        return grid >= constraint.tokens
    if isinstance(constraint, FixedLayer) and layer == constraint.layer:
        return grid == constraint.tokens
    return None


def domain_mask(
    constraints: tuple[Constraint, ...], grid: np.ndarray, n_layers: int
) -> tuple[np.ndarray, list[list[str]]]:
    """Allowed grid indices per layer, ``[L, G]`` bool, after the domain constraints.

    Also returns, per layer, the names of the domain constraints that restrict it (for diagnostics).
    """
    allowed = np.ones((n_layers, len(grid)), dtype=bool)
    reasons: list[list[str]] = [[] for _ in range(n_layers)]
    for c in constraints:
        for layer in range(n_layers):
            mask = layer_mask(c, grid, layer)
            if mask is not None:
                allowed[layer] &= mask
                reasons[layer].append(describe(c))
    return allowed, reasons
