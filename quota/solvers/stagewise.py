"""Stage-wise schedules of a problem: the shapes fixed pruning methods use, as candidates beside the solver's.

A stage-wise schedule keeps every token up to a layer ``a``, keeps ``k`` from ``a`` on, and, optionally, none from
a later layer ``b`` on (where the model no longer reads visual tokens)::

    [N] * a + [k] * (b - a) + [0] * (L - b)        0 <= a < b <= L, k a grid value below N

FastV, VisionZip, DivPrune and CDPruner are the ``b = L`` schedules (``a = 0`` before the language model, ``a = 2``
for FastV). Their predicted damage is the one the profile reads most directly: under the additive model the sum
of a prune-from-``a`` schedule's per-layer terms telescopes to the measured damage of pruning from ``a`` to ``k``,
whereas a schedule of many steps sums many differences of noisy measurements. Measured refinement
(:mod:`quota.refine`) measures the best of them beside the solver's ``k`` best, so that a recipe is never worse than
the stage-wise schedule of the same budget it could have been, by more than the held-out measurement's noise.
"""

from __future__ import annotations

import numpy as np

from quota.solvers.moves import feasible_mask, row_values
from quota.solvers.problem import AllocationProblem


def stagewise_indices(problem: AllocationProblem) -> tuple[np.ndarray, np.ndarray]:
    """Every stage-wise schedule of ``problem`` as grid indices ``[M, L]`` (int64), before any feasibility check,
    and the ``[M]`` shape id ``a * (L + 1) + b`` of each: one schedule per ``(a, k, b)`` with ``0 <= a < b <= L``
    and ``k`` each grid index below the top one (``b < L`` only where the grid has 0, and then ``k > 0``)."""
    layers, top = problem.n_layers, problem.n_candidates - 1
    zero = problem.grid.index(0) if 0 in problem.grid else None
    layer = np.arange(layers)
    rows, shapes = [], []
    for a in range(layers):
        for b in range(a + 1, layers + 1):
            if b < layers and zero is None:
                continue
            for g in range(top):
                if b < layers and g == zero:
                    continue  # [N]*a + [0]*(L-a) is already the b = L schedule of k = 0
                tail = zero if b < layers else g  # layers >= b: none kept (b < L only where the grid has 0)
                rows.append(np.where(layer < a, top, np.where(layer < b, g, tail)))
                shapes.append(a * (layers + 1) + b)
    return np.asarray(rows, dtype=np.int64).reshape(-1, layers), np.asarray(shapes, dtype=np.int64)


def best_stagewise(problem: AllocationProblem, count: int, exclude=()) -> list[tuple[int, ...]]:
    """The ``count`` stage-wise schedules (grid indices, tuples of ``L`` ints) of least predicted objective among
    those that satisfy every row and domain constraint of ``problem`` and spend the most of it: of each shape
    ``(a, b)`` only the largest keep count that fits, as a fixed method would take (a smaller one only wastes
    budget, and noisy curves can make it look better). None of them is in ``exclude`` (index tuples); ties go to
    the earlier pruning layer. Fewer when fewer fit; ``[]`` for ``count = 0``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    if count == 0:
        return []
    cands, shapes = stagewise_indices(problem)  # [M, L], [M]
    layers = np.arange(problem.n_layers)
    # non-increasing by construction (top > g >= the index of 0), so only the rows and domains can refuse one
    ok = problem.allowed[layers, cands].all(axis=1) & feasible_mask(problem, row_values(problem, cands))
    cands, shapes = cands[ok], shapes[ok]
    if not len(cands):
        return []
    keep = cands[np.arange(len(cands)), np.argmax(cands < problem.n_candidates - 1, axis=1)]  # [M] k's index
    largest = {}
    for i, (shape, g) in enumerate(zip(shapes.tolist(), keep.tolist())):
        if shape not in largest or g > keep[largest[shape]]:
            largest[shape] = i
    pick = np.array(sorted(largest.values()))
    cands, shapes = cands[pick], shapes[pick]
    objective = problem.objective_of_indices(cands)  # [M]
    order = np.lexsort((shapes, objective))
    skip = {tuple(int(g) for g in e) for e in exclude}
    out: list[tuple[int, ...]] = []
    for i in order:
        key = tuple(int(g) for g in cands[i])
        if key not in skip:
            out.append(key)
            skip.add(key)
            if len(out) == count:
                break
    return out
