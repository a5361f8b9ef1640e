"""Stage-wise anchors of measured refinement: ``best_stagewise`` against brute force over every schedule of small
problems (the shape test, the feasibility test and the ranking are written here independently of the module)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from quota.solvers import AllocationProblem
from quota.solvers.constraints import FixedLayer
from quota.solvers.stagewise import best_stagewise

N, GRID, LAYERS = 8, (0, 2, 4, 6, 8), 4


def problem(seed: int, budget: float = 0.45, constraints=()) -> AllocationProblem:
    rng = np.random.default_rng(seed)
    damage = rng.random((LAYERS, len(GRID))) * 3.0  # [L, G], noisy: not monotone in k
    damage[:, -1] = 0.0
    return AllocationProblem(n_tokens=N, grid=GRID, damage=damage, budget=budget, constraints=tuple(constraints))


def shape_of(schedule) -> tuple[int, int, int] | None:
    """(a, k, b) when ``schedule`` is [N]*a + [k]*(b - a) + [0]*(L - b) with k < N (k > 0 when b < L)."""
    for a in range(LAYERS):
        for b in range(a + 1, LAYERS + 1):
            for k in GRID[:-1]:
                if b < LAYERS and k == 0:
                    continue
                if list(schedule) == [N] * a + [k] * (b - a) + [0] * (LAYERS - b):
                    return a, k, b
    return None


def oracle(p: AllocationProblem) -> list[tuple[float, tuple[int, ...]]]:
    """Brute force: of every feasible stage-wise schedule, per (a, b) the one of largest k; sorted by objective."""
    best: dict[tuple[int, int], tuple[int, tuple[int, ...]]] = {}
    for schedule in itertools.product(GRID, repeat=LAYERS):
        shape = shape_of(schedule)
        if shape is None or sum(schedule) > p.budget * N * LAYERS + 1e-9:
            continue
        if any(isinstance(c, FixedLayer) and schedule[c.layer] != c.tokens for c in p.constraints):
            continue
        a, k, b = shape
        if (a, b) not in best or k > best[(a, b)][0]:
            best[(a, b)] = (k, schedule)
    scored = []
    for _, schedule in best.values():
        idx = np.array([GRID.index(k) for k in schedule])
        scored.append((float(p.objective_of_indices(idx)), schedule))
    return sorted(scored, key=lambda x: x[0])


@pytest.mark.parametrize("seed", range(6))
def test_the_best_stage_wise_schedules_match_brute_force(seed):
    p = problem(seed)
    expected = oracle(p)
    got = best_stagewise(p, 5)
    assert len(got) == min(5, len(expected))
    got_schedules = [p.schedule_of(idx) for idx in got]
    values = [float(p.objective_of_indices(np.array(idx))) for idx in got]
    assert values == sorted(values)
    assert values == pytest.approx([v for v, _ in expected[:len(got)]])
    for schedule in got_schedules:
        assert shape_of(schedule) is not None
        assert sum(schedule) <= p.budget * N * LAYERS + 1e-9
    assert len(set(got)) == len(got)


def test_exclusions_constraints_and_counts():
    p = problem(3)
    first = best_stagewise(p, 3)
    rest = best_stagewise(p, 2, exclude=first[:1])
    assert first[0] not in rest and rest[0] == first[1]
    fixed = problem(3, constraints=[FixedLayer(0, N)])
    anchored = best_stagewise(fixed, 10)
    assert anchored and all(fixed.schedule_of(idx)[0] == N for idx in anchored)
    assert [s for _, s in oracle(fixed)][:len(anchored)] == [fixed.schedule_of(idx) for idx in anchored]
    assert best_stagewise(p, 0) == []
    assert best_stagewise(problem(3, budget=0.01), 4) == [(0,) * LAYERS]  # only dropping every token fits
    with pytest.raises(ValueError, match="count"):
        best_stagewise(p, -1)
