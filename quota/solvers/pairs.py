"""Exact linearization of the pairwise ``interactions`` on the order encoding (CP-SAT and MIP).

The order encoding (``quota.solvers.encoding``) has ``y[l, g]`` meaning ``g_l >= g``, so the one-hot
choice is ``x[l, g] = y[l, g] - y[l, g+1]`` (``y[l, 0] = 1``, ``y[l, G] = 0``). For each pair of
adjacent layers a 0/1 (or, in a MIP, continuous ``[0, 1]``) variable ``z[l, a, b]`` per *usable*
pair (``a`` allowed at l, ``b`` allowed at l+1, and ``a >= b`` under monotonicity) with the
transportation rows

    sum_b z[l, a, b] = x[l, a]   (every a allowed at l)
    sum_a z[l, a, b] = x[l+1, b] (every b allowed at l+1)

For a 0/1 ``x`` each layer's ``x`` has one 1, so row ``a = g_l`` and column ``b = g_{l+1}`` each sum
to 1 and every other row and column to 0: the only non-negative solution is ``z[l, g_l, g_{l+1}] = 1``
and 0 elsewhere. So ``z`` is the product ``x[l, a] * x[l+1, b]`` exactly (no sign condition on the
interaction values), and ``sum z * interactions`` is the interaction term. The rows are the local
marginal polytope of the pair, so the LP bound is at least the one of the additive model.
"""

from __future__ import annotations

import numpy as np

from quota.solvers.encoding import FALSE, TRUE, OrderLayout


def usable_pairs(allowed: np.ndarray, monotone: bool) -> list[tuple[int, int, int]]:
    """``(l, a, b)`` for every pair of grid indices adjacent layers may take together, in order."""
    n_layers, _ = allowed.shape
    out = []
    for layer in range(n_layers - 1):
        for a in np.flatnonzero(allowed[layer]):
            for b in np.flatnonzero(allowed[layer + 1]):
                if not monotone or a >= b:
                    out.append((layer, int(a), int(b)))
    return out


def onehot_terms(layout: OrderLayout, layer: int, g: int) -> tuple[dict[int, int], int]:
    """``x[layer, g]`` as ``({variable id: coefficient}, constant)`` in the order variables."""
    terms: dict[int, int] = {}
    constant = 0
    n_cand = layout.code.shape[1]
    for index, sign in ((g, 1), (g + 1, -1)):
        code = TRUE if index == 0 else FALSE if index >= n_cand else int(layout.code[layer, index])
        if code == TRUE:
            constant += sign
        elif code != FALSE:
            terms[code] = terms.get(code, 0) + sign
    return {v: c for v, c in terms.items() if c != 0}, constant


def flow_rows(
    pairs: list[tuple[int, int, int]], allowed: np.ndarray
) -> list[tuple[list[int], int, int, int]]:
    """The transportation rows as ``(pair positions, layer, grid index, side)``: the ``z`` of the
    listed positions (into ``pairs``) sum to ``x[layer, index]``; ``side`` 0 is the row of layer l's
    index a, 1 the column of layer l+1's index b."""
    n_layers, _ = allowed.shape
    rows: dict[tuple[int, int, int], list[int]] = {}
    for layer in range(n_layers - 1):
        for a in np.flatnonzero(allowed[layer]):
            rows[(layer, int(a), 0)] = []
        for b in np.flatnonzero(allowed[layer + 1]):
            rows[(layer + 1, int(b), 1)] = []
    for pos, (layer, a, b) in enumerate(pairs):
        rows[(layer, a, 0)].append(pos)
        rows[(layer + 1, b, 1)].append(pos)
    return [(positions, layer, g, side) for (layer, g, side), positions in rows.items()]
