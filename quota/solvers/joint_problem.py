"""JointProblem: each decoder layer's precision and visual-token keep count, chosen together.

For each of L layers choose a precision option p_l among P named options (for example ``w4a4``,
``w4a8``, ``fp8``, ``bf16``; the names are data) and a grid index g_l (``k_l = grid[g_l]`` visual
tokens kept) to minimize the predicted damage

    sum_l [ precision_damage[l, p_l] + token_damage[p_l, l, g_l] ]

subject to

    sum_l costs[c][l, p_l, g_l] <= budgets[c] * sum_l costs[c][l, ref, G-1]   for each budget kind c
    sum_l costs[c][l, p_l, g_l] <= value                                      for each CostCap(c, value)
    g_0 >= g_1 >= ... >= g_{L-1}                                              (when ``monotone``)
    every domain constraint (MinKeepBefore, FixedLayer, AllowedPrecisions).

``ref`` is the reference option (default: the last of ``precisions``), so a budget is a fraction of
the all-reference, all-tokens cost (for example 0.4 of the all-bf16, all-576-tokens TTFT). Absolute
caps are ``CostCap`` constraints in the units of their cost kind. Precision does not constrain the
next layer: the only coupling between layers is the keep count's monotonicity and the budget rows.

Solvers work on index pairs ``(precision index [L], keep grid index [L])``; the public helpers take
precision names and token counts. The linear rows are ``quota.solvers.constraints.Row`` objects over
the flattened option index ``o = p * G + g`` (coefficients ``[L, P * G]``), so they share the
tolerance rule (``FEAS_RTOL``) and integer scaling (``quota.solvers.scaling``) of the token problem.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from quota.solvers.constraints import CostCap, FixedLayer, MinKeepBefore, Row, describe
from quota.solvers.errors import ProblemError
from quota.solvers.joint_constraints import AllowedPrecisions, JointConstraint, joint_domain
from quota.solvers.joint_validate import JOINT_COST_KINDS, validate_joint


@dataclass(frozen=True, kw_only=True, eq=False)
class JointProblem:
    """A joint precision and token allocation problem. Fields are validated on construction
    (a one-line ``ProblemError`` naming the field) and stored as read-only float64 arrays.

    - ``n_tokens``: N, visual tokens of one image. ``grid``: sorted unique keep counts in [0, N]
      ending at N (``grid[-1] == N``), G values.
    - ``precisions``: P unique option names. ``reference``: the option budgets are measured
      against (default ``precisions[-1]``).
    - ``precision_damage``: ``[L, P]``, the damage of lowering layer l alone to option p with all
      tokens kept (HAWQ-style; typically 0 at the reference option).
    - ``token_damage``: ``[P, L, G]``, the token-pruning curve of layer l measured (or interpolated)
      under option p; ``[L, G]`` means one curve under every option. Any values: non-monotone and
      negative curves are fine.
    - ``costs``: kind -> ``[L, P, G]`` non-negative, non-decreasing in k, for kinds among
      ``JOINT_COST_KINDS`` (``ttft`` prefill seconds, ``decode`` seconds per token, ``weight_bytes``,
      ``kv_bytes``, ``flops``, ``tokens``); ``[L, P]`` is broadcast over k. ``tokens`` defaults to
      ``grid[g]`` for every layer and option.
    - ``budgets``: kind -> positive fraction of the all-reference, all-tokens cost of that kind
      (``sum_l costs[kind][l, ref, G-1]``, which must be positive). Above 1 is allowed (an option
      may cost more than the reference). At least one budget or ``CostCap`` is required.
    - ``monotone``: require ``k_0 >= k_1 >= ...`` (a dropped token stays dropped).
    - ``constraints``: ``MinKeepBefore``, ``FixedLayer``, ``AllowedPrecisions`` and ``CostCap``
      (absolute cap, in the units of its kind) objects.
    """

    n_tokens: int
    grid: tuple[int, ...]
    precisions: tuple[str, ...]
    precision_damage: np.ndarray  # [L, P]
    token_damage: np.ndarray  # [P, L, G]
    budgets: Mapping[str, float]
    costs: Mapping[str, np.ndarray] = field(default_factory=dict)  # kind -> [L, P, G]
    reference: str | None = None
    monotone: bool = True
    constraints: tuple[JointConstraint, ...] = ()

    def __post_init__(self) -> None:
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in validate_joint(given).items():
            object.__setattr__(self, name, value)

    # ---- sizes -------------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """L, decoder layers."""
        return int(self.precision_damage.shape[0])

    @property
    def n_precisions(self) -> int:
        """P, precision options."""
        return len(self.precisions)

    @property
    def n_candidates(self) -> int:
        """G, keep counts in the grid."""
        return len(self.grid)

    @cached_property
    def grid_array(self) -> np.ndarray:
        """The grid as an int64 array ``[G]``."""
        return np.asarray(self.grid, dtype=np.int64)

    @property
    def reference_index(self) -> int:
        """Index of the reference option in ``precisions``."""
        return self.precisions.index(self.reference)

    def replace(self, **changes: Any) -> JointProblem:
        """A validated copy with some fields changed, e.g. ``problem.replace(budgets={"ttft": 0.5})``."""
        return dataclasses.replace(self, **changes)

    def restrict(self, precisions: Sequence[str]) -> JointProblem:
        """A copy in which every layer may only take the named options (the reference, and so the
        budgets' unit, is unchanged): ``restrict(["w4a4"])`` is uniform W4A4 with scheduled tokens."""
        extra = tuple(AllowedPrecisions(layer, tuple(precisions)) for layer in range(self.n_layers))
        return self.replace(constraints=self.constraints + extra)

    def only_row(self, i: int) -> JointProblem:
        """A copy keeping only ``rows[i]`` (one budget, or one ``CostCap``) besides the domain
        constraints: a relaxation, so its optimum is a lower bound on this problem's."""
        caps = [c for c in self.constraints if isinstance(c, CostCap)]
        others = tuple(c for c in self.constraints if not isinstance(c, CostCap))
        if i < len(self.budgets):
            kind = list(self.budgets)[i]
            return self.replace(budgets={kind: self.budgets[kind]}, constraints=others)
        return self.replace(budgets={}, constraints=others + (caps[i - len(self.budgets)],))

    # ---- lowered forms used by the solvers ---------------------------------------------------------
    @cached_property
    def objective_matrix(self) -> np.ndarray:
        """``[L, P, G]``: ``precision_damage[l, p] + token_damage[p, l, g]``."""
        return self.precision_damage[:, :, None] + np.transpose(self.token_damage, (1, 0, 2))

    @cached_property
    def allowed(self) -> np.ndarray:
        """``[L, P, G]`` bool: the (option, keep index) pairs each layer may take under the domain constraints."""
        return joint_domain(self.constraints, self.precisions, self.grid_array, self.n_layers)[0]

    @cached_property
    def domain_reasons(self) -> list[list[str]]:
        """Per layer, names of the domain constraints restricting it."""
        return joint_domain(self.constraints, self.precisions, self.grid_array, self.n_layers)[1]

    def full_cost(self, kind: str) -> float:
        """All-reference, all-tokens cost of ``kind``: ``sum_l costs[kind][l, ref, G-1]`` (a budget's unit)."""
        return float(self.costs[kind][:, self.reference_index, -1].sum())

    @cached_property
    def rows(self) -> tuple[Row, ...]:
        """Every budget and cap as a ``<=`` row over flattened options (coefficients ``[L, P * G]``):
        the budgets in the order given, then the ``CostCap`` constraints."""
        rows = []
        for kind, fraction in self.budgets.items():
            name = f"budget ({kind} <= {fraction:g} of all-{self.reference} all-tokens)"
            rows.append(Row(self._flat(self.costs[kind]), fraction * self.full_cost(kind), "<=", name, "budget"))
        for c in self.constraints:
            if isinstance(c, CostCap):
                rows.append(Row(self._flat(self.costs[c.kind]), c.value, "<=", describe(c), "CostCap"))
        return tuple(rows)

    @cached_property
    def row_kinds(self) -> tuple[str, ...]:
        """The cost kind of each of ``rows``."""
        caps = [c.kind for c in self.constraints if isinstance(c, CostCap)]
        return (*self.budgets, *caps)

    def row_fraction(self, i: int) -> float:
        """Right-hand side of ``rows[i]`` as a fraction of its kind's all-reference, all-tokens cost."""
        return self.rows[i].rhs / self.full_cost(self.row_kinds[i])

    def _flat(self, array: np.ndarray) -> np.ndarray:
        return array.reshape(self.n_layers, self.n_precisions * self.n_candidates)

    def options(self, precision_indices: np.ndarray, keep_indices: np.ndarray) -> np.ndarray:
        """Flattened option indices ``p * G + g`` of index schedules (any shape ``[..., L]``)."""
        return np.asarray(precision_indices) * self.n_candidates + np.asarray(keep_indices)

    # ---- evaluation on indices ---------------------------------------------------------------------
    def objective_of_indices(self, precision_indices: np.ndarray, keep_indices: np.ndarray) -> np.ndarray:
        """Objective of schedules given as index arrays ``[..., L]`` each; returns ``[...]`` float64."""
        layers = np.arange(self.n_layers)
        return self.objective_matrix[layers, np.asarray(precision_indices), np.asarray(keep_indices)].sum(axis=-1)

    def cost_of_indices(self, precision_indices: Sequence[int], keep_indices: Sequence[int], kind: str) -> float:
        """Absolute ``kind`` cost of an index schedule."""
        layers = np.arange(self.n_layers)
        return float(self.costs[kind][layers, np.asarray(precision_indices), np.asarray(keep_indices)].sum())

    def index_violations(self, precision_indices: Sequence[int], keep_indices: Sequence[int]) -> list[str]:
        """Violated constraints of an index schedule (empty list: feasible)."""
        p_idx = np.asarray(precision_indices, dtype=np.int64)
        g_idx = np.asarray(keep_indices, dtype=np.int64)
        kept = self.grid_array[g_idx]
        out = []
        if self.monotone:
            out += [
                f"monotone: layer {k} keeps {kept[k]} > layer {k - 1} keeps {kept[k - 1]}"
                for k in range(1, len(kept))
                if kept[k] > kept[k - 1]
            ]
        for c in self.constraints:
            if isinstance(c, MinKeepBefore):
                bad = [k for k in range(c.layer) if kept[k] < c.tokens]
                if bad:
                    out.append(f"{describe(c)}: layers {bad} keep fewer")
            elif isinstance(c, FixedLayer) and kept[c.layer] != c.tokens:
                out.append(f"{describe(c)}: layer {c.layer} keeps {kept[c.layer]}")
            elif isinstance(c, AllowedPrecisions) and self.precisions[p_idx[c.layer]] not in c.precisions:
                out.append(f"AllowedPrecisions: layer {c.layer} runs {self.precisions[p_idx[c.layer]]}")
        options = self.options(p_idx, g_idx)
        for row in self.rows:
            lhs = float(row.values(options))
            if not row.holds(lhs):
                out.append(f"{row.name}: value {lhs:.6g} against {row.sense} {row.rhs:.6g}")
        return out

    # ---- public helpers on names and token counts --------------------------------------------------
    def precision_indices_of(self, names: Sequence[str]) -> tuple[int, ...]:
        """Option indices of per-layer precision names; raises ProblemError for an unknown name."""
        if isinstance(names, str) or len(names) != self.n_layers:
            raise ProblemError(f"precisions per layer must have {self.n_layers} names, got {names!r}")
        unknown = [n for n in names if n not in self.precisions]
        if unknown:
            raise ProblemError(f"precision names {unknown} are not among {', '.join(self.precisions)}")
        return tuple(self.precisions.index(n) for n in names)

    def indices_of(self, schedule: Sequence[int]) -> tuple[int, ...]:
        """Grid indices of a schedule of token counts; raises ProblemError if a count is off the grid."""
        if len(schedule) != self.n_layers:
            raise ProblemError(f"schedule must have {self.n_layers} entries, got {len(schedule)}")
        position = {k: g for g, k in enumerate(self.grid)}
        missing = [k for k in schedule if k not in position]
        if missing:
            raise ProblemError(f"schedule values {missing} are not in the grid")
        return tuple(position[k] for k in schedule)

    def _indices(self, precisions: Sequence[str], schedule: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return self.precision_indices_of(precisions), self.indices_of(schedule)

    def objective_of(self, precisions: Sequence[str], schedule: Sequence[int]) -> float:
        """Predicted damage of per-layer precision names and token counts."""
        return float(self.objective_of_indices(*self._indices(precisions, schedule)))

    def cost_of(self, precisions: Sequence[str], schedule: Sequence[int], kind: str) -> float:
        """Absolute ``kind`` cost of per-layer precision names and token counts."""
        return self.cost_of_indices(*self._indices(precisions, schedule), kind)

    def cost_ratio(self, precisions: Sequence[str], schedule: Sequence[int], kind: str) -> float:
        """``cost_of`` as a fraction of the all-reference, all-tokens cost (the unit of ``budgets``)."""
        return self.cost_of(precisions, schedule, kind) / self.full_cost(kind)

    def violations(self, precisions: Sequence[str], schedule: Sequence[int]) -> list[str]:
        """Every violated constraint of per-layer precision names and token counts; empty when feasible."""
        return self.index_violations(*self._indices(precisions, schedule))

    def is_feasible(self, precisions: Sequence[str], schedule: Sequence[int]) -> bool:
        """Whether per-layer precision names and token counts satisfy every constraint."""
        return not self.violations(precisions, schedule)


__all__ = ["JOINT_COST_KINDS", "AllowedPrecisions", "JointProblem"]
