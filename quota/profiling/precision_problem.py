"""The joint program of a precision profile: each layer's precision and keep count under one or more budgets, solved
exactly (:func:`quota.solvers.joint_solve.solve_joint`), written as a version 3 recipe (``solve_precision``, the
Python form of ``quota solve --precisions``).

Objective: ``sum_l precision_damage[l, p_l] + token_damage[p_l, l, g_l]`` (KL; token curves measured or
interpolated, :func:`quota.profiling.precision.interpolate_token_curves`). Costs ``[L, P, G]`` per kind:

- ``ttft``: measured prefill seconds of one layer at option p over ``text + k`` tokens (``latency.prefill``);
- ``decode``: measured seconds of one decode step of one layer with ``text + k`` cached tokens;
- ``weight_bytes``: ``layer_weights * bytes_per_weight(p)`` (``[L, P]``);
- ``kv_bytes``: ``(text + k) * kv_bytes_per_token[p]``;
- ``flops``: the token profile's prefill FLOPs (the same for every option); ``tokens``: k.

Budgets are fractions of the all-reference (bf16), all-tokens cost of their kind; absolute caps are
``CostCap(kind, value)`` in the kind's units. Measured seconds are rounded up to a power-of-two quantum (about
1/4096 of the all-bf16 total of the kind) so that the exact DP takes them without OR-Tools; the quantum is in the
summary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from quota import __version__
from quota.profiling.damage_fit import DEFAULT_DAMAGE_FIT, fitted_curve
from quota.profiling.precision import interpolate_token_curves
from quota.profiling.precision_profile import PrecisionProfile, PrecisionProfileError
from quota.quant.config import QuantConfig
from quota.quant.precision import PRECISIONS
from quota.recipe import Recipe, ScoringSpec
from quota.schedule import equivalent_tokens
from quota.solvers.constraints import CostCap
from quota.solvers.joint_problem import JointProblem
from quota.solvers.joint_solution import JointSolution
from quota.solvers.joint_solve import solve_joint

KIND_ALIASES = {"latency": "ttft", "ttft": "ttft", "prefill": "ttft", "decode": "decode", "weight_bytes": "weight_bytes",
                "weights": "weight_bytes", "kv": "kv_bytes", "kv_bytes": "kv_bytes", "tokens": "tokens",
                "flops": "flops"}
"""Budget kind names accepted by the joint program (``latency`` is TTFT), to :data:`JOINT_COST_KINDS` names."""
TIME_KINDS = ("ttft", "decode")
TIME_UNITS = 4096


def joint_kind(name: str) -> str:
    """The joint cost kind of a budget-kind name (:data:`KIND_ALIASES`); ``ValueError`` listing them."""
    if name not in KIND_ALIASES:
        raise ValueError(f"joint budget kind {name!r}; choose one of {', '.join(KIND_ALIASES)} (latency = ttft)")
    return KIND_ALIASES[name]


def time_quantum(total: float) -> float:
    """A power of two near ``total / TIME_UNITS`` (seconds): the unit measured times are rounded up to."""
    return 2.0 ** math.floor(math.log2(total / TIME_UNITS)) if total > 0 else 1.0


def joint_costs(pp: PrecisionProfile) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """``({kind: [L, P, G]}, {time kind: quantum})`` over every profiled option (module docstring)."""
    n_l, grid = pp.n_layers, np.asarray(pp.grid, dtype=np.float64)
    n_p = len(pp.precisions)
    ref = pp.index(pp.reference)
    costs, quanta = {}, {}
    for kind, phase in (("ttft", "prefill"), ("decode", "decode")):
        per = pp.latency[phase]  # [P, G] seconds per layer
        q = time_quantum(float(per[ref, -1]) * n_l)
        quanta[kind] = q
        costs[kind] = np.broadcast_to(np.ceil(per / q) * q, (n_l, n_p, len(grid))).copy()
    bpw = np.array([PRECISIONS[n].bytes_per_weight for n in pp.precisions])  # [P]
    costs["weight_bytes"] = np.broadcast_to(pp.layer_weights * bpw, (n_l, n_p)).copy()
    tokens = pp.text_tokens + grid  # [G]
    costs["kv_bytes"] = np.broadcast_to(pp.kv_bytes_per_token[:, None] * tokens[None, :], (n_l, n_p, len(grid))).copy()
    if "flops" in pp.profile.costs:
        costs["flops"] = np.broadcast_to(pp.profile.costs["flops"][:, None, :], (n_l, n_p, len(grid))).copy()
    return costs, quanta


def build_joint_problem(
    pp: PrecisionProfile, budgets: Mapping[str, float] | None = None, precisions: Sequence[str] | None = None,
    caps: Mapping[str, float] | None = None, constraints: Sequence[Any] = (), monotone: bool = True,
    damage_fit: str = DEFAULT_DAMAGE_FIT,
) -> JointProblem:
    """The :class:`JointProblem` of ``pp``: every profiled option, restricted to ``precisions`` (default: all) by
    ``AllowedPrecisions`` constraints, so the reference option stays the budgets' unit even when not allowed.

    ``budgets``: kind (:data:`KIND_ALIASES`) -> fraction of the all-reference, all-tokens cost; ``caps``: kind ->
    absolute value in its units (seconds, bytes, tokens); at least one of them. ``constraints``: more
    ``MinKeepBefore``, ``FixedLayer``, ``AllowedPrecisions`` or ``CostCap``. ``damage_fit``: how each measured
    token curve is read before the interpolation (:data:`quota.profiling.damage_fit.DAMAGE_FITS`; ``monotone``
    by default, as the token-only problem reads its curves)."""
    allowed = tuple(precisions) if precisions is not None else pp.precisions
    unknown = [n for n in allowed if n not in pp.precisions]
    if unknown:
        raise PrecisionProfileError(f"precision(s) {unknown} were not profiled (profiled: {', '.join(pp.precisions)}); "
                                    f"run quota profile --precisions with them")
    measured = {name: fitted_curve(curve, damage_fit, pp.grid) for name, curve in pp.token_damage.items()}
    curves, _ = interpolate_token_curves(pp.precision_damage, measured, pp.precisions)
    costs, _ = joint_costs(pp)
    rows = {joint_kind(k): float(v) for k, v in (budgets or {}).items()}
    extra = tuple(CostCap(joint_kind(k), float(v)) for k, v in (caps or {}).items())
    for kind in [*rows, *(c.kind for c in extra)]:
        if kind not in costs and kind != "tokens":
            raise PrecisionProfileError(f"the precision profile has no {kind!r} cost (it has {sorted(costs)})")
    problem = JointProblem(
        n_tokens=pp.n_visual_tokens, grid=pp.grid, precisions=pp.precisions, precision_damage=pp.precision_damage,
        token_damage=curves, budgets=rows, costs=costs, reference=pp.reference, monotone=monotone,
        constraints=tuple(constraints) + extra,
    )
    return problem.restrict(allowed) if set(allowed) != set(pp.precisions) else problem


@dataclass
class JointSolveResult:
    profile: PrecisionProfile
    problem: JointProblem
    solution: JointSolution
    recipe: Recipe


def _recipe_budget(problem: JointProblem, solution: JointSolution, n_visual: int) -> tuple[str, float]:
    """The recipe's single ``budget_kind``/``budget`` (the version 2 fields): the first budget when it has a
    token-profile kind, else the schedule's equivalent tokens as a ``tokens`` fraction."""
    simple = {"ttft": "latency", "kv_bytes": "kv", "tokens": "tokens", "flops": "flops"}
    for kind, fraction in problem.budgets.items():
        if kind in simple and 0 < fraction <= 1:
            return simple[kind], float(fraction)
    return "tokens", max(equivalent_tokens(solution.schedule) / n_visual, 1e-9)


