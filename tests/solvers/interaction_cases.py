"""Random interaction terms and a brute-force ranking oracle (every candidate schedule, raw fields)."""

from __future__ import annotations

import numpy as np

from quota.solvers import AllocationProblem
from tests.solvers.solver_cases import candidate_schedules, curve_problem, feasible_mask, objective


def with_interactions(problem: AllocationProblem, rng: np.random.Generator, scale: float = 1.0) -> AllocationProblem:
    """``problem`` with random ``[L-1, G, G]`` interactions (normal, some exact zeros and negatives)."""
    shape = (problem.n_layers - 1, problem.n_candidates, problem.n_candidates)
    inter = rng.normal(scale=scale, size=shape) * (rng.random(shape) < 0.8)
    return problem.replace(interactions=inter)


def small_problem(seed: int, *, interactions: bool = True, float_budget: bool = False) -> AllocationProblem:
    """A DP-expressible problem of 2-5 layers and 2-5 keep counts, with random interactions."""
    rng = np.random.default_rng(seed)
    problem = curve_problem(rng, layers=(2, 5), cands=(2, 5), float_budget=float_budget)
    return with_interactions(problem, rng) if interactions else problem


def oracle_objective(problem: AllocationProblem, idx: np.ndarray) -> np.ndarray:
    """Objective of schedules ``[M, L]`` from the raw fields, interactions added pair by pair."""
    idx = np.atleast_2d(idx)
    value = objective(problem, idx)
    if problem.interactions is not None:
        for layer in range(problem.n_layers - 1):
            value = value + problem.interactions[layer, idx[:, layer], idx[:, layer + 1]]
    return value


def ranked(problem: AllocationProblem) -> tuple[np.ndarray, np.ndarray]:
    """Every feasible schedule ``[M, L]`` and its objective ``[M]``, sorted by objective then indices."""
    cands = candidate_schedules(problem)
    cands = cands[feasible_mask(problem, cands)]
    values = oracle_objective(problem, cands)
    order = np.lexsort((*cands.T[::-1], values))
    return cands[order], values[order]
