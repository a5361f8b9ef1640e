"""Random joint problems and an independent brute-force oracle for the joint solver tests.

The oracle (``joint_brute_force``) enumerates every (precision vector, keep schedule) pair (every
monotone keep schedule when the problem is monotone) and checks it against the raw fields of the
problem (budgets, costs, reference, constraints), not its lowered rows.
"""

from __future__ import annotations

import itertools

import numpy as np

from quota.solvers import AllowedPrecisions, CostCap, FixedLayer, JointProblem, MinKeepBefore
from tests.solvers.solver_cases import TOL, arbitrary_curves, increasing_curve, monotone_schedules, random_grid

NAMES = ("w4a4", "w4a8", "fp8", "bf16")


def random_joint_problem(
    rng: np.random.Generator,
    *,
    layers: tuple[int, int] = (2, 4),
    cands: tuple[int, int] = (2, 4),
    precisions: tuple[int, int] = (1, 3),
    several_rows: bool = False,
    integer_costs: bool = True,
) -> JointProblem:
    """A small random joint problem with arbitrary curves (non-monotone, negative, plateaus), random
    domain constraints and monotonicity. One budget row unless ``several_rows`` (then 1-3 budgets and
    sometimes a ``CostCap``); ``integer_costs``: every cost an integer (exact DP units)."""
    n_layers = int(rng.integers(layers[0], layers[1] + 1))
    n_cand = int(rng.integers(cands[0], cands[1] + 1))
    n_prec = int(rng.integers(precisions[0], precisions[1] + 1))
    n_tokens = int(rng.integers(max(n_cand, 8), 65))
    grid = random_grid(rng, n_tokens, n_cand)
    names = tuple(sorted(rng.choice(NAMES, size=n_prec, replace=False), key=NAMES.index))
    shape = (n_layers, n_prec, n_cand)

    def curve() -> np.ndarray:  # [L, P, G] non-negative, non-decreasing in k
        flat = increasing_curve(rng, (n_layers * n_prec, n_cand), integer=integer_costs).reshape(shape)
        return flat + (
            rng.integers(0, 5, size=shape[:2] + (1,)) if integer_costs else rng.uniform(0, 2, shape[:2] + (1,))
        )

    costs = {"ttft": curve(), "kv_bytes": curve()}
    if rng.random() < 0.5:
        costs["weight_bytes"] = rng.integers(1, 9, size=shape[:2]).astype(np.float64)  # [L, P], no k dependence
    kinds = list(costs) + ["tokens"]
    n_rows = int(rng.integers(1, 4)) if several_rows else 1
    chosen = [str(k) for k in rng.choice(kinds, size=n_rows, replace=False)]
    budgets = {k: float(rng.choice([rng.uniform(0.05, 1.2), rng.uniform(0.3, 0.8)])) for k in chosen}
    constraints: list = []
    if several_rows and rng.random() < 0.4:
        kind = str(rng.choice(list(costs)))
        full = costs[kind][:, -1].max(axis=1).sum() if costs[kind].ndim == 3 else costs[kind].max(axis=1).sum()
        constraints.append(CostCap(kind, float(full * rng.uniform(0.2, 1.0))))
        if rng.random() < 0.5:
            budgets.pop(chosen[0])
    if rng.random() < 0.3:
        constraints.append(MinKeepBefore(int(rng.integers(0, n_layers + 1)), int(rng.integers(0, n_tokens + 1))))
    if rng.random() < 0.2:
        constraints.append(FixedLayer(int(rng.integers(0, n_layers)), int(rng.choice(grid))))
    if rng.random() < 0.4:
        allowed = rng.choice(names, size=int(rng.integers(1, n_prec + 1)), replace=False)
        constraints.append(AllowedPrecisions(int(rng.integers(0, n_layers)), tuple(str(a) for a in allowed)))
    token_shape = (n_prec, n_layers, n_cand) if rng.random() < 0.8 else (n_layers, n_cand)
    return JointProblem(
        n_tokens=n_tokens,
        grid=grid,
        precisions=names,
        precision_damage=arbitrary_curves(rng, (n_layers, n_prec)),
        token_damage=arbitrary_curves(rng, token_shape),
        budgets=budgets,
        costs=costs,
        reference=str(rng.choice(names)) if rng.random() < 0.3 else None,
        monotone=bool(rng.random() < 0.7),
        constraints=tuple(constraints),
    )


