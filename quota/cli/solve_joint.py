"""``quota solve --profile PRECISION_PROFILE``: the joint program (each layer's precision and keep count), one
budget (a recipe) or a sweep (a JSON, a markdown table and, with matplotlib, a PNG of predicted points)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _budgets(args: argparse.Namespace) -> dict[str, float]:
    from quota.profiling.precision_problem import joint_kind

    budgets = {joint_kind(args.budget_kind): args.budget if args.budget is not None else 0.3}
    for kind, value in args.add_budget:
        budgets[joint_kind(kind)] = value
    return budgets


def run_joint(args: argparse.Namespace, pp) -> int:
    """Solve the joint program of the precision profile ``pp`` as the arguments say; print and write."""
    from quota.cli.solve import JOINT_SOLVER_NAMES
    from quota.profiling.precision_problem import joint_kind, solve_precision, summarize_joint
    from quota.profiling.precision_run import parse_precisions

    if args.solver not in JOINT_SOLVER_NAMES:
        raise ValueError(f"--solver {args.solver}: the joint program is solved exactly by {', '.join(JOINT_SOLVER_NAMES)}")
    for flag, on in (("--keep-tokens", args.keep_tokens is not None), ("--refine", args.refine is not None),
                     ("--aggregate", args.aggregate), ("--task-weights", args.task_weights)):
        if on:
            raise ValueError(f"{flag} is for a token profile; a precision profile solves the joint program")
    if args.damage != "kl":
        raise ValueError(f"--damage {args.damage}: the joint program minimizes KL (the precision table is KL)")
    precisions = parse_precisions(args.precisions) if args.precisions else None
    caps = {joint_kind(kind): value for kind, value in args.cap}
    if args.sweep:
        return _sweep(args, pp, precisions)
    result = solve_precision(pp, _budgets(args), precisions, args.solver, args.time_limit, args.accept_gap, caps=caps,
                             damage_fit=args.damage_fit)
    path = result.recipe.save(args.output or "recipe.json")
    summary = summarize_joint(result)
    if args.json:
        print(json.dumps({**summary, "recipe_path": str(path), "recipe": result.recipe.to_dict()}, indent=2))
        return 0
    _print(summary, path, args.profile)
    return 0


def _print(summary: dict, path: Path, profile_path: str) -> None:
    ratios = ", ".join(f"{k} {v:.3f}" for k, v in summary["cost_ratios"].items())
    print(f"precision profile {Path(profile_path).name}: {summary['model_id']}, latency "
          f"{summary['latency_method']} on {summary['device']}")
    print(f"budgets {summary['budgets']} (fractions of all-{summary['reference']} all-tokens); solver "
          f"{summary['solver']} {summary['status']} in {summary['seconds']:.2f} s")
    print(f"predicted damage {summary['objective']:.4f} (precision {summary['precision_damage']:.4f} + tokens "
          f"{summary['token_damage']:.4f}); equivalent tokens {summary['equivalent_tokens']:.1f} of "
          f"{summary['n_visual_tokens']}")
    print(f"costs against all-{summary['reference']} all-tokens: {ratios}")
    print("layer  precision  tokens")
    for row in summary["per_layer"]:
        print(f"{row['layer']:>5}  {row['precision']:<9}  {row['tokens']:>6}")
    print(f"recipe written to {path} (version 3: each layer's precision and KV bits); next: quota apply {path}")


def _sweep(args: argparse.Namespace, pp, precisions) -> int:
    from quota.cli.solve import parse_sweep
    from quota.profiling.precision_sweep import markdown_table, precision_sweep, write_sweep

    if args.add_budget or args.cap:
        raise ValueError("--sweep: the joint sweep varies one budget (--budget-kind); leave --add-budget/--cap out")
    sweep = precision_sweep(pp, parse_sweep(args.sweep), args.budget_kind, precisions, args.token_budget,
                            args.solver, args.time_limit, args.damage_fit)
    png = Path(args.output or "pareto.png")
    written = write_sweep(sweep, png.with_suffix(".json"), png)
    if args.json:
        print(json.dumps({**sweep, "written": written}, indent=2))
        return 0
    print(markdown_table(sweep))
    if "png" not in written:
        print("(no PNG: matplotlib is not installed; pip install 'quota[plot]')", file=sys.stderr)
    print(f"written: {', '.join(written.values())} (every point predicted; measured points come from a GPU run)")
    return 0
