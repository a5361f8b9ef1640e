"""Random allocation problems and an independent brute-force oracle for the solver tests.

The oracle (``brute_force``) enumerates every schedule (every monotone one when the problem is
monotone) and checks it against the raw fields of the problem, not its lowered forms.
"""

from __future__ import annotations

import itertools

import numpy as np

from quota.solvers import AllocationProblem, CostCap, FixedLayer, LinearConstraint, MinKeepBefore, default_grid

TOL = 1e-9  # relative feasibility tolerance used by the independent checks (same as FEAS_RTOL)


def random_grid(rng: np.random.Generator, n_tokens: int, size: int) -> tuple[int, ...]:
    """``size`` sorted unique values in [0, N] containing N."""
    others = rng.choice(n_tokens, size=size - 1, replace=False)
    return tuple(sorted(int(v) for v in others)) + (n_tokens,)


def monotone_damage(rng: np.random.Generator, shape: tuple[int, ...], convex: bool = False) -> np.ndarray:
    """Random damage, non-increasing along the last axis (k), 0 at k = N."""
    steps = rng.exponential(1.0, size=shape)
    if convex:
        steps = np.sort(steps, axis=-1)[..., ::-1]
    damage = np.cumsum(steps[..., ::-1], axis=-1)[..., ::-1]
    damage = damage - damage[..., -1:]
    return damage * rng.uniform(0.1, 3.0, size=shape[:-1] + (1,))


def increasing_curve(rng: np.random.Generator, shape: tuple[int, int], integer: bool) -> np.ndarray:
    """A random non-negative curve, non-decreasing along k."""
    steps = rng.integers(0, 20, size=shape) if integer else rng.uniform(0.0, 3.0, size=shape)
    return np.cumsum(steps, axis=1).astype(np.float64)


def random_problem(
    rng: np.random.Generator,
    *,
    layers: tuple[int, int] = (2, 8),
    cands: tuple[int, int] = (3, 9),
    integer_budget: bool = True,
    domain_constraints: bool = True,
    tasks: bool = True,
    extras: bool = True,
    rows: bool = False,
    aggregate: str = "sum",
) -> AllocationProblem:
    """A small random problem. ``integer_budget``: the budget cost is exactly integer (tokens or
    integer KV), so the DP oracle applies. ``rows``: add a CostCap and a LinearConstraint."""
    n_layers = int(rng.integers(layers[0], layers[1] + 1))
    n_cand = int(rng.integers(cands[0], cands[1] + 1))
    n_tokens = int(rng.integers(max(n_cand, 8), 65))
    grid = random_grid(rng, n_tokens, n_cand)
    n_tasks = int(rng.integers(1, 4)) if tasks or aggregate == "max_task" else 1
    shape = (n_layers, n_cand) if n_tasks == 1 and rng.random() < 0.5 else (n_tasks, n_layers, n_cand)
    if rng.random() < 0.2:
        damage = rng.normal(size=shape)  # arbitrary curves, not monotone
    else:
        damage = monotone_damage(rng, shape, convex=rng.random() < 0.5)
    costs = {}
    budget_kind = "tokens"
    if integer_budget:
        if rng.random() < 0.3:
            costs["kv"] = increasing_curve(rng, (n_layers, n_cand), integer=True) + 1.0
            budget_kind = "kv"
    else:
        costs["flops"] = increasing_curve(rng, (n_layers, n_cand), integer=False) + 0.1
        budget_kind = "flops"
    constraints = []
    if domain_constraints and rng.random() < 0.5:
        constraints.append(MinKeepBefore(int(rng.integers(0, n_layers + 1)), int(rng.integers(0, n_tokens + 1))))
    if domain_constraints and rng.random() < 0.3:
        constraints.append(FixedLayer(int(rng.integers(0, n_layers)), int(rng.choice(grid))))
    if rows:
        costs.setdefault("kv", increasing_curve(rng, (n_layers, n_cand), integer=True) + 1.0)
        full = costs["kv"][:, -1].sum()
        constraints.append(CostCap("kv", float(full * rng.uniform(0.2, 1.0))))
        coef = rng.normal(size=(n_layers, n_cand))
        sense = "<=" if rng.random() < 0.5 else ">="
        lo = coef.min(axis=1).sum()
        hi = coef.max(axis=1).sum()
        constraints.append(LinearConstraint(coef, float(lo + (hi - lo) * rng.uniform(0.2, 0.8)), sense, "random"))
    extra_costs, extra_weights = [], None
    if extras and rng.random() < 0.3:
        extra_costs = [rng.uniform(-1.0, 1.0, size=(n_layers, n_cand))]
        extra_weights = (float(rng.uniform(0.1, 2.0)),)
    return AllocationProblem(
        n_tokens=n_tokens,
        grid=grid,
        damage=damage,
        budget=float(rng.choice([rng.uniform(0.05, 1.0), 1.0, 0.5])),
        costs=costs,
        budget_kind=budget_kind,
        monotone=bool(rng.random() < 0.75),
        aggregate=aggregate,
        task_weights=rng.uniform(0.2, 2.0, size=n_tasks) if n_tasks > 1 and rng.random() < 0.5 else None,
        extra_costs=extra_costs,
        extra_weights=extra_weights,
        constraints=constraints,
    )


