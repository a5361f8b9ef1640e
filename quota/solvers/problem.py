"""AllocationProblem: how many visual tokens each decoder layer keeps, as a budgeted choice problem.

For each of L layers choose a grid index g_l (``k_l = grid[g_l]`` tokens kept) to minimize

    aggregate_t( w_t * sum_l damage[t, l, g_l] ) + sum_e w_e * sum_l extra_costs[e][l, g_l]
        + sum_{l < L-1} interactions[l, g_l, g_{l+1}]                (when ``interactions`` is given)

(``aggregate`` is a sum over tasks, or the worst task for ``"max_task"``) subject to

    sum_l cost[l, g_l] <= budget * sum_l cost[l, G-1]        (cost = costs[budget_kind]; grid[G-1] = N)
    g_0 >= g_1 >= ... >= g_{L-1}                              (when ``monotone``)
    every constraint in ``constraints``.

Schedules in the public helpers are token counts (``k_l``, grid values); solvers work on indices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from quota.solvers.constraints import (
    FEAS_RTOL,
    SENSES,
    Constraint,
    CostCap,
    FixedLayer,
    LinearConstraint,
    MinKeepBefore,
    Row,
    describe,
    domain_mask,
)
from quota.solvers.errors import ProblemError
from quota.solvers.validate import AGGREGATES, COST_KINDS, validate_problem


def default_grid(n_tokens: int, steps: int = 32, minimum: int = 0) -> tuple[int, ...]:
    """Candidate keep counts: ``round(i * N / steps)`` for ``i = 0..steps`` at or above ``minimum``,
    plus ``minimum`` and N. With the defaults and N = 576 that is 0, 18, 36, ..., 576 (33 values)."""
    if not isinstance(n_tokens, (int, np.integer)) or n_tokens < 1:
        raise ProblemError(f"n_tokens must be a positive integer, got {n_tokens!r}")
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ProblemError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(minimum, (int, np.integer)) or not 0 <= minimum <= n_tokens:
        raise ProblemError(f"minimum must be an integer in [0, {n_tokens}], got {minimum!r}")
    values = {int(round(i * n_tokens / steps)) for i in range(steps + 1)}
    return tuple(sorted({v for v in values if v >= minimum} | {int(minimum), int(n_tokens)}))


@dataclass(frozen=True, kw_only=True, eq=False)
class AllocationProblem:
    """A layer-wise token allocation problem. Fields are validated and normalized on construction.

    - ``n_tokens``: N, visual tokens of one image.
    - ``grid``: sorted unique candidate keep counts in [0, N], containing N (so ``grid[-1] == N``).
    - ``damage``: ``[L, G]`` or ``[T, L, G]`` float; ``damage[..., l, g]`` is the predicted damage of
      keeping ``grid[g]`` tokens at layer l (typically 0 at k = N).
    - ``budget``: in (0, 1]; the budget-kind cost of a schedule is at most ``budget`` times the cost
      of keeping all N tokens everywhere.
    - ``costs``: kind -> ``[L, G]`` non-negative curves, non-decreasing in k, for kinds among
      ``COST_KINDS``. ``"tokens"`` defaults to ``grid[g]`` at every layer.
    - ``budget_kind``: which cost the budget bounds (default ``"tokens"``).
    - ``monotone``: require ``k_0 >= k_1 >= ... >= k_{L-1}`` (a dropped token stays dropped).
    - ``aggregate``: ``"sum"`` (weighted sum over tasks) or ``"max_task"`` (worst weighted task).
    - ``task_weights``: ``[T]`` non-negative weights of the tasks (default all 1).
    - ``extra_costs``: ``[L, G]`` arrays added to the objective, each times its ``extra_weights``
      entry (default 1).
    - ``constraints``: ``MinKeepBefore``, ``FixedLayer``, ``LinearConstraint``, ``CostCap`` objects.
    - ``interactions``: ``[L-1, G, G]`` float or None (default: the additive model).
      ``interactions[l, a, b]`` is added to the objective (and to the damage, after the task
      aggregate: it is shared by every task) when layer l takes grid index a and layer l+1 takes b.
      Under ``monotone`` only entries with ``a >= b`` are ever used. Solvers that cannot express it
      (``mip``, ``relax``, ``greedy``) raise ``UnsupportedFeatureError``.

    Arrays are stored as read-only float64 copies.
    """

    n_tokens: int
    grid: tuple[int, ...]
    damage: np.ndarray
    budget: float
    costs: Mapping[str, np.ndarray] = field(default_factory=dict)
    budget_kind: str = "tokens"
    monotone: bool = True
    aggregate: str = "sum"
    task_weights: np.ndarray | None = None
    extra_costs: tuple[np.ndarray, ...] = ()
    extra_weights: tuple[float, ...] | None = None
    constraints: tuple[Constraint, ...] = ()
    interactions: np.ndarray | None = None

    def __post_init__(self) -> None:
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in validate_problem(given).items():
            object.__setattr__(self, name, value)

    # ---- sizes -------------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """L, decoder layers."""
        return int(self.damage.shape[-2])

    @property
    def n_candidates(self) -> int:
        """G, grid size."""
        return len(self.grid)

    @property
    def n_tasks(self) -> int:
        """T, tasks (1 for a ``[L, G]`` damage)."""
        return 1 if self.damage.ndim == 2 else int(self.damage.shape[0])

    @cached_property
    def grid_array(self) -> np.ndarray:
        """The grid as an int64 array ``[G]``."""
        return np.asarray(self.grid, dtype=np.int64)

    def replace(self, **changes: Any) -> AllocationProblem:
        """A validated copy with some fields changed, e.g. ``problem.replace(budget=0.5)``.

        Changing ``extra_costs`` without ``extra_weights`` resets the weights to 1, and changing
        ``damage`` without ``task_weights`` resets the task weights to 1."""
        if "extra_costs" in changes:
            changes.setdefault("extra_weights", None)
        if "damage" in changes:
            changes.setdefault("task_weights", None)
        return dataclasses.replace(self, **changes)

    # ---- lowered forms used by the solvers ---------------------------------------------------------
    @cached_property
    def task_matrices(self) -> np.ndarray:
        """Weighted damage per task, ``[T, L, G]`` (``w_t * damage[t]``)."""
        damage = self.damage if self.damage.ndim == 3 else self.damage[None]
        return damage * self.task_weights[:, None, None]

    @cached_property
    def extra_matrix(self) -> np.ndarray:
        """Weighted sum of the extra objective terms, ``[L, G]`` (zeros without any)."""
        total = np.zeros((self.n_layers, self.n_candidates))
        for weight, term in zip(self.extra_weights, self.extra_costs):
            total = total + weight * term
        return total

    @cached_property
    def objective_matrix(self) -> np.ndarray:
        """``[L, G]`` per-layer objective for ``aggregate == "sum"``: weighted task sum plus extras."""
        return self.task_matrices.sum(axis=0) + self.extra_matrix

    @cached_property
    def allowed(self) -> np.ndarray:
        """``[L, G]`` bool: grid indices each layer may take under the domain constraints."""
        return domain_mask(self.constraints, self.grid_array, self.n_layers)[0]

    @cached_property
    def domain_reasons(self) -> list[list[str]]:
        """Per layer, names of the domain constraints restricting it."""
        return domain_mask(self.constraints, self.grid_array, self.n_layers)[1]

    @cached_property
    def budget_row(self) -> Row:
        """The budget as a row: ``sum_l cost[l, g_l] <= budget * full_cost``."""
        return Row(
            coef=self.costs[self.budget_kind],
            rhs=self.budget * self.full_cost(),
            sense="<=",
            name=f"budget ({self.budget_kind} <= {self.budget:g} of full)",
            kind="budget",
        )

    @cached_property
    def extra_rows(self) -> tuple[Row, ...]:
        """The ``LinearConstraint`` and ``CostCap`` constraints as rows, in the order given."""
        rows = []
        for c in self.constraints:
            if isinstance(c, LinearConstraint):
                rows.append(Row(c.coef, float(c.rhs), c.sense, describe(c), "LinearConstraint"))
            elif isinstance(c, CostCap):
                rows.append(Row(self.costs[c.kind], float(c.value), "<=", describe(c), "CostCap"))
        return tuple(rows)

    @property
    def rows(self) -> tuple[Row, ...]:
        """All linear rows, the budget first."""
        return (self.budget_row, *self.extra_rows)

    # ---- evaluation on grid indices ----------------------------------------------------------------
    def objective_of_indices(self, indices: np.ndarray) -> np.ndarray:
        """Objective of schedules given as grid indices ``[..., L]``; returns ``[...]`` float64."""
        indices = np.asarray(indices)
        layers = np.arange(self.n_layers)
        return self.damage_of_indices(indices) + self.extra_matrix[layers, indices].sum(axis=-1)

    def damage_of_indices(self, indices: np.ndarray) -> np.ndarray:
        """Aggregated damage (no extra terms; interactions included) of schedules given as grid
        indices ``[..., L]``."""
        indices = np.asarray(indices)
        per_task = self.task_matrices[:, np.arange(self.n_layers), indices].sum(axis=-1)
        damage = per_task.sum(axis=0) if self.aggregate == "sum" else per_task.max(axis=0)
        return damage if self.interactions is None else damage + self.interaction_of_indices(indices)

    def interaction_of_indices(self, indices: np.ndarray) -> np.ndarray:
        """The summed interaction terms of schedules given as grid indices ``[..., L]`` (0 without
        ``interactions``)."""
        indices = np.asarray(indices)
        if self.interactions is None:
            return np.zeros(indices.shape[:-1])
        pairs = np.arange(self.n_layers - 1)
        return self.interactions[pairs, indices[..., :-1], indices[..., 1:]].sum(axis=-1)

    def index_violations(self, indices: Sequence[int]) -> list[str]:
        """Violated constraints of a schedule given as grid indices (empty list: feasible)."""
        idx = np.asarray(indices, dtype=np.int64)
        out = []
        if self.monotone:
            out += [
                f"monotone: layer {k} keeps {self.grid[idx[k]]} > layer {k - 1} keeps {self.grid[idx[k - 1]]}"
                for k in range(1, len(idx))
                if idx[k] > idx[k - 1]
            ]
        for c in self.constraints:
            if isinstance(c, MinKeepBefore):
                bad = [k for k in range(c.layer) if self.grid[idx[k]] < c.tokens]
                if bad:
                    out.append(f"{describe(c)}: layers {bad} keep fewer")
            elif isinstance(c, FixedLayer) and self.grid[idx[c.layer]] != c.tokens:
                out.append(f"{describe(c)}: layer {c.layer} keeps {self.grid[idx[c.layer]]}")
        for row in self.rows:
            lhs = float(row.values(idx))
            if not row.holds(lhs):
                out.append(f"{row.name}: value {lhs:.6g} against {row.sense} {row.rhs:.6g}")
        return out

    # ---- public helpers on token-count schedules ---------------------------------------------------
    def indices_of(self, schedule: Sequence[int]) -> tuple[int, ...]:
        """Grid indices of a schedule of token counts; raises ProblemError if a count is off the grid."""
        if len(schedule) != self.n_layers:
            raise ProblemError(f"schedule must have {self.n_layers} entries, got {len(schedule)}")
        position = {k: g for g, k in enumerate(self.grid)}
        missing = [k for k in schedule if k not in position]
        if missing:
            raise ProblemError(f"schedule values {missing} are not in the grid")
        return tuple(position[k] for k in schedule)

    def schedule_of(self, indices: Sequence[int]) -> tuple[int, ...]:
        """Token counts of a schedule given as grid indices."""
        return tuple(int(self.grid[g]) for g in indices)

    def full_cost(self, kind: str | None = None) -> float:
        """Cost of keeping all N tokens at every layer, for ``kind`` (default the budget kind)."""
        curve = self.costs[kind or self.budget_kind]
        return float(curve[:, -1].sum())

    def cost_of(self, schedule: Sequence[int], kind: str | None = None) -> float:
        """Absolute cost of a schedule (token counts) for ``kind`` (default the budget kind)."""
        curve = self.costs[kind or self.budget_kind]
        return float(curve[np.arange(self.n_layers), list(self.indices_of(schedule))].sum())

    def cost_ratio(self, schedule: Sequence[int], kind: str | None = None) -> float:
        """Cost of a schedule as a fraction of the full cost (the unit of ``budget``)."""
        return self.cost_of(schedule, kind) / self.full_cost(kind)

    def damage_of(self, schedule: Sequence[int]) -> float:
        """Predicted damage of a schedule (aggregated over tasks, without the extra cost terms)."""
        return float(self.damage_of_indices(np.asarray(self.indices_of(schedule))))

    def objective_of(self, schedule: Sequence[int]) -> float:
        """The objective a solver minimizes: damage plus the weighted extra cost terms."""
        return float(self.objective_of_indices(np.asarray(self.indices_of(schedule))))

    def violations(self, schedule: Sequence[int]) -> list[str]:
        """Every violated constraint of a schedule of token counts, as text; empty when feasible.

        Linear rows (budget, caps) are checked with the tolerance rule of ``quota.solvers.constraints``
        (relative ``FEAS_RTOL``)."""
        return self.index_violations(self.indices_of(schedule))

    def is_feasible(self, schedule: Sequence[int]) -> bool:
        """Whether a schedule of token counts satisfies every constraint."""
        return not self.violations(schedule)


__all__ = [
    "AGGREGATES",
    "COST_KINDS",
    "FEAS_RTOL",
    "SENSES",
    "AllocationProblem",
    "ProblemError",
    "default_grid",
]