def _holds(lhs: np.ndarray, rhs: float, coef: np.ndarray) -> np.ndarray:
    scale = max(abs(rhs), float(np.abs(coef).max(axis=(1, 2)).sum()))
    return lhs <= rhs + TOL * scale


def _candidates(problem: JointProblem) -> tuple[np.ndarray, np.ndarray]:
    """Every (precision vector, keep schedule) pair to look at, as ``[M, L]`` index arrays each."""
    n_layers = problem.n_layers
    keeps = (
        monotone_schedules(n_layers, problem.n_candidates)
        if problem.monotone
        else np.array(list(itertools.product(range(problem.n_candidates), repeat=n_layers)), dtype=np.int64)
    )
    precs = np.array(list(itertools.product(range(problem.n_precisions), repeat=n_layers)), dtype=np.int64)
    p_idx = np.repeat(precs, len(keeps), axis=0)
    g_idx = np.tile(keeps, (len(precs), 1))
    return p_idx, g_idx


def joint_feasible(problem: JointProblem, p_idx: np.ndarray, g_idx: np.ndarray, rows: bool = True) -> np.ndarray:
    """Feasibility of ``[M, L]`` index pairs from the raw fields (``rows=False``: domain and order only)."""
    layers = np.arange(problem.n_layers)
    grid = np.asarray(problem.grid)
    kept = grid[g_idx]
    ok = np.ones(len(p_idx), dtype=bool)
    if problem.monotone:
        ok &= np.all(kept[:, 1:] <= kept[:, :-1], axis=1)
    ref = problem.precisions.index(problem.reference)
    for c in problem.constraints:
        if isinstance(c, MinKeepBefore):
            ok &= np.all(kept[:, : c.layer] >= c.tokens, axis=1)
        elif isinstance(c, FixedLayer):
            ok &= kept[:, c.layer] == c.tokens
        elif isinstance(c, AllowedPrecisions):
            ok &= np.isin(np.asarray(problem.precisions)[p_idx[:, c.layer]], c.precisions)
        elif isinstance(c, CostCap) and rows:
            coef = problem.costs[c.kind]
            ok &= _holds(coef[layers, p_idx, g_idx].sum(axis=1), c.value, coef)
    if rows:
        for kind, fraction in problem.budgets.items():
            coef = problem.costs[kind]
            rhs = fraction * coef[:, ref, -1].sum()
            ok &= _holds(coef[layers, p_idx, g_idx].sum(axis=1), rhs, coef)
    return ok


def joint_objective(problem: JointProblem, p_idx: np.ndarray, g_idx: np.ndarray) -> np.ndarray:
    """Damage of ``[M, L]`` index pairs from the raw fields."""
    layers = np.arange(problem.n_layers)
    return (problem.precision_damage[layers, p_idx] + problem.token_damage[p_idx, layers, g_idx]).sum(axis=1)


def joint_brute_force(problem: JointProblem) -> tuple[float, np.ndarray, np.ndarray] | None:
    """Optimum and an optimal (precision indices, keep indices) by enumeration, or None if infeasible."""
    p_idx, g_idx = _candidates(problem)
    ok = joint_feasible(problem, p_idx, g_idx)
    if not ok.any():
        return None
    values = joint_objective(problem, p_idx[ok], g_idx[ok])
    best = int(np.argmin(values))
    return float(values[best]), p_idx[ok][best], g_idx[ok][best]


def joint_least_cost(problem: JointProblem, kind: str) -> float | None:
    """Least ``kind`` cost ratio over pairs meeting the domain and order constraints (no rows), by enumeration."""
    p_idx, g_idx = _candidates(problem)
    ok = joint_feasible(problem, p_idx, g_idx, rows=False)
    if not ok.any():
        return None
    coef = problem.costs[kind]
    ref = problem.precisions.index(problem.reference)
    values = coef[np.arange(problem.n_layers), p_idx[ok], g_idx[ok]].sum(axis=1)
    return float(values.min() / coef[:, ref, -1].sum())
