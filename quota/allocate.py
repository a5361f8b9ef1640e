"""Allocation: profile -> allocation problem -> solver -> recipe (``quota.solve``, the Python form of
``quota solve``)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from importlib import metadata
from typing import Any, Mapping, Sequence

import numpy as np

from quota import __version__
from quota.profiling.damage_fit import DEFAULT_DAMAGE_FIT, check_damage_fit, fitted_curve, fitted_interactions
from quota.profiling.profile import Profile, ProfileError
from quota.quant.config import QuantConfig
from quota.recipe import Recipe
from quota.schedule import check_budget, check_budget_kind, equivalent_tokens
from quota.solvers import AllocationProblem, Solution
from quota.solvers import solve_problem

DEFAULT_PROFILES = ("testbed_h200.json", "testbed_cpu.json")
"""Shipped testbed profiles in order of preference: measured on an H200 under the Triton kernels, else measured
on a CPU under the reference low-bit path (both of the shipped testbed weights)."""


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


AGGREGATES = ("mean", "max", "weighted")
"""How per-task damage curves combine (``damage="per_task"``): the mean over tasks, the worst task, or a
weighted sum with ``task_weights``."""


def build_problem(
    profile: Profile,
    budget: float,
    budget_kind: str = "tokens",
    damage: str = "kl",
    aggregate: str | None = None,
    task_weights: Mapping[str, float] | None = None,
    constraints: Sequence[Any] = (),
    extra_costs: Sequence[np.ndarray] = (),
    extra_weights: Sequence[float] | None = None,
    interactions: np.ndarray | None = None,
    use_interactions: bool = True,
    damage_fit: str = DEFAULT_DAMAGE_FIT,
) -> AllocationProblem:
    """The allocation problem of ``profile`` under a budget.

    - ``budget``: a fraction in (0, 1] of the all-tokens cost of ``budget_kind`` (one of
      :data:`quota.schedule.BUDGET_KINDS`; ``tokens`` means equivalent visual tokens).
    - ``damage``: the curve minimized: ``kl`` (mean KL over the answer tokens against all tokens), ``task_loss``
      (increase of the answers' cross-entropy), or ``per_task`` (one KL curve per task).
    - ``aggregate``, ``task_weights``: with ``per_task`` only: ``mean`` (default), ``max`` (the worst task) or
      ``weighted`` (``task_weights``: task -> weight, every task of the profile named).
    - ``constraints``: :class:`~quota.solvers.MinKeepBefore`, :class:`~quota.solvers.FixedLayer`,
      :class:`~quota.solvers.CostCap`, :class:`~quota.solvers.LinearConstraint`.
    - ``extra_costs``, ``extra_weights``: ``[L, G]`` arrays added to the objective, each times its weight.
    - ``interactions``: ``[L-1, G, G]``, added when layer ``l`` takes grid index ``a`` and layer ``l + 1`` index ``b``
      (pairwise terms between adjacent pruning points; solved exactly by ``dp``, ``cpsat`` and ``mip``). Without
      it, ``damage="kl"`` takes the profile's measured ``interactions`` when it has them and ``use_interactions``
      is true (the default); ``task_loss`` and ``per_task`` never do (the terms are measured in KL only).
    - ``damage_fit``: how the measured curves are read (:data:`quota.profiling.damage_fit.DAMAGE_FITS`):
      ``monotone`` (default) fits every per-layer term to be non-negative and non-increasing in the keep count,
      the profile's interaction terms recomputed against the fit; ``raw`` takes the measured differences.
    """
    check_budget(budget)
    check_damage_fit(damage_fit)
    check_budget_kind(budget_kind)
    if budget_kind not in profile.costs and budget_kind != "tokens":
        raise ProfileError(f"the profile has no {budget_kind!r} cost curve (it has {sorted(profile.costs)})")
    weights = None
    if damage == "per_task":
        if not profile.per_task:
            raise ProfileError("the profile has no per-task damage curves")
        tasks = sorted(profile.per_task)
        curves = np.stack([fitted_curve(profile.per_task[t], damage_fit, profile.grid) for t in tasks])  # [T, L, G]
        weights, solver_aggregate = _task_weights(tasks, aggregate or "mean", task_weights)
    elif damage in profile.damage:
        if aggregate is not None or task_weights is not None:
            raise ValueError(f"--aggregate and task weights apply to --damage per_task, not to {damage!r}")
        curves, solver_aggregate = fitted_curve(profile.damage[damage], damage_fit, profile.grid), "sum"
    else:
        raise ProfileError(f"the profile has no {damage!r} damage curve (it has {sorted(profile.damage)} and per_task)")
    if interactions is None and use_interactions and damage == "kl":
        interactions = fitted_interactions(profile, damage_fit)
    return AllocationProblem(
        n_tokens=profile.n_visual_tokens, grid=profile.grid, damage=curves, budget=budget,
        costs=dict(profile.costs), budget_kind=budget_kind, aggregate=solver_aggregate, task_weights=weights,
        constraints=tuple(constraints), extra_costs=tuple(extra_costs),
        extra_weights=tuple(extra_weights) if extra_weights is not None else None,
        interactions=interactions,
    )


def _task_weights(
    tasks: Sequence[str], aggregate: str, task_weights: Mapping[str, float] | None
) -> tuple[np.ndarray, str]:
    """``([T] weights, the solver's aggregate)`` for one of :data:`AGGREGATES`."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"--aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    if (aggregate == "weighted") != (task_weights is not None):
        raise ValueError("--aggregate weighted needs task weights (--task-weights task=w,...), and only it takes them")
    if aggregate == "mean":
        return np.full(len(tasks), 1.0 / len(tasks)), "sum"
    if aggregate == "max":
        return np.ones(len(tasks)), "max_task"
    unknown, missing = sorted(set(task_weights) - set(tasks)), sorted(set(tasks) - set(task_weights))
    if unknown or missing:
        raise ValueError(f"task weights must name every task of the profile {list(tasks)}: unknown {unknown}, "
                         f"missing {missing}")
    return np.array([float(task_weights[t]) for t in tasks]), "sum"


@dataclass
class SolveResult:
    profile: Profile
    problem: AllocationProblem
    solution: Solution
    recipe: Recipe


def recipe_from_solution(profile: Profile, problem: AllocationProblem, solution: Solution,
                         damage_fit: str = DEFAULT_DAMAGE_FIT) -> Recipe:
    """The recipe of a solved problem: the solution's schedule with the profile's scoring (:attr:`Profile.scoring`:
    its in-LLM ``score_weights``, its ``pre_llm_weights`` as the ``pre_llm`` stage's when it has them, its selection
    rule and merged tokens) and quantization
    (the default config when the profile records none); ``versions`` are those of the solving environment. The
    ``solver`` record names the ``damage_fit`` the problem was built with."""
    return Recipe(
        model_id=profile.model_id, model_hash=profile.model_hash, n_layers=profile.n_layers,
        n_visual_tokens=profile.n_visual_tokens, schedule=solution.schedule,
        scoring=profile.scoring, quant=dict(profile.quant) or QuantConfig().to_dict(),
        budget_kind=problem.budget_kind, budget=problem.budget,
        solver={"name": solution.solver, "status": solution.status, "objective": solution.objective,
                "lower_bound": solution.lower_bound, "gap": solution.gap, "seconds": round(solution.solve_time, 4),
                "cost_ratios": solution.cost_ratios, "damage_fit": damage_fit},
        data_version=profile.data_version, versions=solver_versions(), quota_version=__version__,
    )


def solver_versions() -> dict[str, str]:
    """Versions of the libraries of the solving environment (recorded in the recipe)."""
    versions = {}
    for name in ("numpy", "ortools", "cvxpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = ""
    return versions


def solve(
    profile: Profile | str | Path | None = None,
    budget: float = 0.3,
    budget_kind: str = "tokens",
    solver: str = "auto",
    damage: str = "kl",
    time_limit: float | None = 30.0,
    accept_gap: float | None = None,
    **problem_kw: Any,
) -> SolveResult:
    """Solve the allocation problem of ``profile`` and make its recipe (the Python form of ``quota solve``).

    - ``profile``: a :class:`Profile`, a path, or None for the shipped testbed profile.
    - ``budget``, ``budget_kind``, ``damage``: as :func:`build_problem` (0.3 of the all-tokens ``tokens`` cost,
      KL damage by default).
    - ``solver``: one of :data:`quota.solvers.SOLVERS`; exact: ``auto`` (default: the DP whenever the problem
      fits it, else CP-SAT), ``dp``, ``cpsat``, ``mip``; heuristics: ``relax``, ``greedy``.
    - ``time_limit``: seconds, positive and finite, or None for no limit.
    - ``accept_gap``: the largest relative gap accepted for a schedule not proven optimal (see
      :func:`quota.solvers.solve_problem`); by default only proven optima of exact solvers are returned.
    - ``problem_kw``: the rest of :func:`build_problem`'s keywords: ``aggregate``, ``task_weights`` (per-task
      damage), ``constraints`` (``MinKeepBefore``, ``FixedLayer``, ``CostCap``, ``LinearConstraint``),
      ``extra_costs`` and ``extra_weights`` (``[L, G]`` terms added to the objective), ``damage_fit``
      (``monotone`` by default, or ``raw``).

    Raises ``ValueError``/``ProfileError`` for bad input and a :class:`quota.solvers.SolverError` when no
    acceptable schedule is found (infeasible, time limit, gap).
    """
    if not isinstance(profile, Profile):
        profile = Profile.load(profile if profile is not None else shipped_profile_path())
    problem = build_problem(profile, budget, budget_kind, damage, **problem_kw)
    solution = solve_problem(problem, solver, time_limit, accept_gap=accept_gap)
    recipe = recipe_from_solution(profile, problem, solution, problem_kw.get("damage_fit", DEFAULT_DAMAGE_FIT))
    return SolveResult(profile, problem, solution, recipe)


def summarize(result: SolveResult) -> dict[str, Any]:
    """JSON-friendly summary: schedule, per-layer cost and predicted damage, totals against all tokens."""
    p, s, prob = result.profile, result.solution, result.problem
    idx = list(s.indices)
    damage = prob.damage if prob.damage.ndim == 2 else np.tensordot(prob.task_weights, prob.damage, 1)  # [L, G]
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
