"""Measured refinement: the solver proposes its ``k`` best distinct schedules, each is measured on held-out
calibration questions, and the recipe is the best one measured.

The profile's damage model ranks schedules only loosely (an additive sum of per-layer terms), so the schedule it
predicts best is not always the one that damages least. :func:`refine` takes the ``k`` schedules of least predicted
damage (:func:`quota.solvers.solve_k_best`, exact) and the ``anchors`` best stage-wise schedules of the same budget
(:func:`quota.solvers.stagewise.best_stagewise`: prune once, maybe drop every token late, the shapes of FastV,
VisionZip or DivPrune), measures each with a :class:`~quota.profiling.sensitivity.DamageMeter` on questions the
profile never saw, and returns the recipe of the one with the least measured damage (ties: the better predicted).

The stage-wise candidates are there because the additive model is biased towards schedules of many steps: on the
H100 joint profile of the testbed, the k best schedules measured 0.26-0.88 nats above their prediction, while a
prune-from-one-layer schedule's prediction is the profile's own measurement of it. The measured quantity is the one
the problem minimizes: ``kl``, ``task_loss``, ``kl_teacher`` (the meter then needs a teacher), or for ``per_task``
the per-task KL aggregated as the problem aggregates it (mean, max or weighted). The recipe's ``solver`` record gains ``refinement``: every candidate with its origin (``k-best`` or
``stage-wise``), predicted and measured damage, the chosen index, the question count and the held-out data's name.

:func:`refine_testbed` runs it on the testbed: quantized as the profile says (through the quantized-model cache),
measured on :func:`quota.testbed.splits.refinement_split` (calibration questions of a second stream, never test
ones, never the profile's).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from quota.allocate import build_problem, recipe_from_solution
from quota.device import placement
from quota.profiling.damage_fit import DEFAULT_DAMAGE_FIT
from quota.profiling.profile import Profile
from quota.profiling.sensitivity import DamageMeter, ScheduleDamage
from quota.quant.config import QuantConfig
from quota.recipe import Recipe
from quota.solvers import AllocationProblem, Solution, solve_k_best
from quota.solvers.stagewise import best_stagewise
from quota.testbed import model as testbed
from quota.testbed.batches import make_batches
from quota.testbed.quantized import quantize_after_teacher
from quota.testbed.splits import refinement_split


DEFAULT_ANCHORS = 4
"""Stage-wise schedules measured beside the solver's k best (:func:`quota.solvers.stagewise.best_stagewise`)."""


@dataclass
class Refinement:
    """The chosen ``recipe`` (its ``solver["refinement"]`` holds the record) and every ``candidates`` entry:
    ``rank``, ``origin`` (``k-best``: the solver's rank-th best; ``stage-wise``: a stage-wise anchor), ``schedule``,
    ``predicted`` (the solver's objective), ``measured`` (the same quantity measured), ``kl``, ``task_loss``;
    ``chosen`` indexes ``candidates``."""

    recipe: Recipe
    candidates: list[dict[str, Any]]
    chosen: int


def measured_value(problem: AllocationProblem, damage: str, measured: ScheduleDamage) -> float:
    """The quantity the problem minimizes, measured: ``kl``, ``task_loss``, ``kl_teacher`` (the meter needs a
    teacher), or the per-task KL aggregated as the problem aggregates its per-task curves (``mean``, ``max`` or
    ``weighted`` by its task weights)."""
    if damage == "kl":
        return measured.kl
    if damage == "kl_teacher":
        if measured.kl_teacher is None:
            raise ValueError("damage kl_teacher is measured only by a DamageMeter with a teacher")
        return measured.kl_teacher
    if damage == "task_loss":
        return measured.task_loss
    tasks = sorted(measured.per_task)
    values = np.array([measured.per_task[t] for t in tasks])
    if problem.aggregate == "max_task":
        return float(values.max())
    weights = np.asarray(problem.task_weights, dtype=float) if problem.task_weights is not None else None
    if weights is None or len(weights) != len(values):
        return float(values.mean())
    return float(np.dot(weights, values))