def arbitrary_curves(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Damage curves of every kind the solvers must take: non-monotone in k, negative values, flat
    stretches (ties), and large offsets between layers."""
    kind = int(rng.integers(4))
    if kind == 0:  # white noise around zero: non-monotone, about half negative
        return rng.normal(size=shape)
    if kind == 1:  # a decreasing curve with a dip below zero (dropping a few tokens helps)
        base = monotone_damage(rng, shape)
        return base - rng.uniform(0.0, 1.0, size=shape[:-1] + (1,)) * np.sin(np.linspace(0, np.pi, shape[-1]))
    if kind == 2:  # plateaus: integer levels, many ties
        return rng.integers(-2, 3, size=shape).astype(np.float64)
    return rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 3, size=shape[:-1] + (1,))  # per-layer scales


def curve_problem(
    rng: np.random.Generator,
    *,
    layers: tuple[int, int] = (2, 6),
    cands: tuple[int, int] = (2, 7),
    float_budget: bool = False,
) -> AllocationProblem:
    """A small DP-expressible problem ("sum" aggregate, domain constraints only) with arbitrary curves
    (``arbitrary_curves``), one to three tasks, sometimes an extra term; ``float_budget``: a budget kind
    with float costs that are not multiples of a power of two."""
    n_layers = int(rng.integers(layers[0], layers[1] + 1))
    n_cand = int(rng.integers(cands[0], cands[1] + 1))
    n_tokens = int(rng.integers(max(n_cand, 8), 65))
    grid = random_grid(rng, n_tokens, n_cand)
    n_tasks = int(rng.integers(1, 4))
    shape = (n_layers, n_cand) if n_tasks == 1 else (n_tasks, n_layers, n_cand)
    costs, kind = {}, "tokens"
    if float_budget:
        costs["latency"] = increasing_curve(rng, (n_layers, n_cand), integer=False) * 0.1 + 0.01
        kind = "latency"
    constraints = []
    if rng.random() < 0.3:
        constraints.append(MinKeepBefore(int(rng.integers(0, n_layers + 1)), int(rng.integers(0, n_tokens + 1))))
    if rng.random() < 0.2:
        constraints.append(FixedLayer(int(rng.integers(0, n_layers)), int(rng.choice(grid))))
    extra = [rng.normal(size=(n_layers, n_cand))] if rng.random() < 0.3 else []
    return AllocationProblem(
        n_tokens=n_tokens,
        grid=grid,
        damage=arbitrary_curves(rng, shape),
        budget=float(rng.choice([rng.uniform(0.05, 1.0), rng.uniform(0.2, 0.6), 1.0])),
        costs=costs,
        budget_kind=kind,
        monotone=bool(rng.random() < 0.7),
        task_weights=rng.uniform(0.2, 2.0, size=n_tasks) if n_tasks > 1 else None,
        extra_costs=extra,
        constraints=constraints,
    )


def realistic_problem(n_layers: int = 30, steps: int = 32, n_tokens: int = 576, budget: float = 0.3, seed: int = 0):
    """Sensitivity-like curves: early layers more sensitive, convex-ish decreasing damage plus noise."""
    rng = np.random.default_rng(seed)
    grid = np.array(default_grid(n_tokens, steps))
    dropped = 1 - grid / n_tokens
    sensitivity = np.exp(-np.arange(n_layers) / 8.0) * rng.uniform(0.5, 1.5, n_layers)
    power = rng.uniform(1.0, 3.0, n_layers)
    damage = sensitivity[:, None] * dropped[None, :] ** power[:, None]
    noise = np.sort(rng.uniform(0, 0.05, (n_layers, len(grid))), axis=1)[:, ::-1] * sensitivity[:, None]
    damage = damage + noise - noise[:, -1:]
    return AllocationProblem(n_tokens=n_tokens, grid=tuple(int(g) for g in grid), damage=damage, budget=budget)


# ---- independent oracle: reads only the raw fields, not the problem's lowered forms ------------------


def _holds(lhs: np.ndarray, rhs: float, sense: str, scale: float) -> np.ndarray:
    tol = TOL * scale
    return lhs <= rhs + tol if sense == "<=" else lhs >= rhs - tol


def feasible_mask(problem: AllocationProblem, idx: np.ndarray) -> np.ndarray:
    """Feasibility of schedules ``idx`` ``[M, L]`` (grid indices), computed from the raw fields."""
    idx = np.atleast_2d(idx)
    grid = np.asarray(problem.grid)
    kept = grid[idx]  # [M, L]
    layers = np.arange(problem.n_layers)
    ok = np.ones(len(idx), dtype=bool)
    if problem.monotone:
        ok &= np.all(kept[:, 1:] <= kept[:, :-1], axis=1)
    curve = problem.costs[problem.budget_kind]
    full = curve[:, -1].sum()
    ok &= _holds(curve[layers, idx].sum(axis=1), problem.budget * full, "<=", full)
    for c in problem.constraints:
        if isinstance(c, MinKeepBefore):
            ok &= np.all(kept[:, : c.layer] >= c.tokens, axis=1)
        elif isinstance(c, FixedLayer):
            ok &= kept[:, c.layer] == c.tokens
        elif isinstance(c, CostCap):
            cap = problem.costs[c.kind]
            ok &= _holds(cap[layers, idx].sum(axis=1), c.value, "<=", max(abs(c.value), cap.max(axis=1).sum()))
        elif isinstance(c, LinearConstraint):
            coef = np.asarray(c.coef)
            scale = max(abs(c.rhs), np.abs(coef).max(axis=1).sum())
            ok &= _holds(coef[layers, idx].sum(axis=1), c.rhs, c.sense, scale)
    return ok


def objective(problem: AllocationProblem, idx: np.ndarray) -> np.ndarray:
    """Objective of schedules ``[M, L]`` from the raw fields."""
    idx = np.atleast_2d(idx)
    layers = np.arange(problem.n_layers)
    damage = problem.damage if problem.damage.ndim == 3 else problem.damage[None]
    per_task = damage[:, layers, idx].sum(axis=-1) * np.asarray(problem.task_weights)[:, None]  # [T, M]
    value = per_task.sum(axis=0) if problem.aggregate == "sum" else per_task.max(axis=0)
    for weight, term in zip(problem.extra_weights, problem.extra_costs):
        value = value + weight * np.asarray(term)[layers, idx].sum(axis=1)
    return value


def all_schedules(problem: AllocationProblem) -> np.ndarray:
    """Every index schedule, ``[G**L, L]``."""
    return np.array(list(itertools.product(range(problem.n_candidates), repeat=problem.n_layers)), dtype=np.int64)


def monotone_schedules(n_layers: int, n_candidates: int) -> np.ndarray:
    """Every non-increasing index schedule, ``[C(G + L - 1, L), L]`` (far fewer than ``G**L``)."""
    rising = itertools.combinations_with_replacement(range(n_candidates), n_layers)
    return np.array([combo[::-1] for combo in rising], dtype=np.int64).reshape(-1, n_layers)


def candidate_schedules(problem: AllocationProblem) -> np.ndarray:
    """The schedules brute force must look at: the monotone ones when the problem is monotone."""
    if problem.monotone:
        return monotone_schedules(problem.n_layers, problem.n_candidates)
    return all_schedules(problem)


def brute_force(problem: AllocationProblem) -> tuple[float, np.ndarray] | None:
    """Optimum and an optimal schedule by enumeration, or None if infeasible."""
    cands = candidate_schedules(problem)
    ok = feasible_mask(problem, cands)
    if not ok.any():
        return None
    values = objective(problem, cands[ok])
    best = int(np.argmin(values))
    return float(values[best]), cands[ok][best]


def least_budget_cost(problem: AllocationProblem) -> float | None:
    """Least budget-kind cost ratio over schedules meeting every constraint but the budget (enumeration)."""
    relaxed = problem.replace(budget=1.0)
    cands = all_schedules(relaxed)
    ok = feasible_mask(relaxed, cands)
    if not ok.any():
        return None
    curve = problem.costs[problem.budget_kind]
    costs = curve[np.arange(problem.n_layers), cands[ok]].sum(axis=1)
    return float(costs.min() / curve[:, -1].sum())


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    """Equal within ``rel`` relative (absolute near zero)."""
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))