def joint_recipe(pp: PrecisionProfile, problem: JointProblem, solution: JointSolution,
                 damage_fit: str = DEFAULT_DAMAGE_FIT) -> Recipe:
    """The version 3 recipe of a joint solution: its schedule, the profile's scoring, the base quant config with
    each layer's precision and KV bits (those profiled for its option); the solver record names ``damage_fit``."""
    prof = pp.profile
    weights = dict(prof.score_weights) if prof.score_weights else ScoringSpec().weights
    base = QuantConfig.from_dict(pp.extra.get("base_quant") or prof.quant or QuantConfig().to_dict())
    base = base.replace(layer_precision=None, layer_kv_bits=None)
    kv = dict(zip(pp.precisions, pp.kv_bits))
    kind, budget = _recipe_budget(problem, solution, pp.n_visual_tokens)
    return Recipe(
        model_id=prof.model_id, model_hash=prof.model_hash, n_layers=prof.n_layers,
        n_visual_tokens=prof.n_visual_tokens, schedule=solution.schedule,
        scoring=ScoringSpec(weights, stage_weights=prof.stage_weights), quant=base.to_dict(),
        budget_kind=kind, budget=budget,
        solver={"name": solution.solver, "status": solution.status, "objective": solution.objective,
                "precision_damage": solution.precision_damage, "token_damage": solution.token_damage,
                "lower_bound": solution.lower_bound, "gap": solution.gap, "seconds": round(solution.solve_time, 4),
                "cost_ratios": solution.cost_ratios, "latency_method": pp.latency.get("method", ""),
                "damage_fit": damage_fit},
        data_version=prof.data_version, quota_version=__version__,
        layer_precision=solution.precisions, layer_kv_bits=tuple(kv[p] for p in solution.precisions),
        budgets=dict(problem.budgets) or None,
    )