def refine(profile: Profile, meter: DamageMeter, k: int = 8, budget: float = 0.3, budget_kind: str = "tokens",
           damage: str = "kl", solver: str = "auto", time_limit: float | None = 60.0, data: str = "",
           anchors: int = DEFAULT_ANCHORS, progress: Callable[[str], None] | None = None,
           **problem_kw: Any) -> Refinement:
    """The recipe of the best measured of the ``k`` best predicted schedules of ``profile``'s problem
    (``budget``, ``budget_kind``, ``damage`` and ``problem_kw`` as :func:`quota.allocate.build_problem`) and of its
    ``anchors`` best stage-wise schedules not among them.
    ``meter`` measures on held-out questions (its scoring should be the profile's); ``data`` names them in the
    record; ``progress``, when given, receives a line per measured candidate. Raises what
    :func:`quota.solvers.solve_k_best` raises (one-line :class:`quota.solvers.SolverError`)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"refinement needs k >= 1 candidate schedules, got {k!r}")
    if isinstance(anchors, bool) or not isinstance(anchors, int) or anchors < 0:
        raise ValueError(f"refinement needs anchors >= 0 stage-wise schedules, got {anchors!r}")
    problem = build_problem(profile, budget, budget_kind, damage, **problem_kw)
    solutions = list(solve_k_best(problem, k, solver, time_limit))
    origins = ["k-best"] * len(solutions)
    for idx in best_stagewise(problem, anchors, exclude=[s.indices for s in solutions]):
        solutions.append(Solution.build(problem, idx, status="feasible", solver="stagewise", solve_time=0.0,
                                        note="stage-wise anchor"))
        origins.append("stage-wise")
    candidates = []
    start = time.perf_counter()
    for rank, (solution, origin) in enumerate(zip(solutions, origins)):
        measured = meter.measure(solution.schedule, profile.n_visual_tokens)
        if progress is not None:
            progress(f"candidate {rank + 1}/{len(solutions)} ({origin}) measured after "
                     f"{time.perf_counter() - start:.0f} s")
        candidates.append({"rank": rank, "origin": origin, "schedule": [int(x) for x in solution.schedule],
                           "predicted": float(solution.objective), "measured": measured_value(problem, damage, measured),
                           "kl": measured.kl, "task_loss": measured.task_loss})
    chosen = min(range(len(candidates)), key=lambda i: (candidates[i]["measured"], candidates[i]["predicted"], i))
    recipe = recipe_from_solution(profile, problem, solutions[chosen], problem_kw.get("damage_fit", DEFAULT_DAMAGE_FIT))
    record = {"k": k, "anchors": origins.count("stage-wise"), "candidates": candidates, "chosen": chosen,
              "damage": damage, "data": data, "questions": sum(len(b.tasks) for b in meter.batches),
              "predicted_damage": candidates[chosen]["predicted"], "measured_damage": candidates[chosen]["measured"],
              "best_predicted_measured": candidates[0]["measured"]}
    recipe = dataclasses.replace(recipe, solver={**recipe.solver, "refinement": record})
    return Refinement(recipe, candidates, chosen)


def refine_testbed(profile_path: str | Path, k: int = 8, budget: float = 0.3, questions: int = 64,
                   device: str | None = None, batch_size: int = 32, **kw: Any) -> Refinement:
    """:func:`refine` on the testbed: quantized per the profile's config (calibrated as profiling was, on the
    calibration split, through the cache) and measured on ``questions`` held-out calibration questions
    (:func:`~quota.testbed.splits.refinement_split`) with the profile's score weights; a line per measured
    candidate goes to stderr."""
    profile = Profile.load(profile_path)
    device, dtype = placement(device)
    tb = testbed.load(device, dtype)
    quant = QuantConfig.from_dict(profile.quant) if profile.quant else QuantConfig(impl="auto")
    held_out = refinement_split(questions)
    batches = make_batches(tb.tokenizer, held_out, batch_size, device, dtype)
    model, teacher = quantize_after_teacher(tb.model, tb.tokenizer, quant, batches, profile.n_visual_tokens,
                                            kw.get("damage") == "kl_teacher")
    meter = DamageMeter(model, batches, profile.scoring, teacher=teacher)
    kw.setdefault("progress", lambda line: print(f"[quota refine] {line}", file=sys.stderr, flush=True))
    return refine(profile, meter, k, budget, data=f"testbed refinement_split({questions})", **kw)
