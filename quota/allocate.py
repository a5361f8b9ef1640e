"""Allocation: profile -> allocation problem -> solver -> recipe (``quota.solve``, the Python form of
``quota solve``)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from quota import __version__
from quota.profiling.profile import Profile, ProfileError
from quota.quant.config import QuantConfig
from quota.recipe import Recipe, ScoringSpec
from quota.schedule import check_budget, check_budget_kind, equivalent_tokens
from quota.solvers import AllocationProblem, Solution
from quota.solvers import solve as run_solver

DEFAULT_PROFILES = ("testbed_h100.json", "testbed_cpu.json")
"""Shipped testbed profiles in order of preference: measured on the H100 under the Triton kernels, else
measured on a CPU under the reference low-bit path."""


def shipped_profile_path(name: str | None = None) -> Path:
    """Path of the profile ``name`` shipped in the ``quota.profiles`` package data; without ``name``, the
    first of ``DEFAULT_PROFILES`` that is shipped."""
    try:
        folder = Path(str(resources.files("quota.profiles")))
    except ModuleNotFoundError:  # run from a source tree that is not installed: the repository's own folder
        folder = Path(__file__).resolve().parent.parent / "profiles"
    names = (name,) if name else DEFAULT_PROFILES
    for candidate in names:
        if (folder / candidate).is_file():
            return folder / candidate
    raise FileNotFoundError(
        f"no shipped profile named {' or '.join(map(repr, names))} (looked in {folder}); measure one with "
        f"`quota profile -o profile.json` and pass `--profile profile.json`"
    )


def budget_from_keep_tokens(profile: Profile, keep_tokens: float) -> float:
    """An equivalent-token budget (mean visual tokens kept per layer) as a fraction of N."""
    n = profile.n_visual_tokens
    if not 0 < keep_tokens <= n:
        raise ValueError(f"--keep-tokens must lie in (0, {n}] (the image's visual tokens), got {keep_tokens}")
    return keep_tokens / n


def build_problem(
    profile: Profile,
    budget: float,
    budget_kind: str = "tokens",
    damage: str = "kl",
    aggregate: str = "sum",
    constraints: Sequence[Any] = (),
    extra_costs: Sequence[np.ndarray] = (),
    extra_weights: Sequence[float] | None = None,
) -> AllocationProblem:
    """The allocation problem of ``profile`` under a budget. ``damage`` picks the curve (``kl``,
    ``task_loss``, or ``per_task`` for one curve per task, to use with ``aggregate="max_task"``)."""
    check_budget(budget)
    check_budget_kind(budget_kind)
    if budget_kind not in profile.costs and budget_kind != "tokens":
        raise ProfileError(f"the profile has no {budget_kind!r} cost curve (it has {sorted(profile.costs)})")
    if damage == "per_task":
        if not profile.per_task:
            raise ProfileError("the profile has no per-task damage curves")
        curves = np.stack([profile.per_task[t] for t in sorted(profile.per_task)])  # [T, L, G]
    elif damage in profile.damage:
        curves = profile.damage[damage]
    else:
        raise ProfileError(f"the profile has no {damage!r} damage curve (it has {sorted(profile.damage)})")
    return AllocationProblem(
        n_tokens=profile.n_visual_tokens, grid=profile.grid, damage=curves, budget=budget,
        costs=dict(profile.costs), budget_kind=budget_kind, aggregate=aggregate,
        constraints=tuple(constraints), extra_costs=tuple(extra_costs),
        extra_weights=tuple(extra_weights) if extra_weights is not None else None,
    )


@dataclass
class SolveResult:
    profile: Profile
    problem: AllocationProblem
    solution: Solution
    recipe: Recipe


def recipe_from_solution(profile: Profile, problem: AllocationProblem, solution: Solution) -> Recipe:
    """The recipe of a solved problem: the solution's schedule with the profile's scoring and quantization
    (the default config when the profile records none); ``versions`` are those of the solving environment."""
    scoring = ScoringSpec(dict(profile.score_weights)) if profile.score_weights else ScoringSpec()
    return Recipe(
        model_id=profile.model_id, model_hash=profile.model_hash, n_layers=profile.n_layers,
        n_visual_tokens=profile.n_visual_tokens, schedule=solution.schedule,
        scoring=scoring, quant=dict(profile.quant) or QuantConfig().to_dict(),
        budget_kind=problem.budget_kind, budget=problem.budget,
        solver={"name": solution.solver, "status": solution.status, "objective": solution.objective,
                "lower_bound": solution.lower_bound, "gap": solution.gap, "seconds": round(solution.solve_time, 4),
                "cost_ratios": solution.cost_ratios},
        data_version=profile.data_version, versions={"numpy": np.__version__}, quota_version=__version__,
    )


def solve(
    profile: Profile | str | Path | None = None,
    budget: float = 0.3,
    budget_kind: str = "tokens",
    solver: str = "cpsat",
    damage: str = "kl",
    time_limit: float = 30.0,
    **problem_kw: Any,
) -> SolveResult:
    """Solve the allocation problem of ``profile`` (default: the shipped testbed profile)."""
    if not isinstance(profile, Profile):
        profile = Profile.load(profile if profile is not None else shipped_profile_path())
    problem = build_problem(profile, budget, budget_kind, damage, **problem_kw)
    solution = run_solver(problem, solver, time_limit)
    if solution.schedule is None:
        raise RuntimeError(f"solver {solver} found no feasible schedule within {time_limit}s (status {solution.status})")
    return SolveResult(profile, problem, solution, recipe_from_solution(profile, problem, solution))


def summarize(result: SolveResult) -> dict[str, Any]:
    """JSON-friendly summary: schedule, per-layer cost and predicted damage, totals against all tokens."""
    p, s, prob = result.profile, result.solution, result.problem
    idx = list(s.indices)
    damage = prob.damage if prob.damage.ndim == 2 else prob.damage.sum(axis=0)  # [L, G]
    per_layer = []
    for layer, (k, g) in enumerate(zip(s.schedule, idx)):
        row = {"layer": layer, "tokens": int(k), "damage": float(damage[layer, g]),
               "costs": {kind: float(curve[layer, g]) for kind, curve in p.costs.items()}}
        per_layer.append(row)
    totals = {kind: float(sum(curve[layer, g] for layer, g in enumerate(idx))) for kind, curve in p.costs.items()}
    full = {kind: float(curve[:, -1].sum()) for kind, curve in p.costs.items()}
    return {
        "model_id": p.model_id, "device": p.device, "budget_kind": prob.budget_kind, "budget": prob.budget,
        "equivalent_tokens": equivalent_tokens(s.schedule), "n_visual_tokens": p.n_visual_tokens,
        "schedule": [int(k) for k in s.schedule], "per_layer": per_layer, "totals": totals, "full": full,
        "objective": s.objective, "lower_bound": s.lower_bound, "status": s.status, "gap": s.gap,
        "solver": s.solver, "seconds": s.solve_time,
    }
