"""Order encoding of a schedule, shared by the exact solvers (CP-SAT and MIP).

Per layer l and grid index g >= 1 a 0/1 variable ``y[l, g]`` means ``g_l >= g`` (``y[l, 0] = 1``).
A grid index a layer may not take shares its variable with the next index; indices up to the
layer's lowest allowed one are constant 1, above its highest constant 0. The constraints are
implications ``a => b`` (``y_a <= y_b``):

- within a layer: ``y[l, g+1] => y[l, g]``;
- monotonicity: ``y[l+1, g] => y[l, g]``.

``y[l, g]`` is the suffix sum ``sum_{g' >= g} x[l, g']`` of the one-hot choice ``x``, so the
monotonicity implication is the prefix-sum constraint of the one-hot model, with the same LP
relaxation and two literals per constraint.

Every per-layer curve c is linear in the variables:
``c[l, g_l] = c[l, 0] + sum_{g >= 1} (c[l, g] - c[l, g-1]) * y[l, g]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRUE = -1
FALSE = -2


@dataclass(frozen=True)
class OrderLayout:
    """``code[l, g]``: a variable id (``>= 0``), ``TRUE`` or ``FALSE`` for ``y[l, g]``, ``[L, G]``.

    ``implications``: pairs ``(a, b)`` of variable ids meaning ``y_a => y_b``. ``forced``: variable
    id -> fixed value, for implications with one constant side. ``contradiction``: some implication
    is ``1 => 0`` (or a layer has no allowed index), so no schedule exists.
    """

    code: np.ndarray
    n_vars: int
    implications: tuple[tuple[int, int], ...]
    forced: dict[int, int]
    contradiction: bool

    @classmethod
    def build(cls, allowed: np.ndarray, monotone: bool) -> OrderLayout:
        """The layout for an ``[L, G]`` allowed mask, with or without monotonicity."""
        n_layers, n_cand = allowed.shape
        code = np.full((n_layers, n_cand), TRUE, dtype=np.int64)
        n_vars = 0
        contradiction = False
        for layer in range(n_layers):
            options = np.flatnonzero(allowed[layer])
            if len(options) == 0:
                contradiction = True
                continue
            lo, hi = int(options[0]), int(options[-1])
            nxt = FALSE
            for g in range(n_cand - 1, 0, -1):
                if g > hi:
                    code[layer, g] = FALSE
                elif g <= lo:
                    code[layer, g] = TRUE
                elif allowed[layer, g]:
                    code[layer, g] = n_vars
                    n_vars += 1
                else:
                    code[layer, g] = nxt
                nxt = code[layer, g]
        pairs = [(code[k, g + 1], code[k, g]) for k in range(n_layers) for g in range(1, n_cand - 1)]
        if monotone:
            pairs += [(code[k + 1, g], code[k, g]) for k in range(n_layers - 1) for g in range(1, n_cand)]
        implications: dict[tuple[int, int], None] = {}
        forced: dict[int, int] = {}
        for a, b in pairs:
            a, b = int(a), int(b)
            if a == FALSE or b == TRUE or a == b:
                continue
            if a == TRUE and b == FALSE:
                contradiction = True
            elif a == TRUE:
                contradiction |= forced.setdefault(b, 1) != 1
            elif b == FALSE:
                contradiction |= forced.setdefault(a, 0) != 0
            else:
                implications[(a, b)] = None
        return cls(code, n_vars, tuple(implications), forced, contradiction)

    def linear(self, coef: np.ndarray) -> tuple[np.ndarray, float]:
        """``sum_l coef[l, g_l]`` as ``(weights [n_vars], constant)``; keeps the dtype of ``coef``."""
        steps = np.diff(coef, axis=1)  # [L, G-1], step into index g = 1..G-1
        codes = self.code[:, 1:]
        weights = np.zeros(self.n_vars, dtype=coef.dtype)
        is_var = codes >= 0
        np.add.at(weights, codes[is_var], steps[is_var])
        constant = coef[:, 0].sum() + steps[codes == TRUE].sum()
        return weights, constant

    def indices(self, values: np.ndarray) -> list[int]:
        """Grid index per layer from 0/1 ``values`` of the variables."""
        values = np.append(np.asarray(values, dtype=np.float64), 0.0)  # a dummy slot for constant codes
        truth = np.where(self.code >= 0, values[np.maximum(self.code, 0)] > 0.5, self.code == TRUE)
        truth[:, 0] = True
        return [int(np.flatnonzero(row)[-1]) for row in truth]

    def values_of(self, indices: list[int]) -> np.ndarray:
        """0/1 variable values encoding a schedule given as grid indices."""
        values = np.zeros(self.n_vars, dtype=np.int64)
        for layer, g_l in enumerate(indices):
            for g in range(1, self.code.shape[1]):
                if self.code[layer, g] >= 0:
                    values[self.code[layer, g]] = int(g_l >= g)
        return values