def solve_precision(
    profile: PrecisionProfile | str, budgets: Mapping[str, float] | None = None,
    precisions: Sequence[str] | None = None, solver: str = "auto", time_limit: float | None = 30.0,
    accept_gap: float | None = None, **problem_kw: Any,
) -> JointSolveResult:
    """Solve the joint program of a precision profile (a :class:`PrecisionProfile` or its path) and make its
    recipe. ``budgets``: e.g. ``{"latency": 0.4}`` (TTFT at most 0.4 of all-bf16 all-tokens), several kinds at
    once allowed; ``precisions``: the options layers may take (default: every profiled one); ``solver``:
    ``auto`` (the exact DP when one row fits it, else CP-SAT), ``dp`` or ``cpsat``; ``problem_kw``: ``caps``,
    ``constraints``, ``monotone``, ``damage_fit`` of :func:`build_joint_problem`. Raises a ``quota.solvers.SolverError``
    (``InfeasibleError`` names the least achievable cost against the budget) when no schedule is accepted."""
    pp = profile if isinstance(profile, PrecisionProfile) else PrecisionProfile.load(profile)
    problem = build_joint_problem(pp, budgets, precisions, **problem_kw)
    solution = solve_joint(problem, solver, time_limit, accept_gap=accept_gap)
    recipe = joint_recipe(pp, problem, solution, problem_kw.get("damage_fit", DEFAULT_DAMAGE_FIT))
    return JointSolveResult(pp, problem, solution, recipe)


def summarize_joint(result: JointSolveResult) -> dict[str, Any]:
    """JSON-friendly summary: per layer precision, tokens and damage; totals and ratios to all-bf16 all-tokens."""
    pp, s, prob = result.profile, result.solution, result.problem
    per_layer = [{"layer": layer, "precision": p, "tokens": int(k),
                  "damage": float(prob.objective_matrix[layer, prob.precisions.index(p), prob.grid.index(k)])}
                 for layer, (p, k) in enumerate(zip(s.precisions, s.schedule))]
    counts: dict[str, int] = {}
    for p in s.precisions:
        counts[p] = counts.get(p, 0) + 1
    _, quanta = joint_costs(pp)
    return {
        "model_id": pp.profile.model_id, "device": pp.device, "latency_method": pp.latency.get("method"),
        "budgets": dict(prob.budgets), "precisions_allowed": sorted({p for p in prob.precisions
                                                                     if prob.allowed[:, prob.precisions.index(p)].any()}),
        "reference": prob.reference, "equivalent_tokens": equivalent_tokens(s.schedule),
        "n_visual_tokens": pp.n_visual_tokens, "schedule": list(s.schedule), "layer_precision": list(s.precisions),
        "precision_counts": counts, "per_layer": per_layer, "objective": s.objective,
        "precision_damage": s.precision_damage, "token_damage": s.token_damage, "lower_bound": s.lower_bound,
        "status": s.status, "gap": s.gap, "solver": s.solver, "seconds": s.solve_time, "note": s.note,
        "cost_ratios": dict(s.cost_ratios), "costs": dict(s.costs), "time_quantum_s": quanta,
        "predicted": True,
    }
