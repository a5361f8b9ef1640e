"""``quota solve``: a per-layer visual-token schedule under a budget, from a profile, written as a recipe."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("solve", help="choose per-layer visual-token counts under a budget and write a recipe")
    p.add_argument("--budget", type=float, default=None, help="fraction of the all-tokens cost in (0, 1] (default 0.3)")
    p.add_argument("--keep-tokens", type=float, default=None, help="budget as equivalent visual tokens per layer")
    p.add_argument("--budget-kind", choices=("tokens", "flops", "kv", "latency"), default="tokens")
    p.add_argument("--profile", default=None, help="profile JSON (default: the shipped testbed profile)")
    p.add_argument("--solver", choices=("cpsat", "mip", "relax", "dp", "greedy"), default="cpsat")
    p.add_argument("--damage", default="kl", help="damage curve: kl, task_loss or per_task (default kl)")
    p.add_argument("--time-limit", type=float, default=30.0)
    p.add_argument("--sweep", default=None, metavar="START:STOP:STEP", help="solve a range of budgets (Pareto table)")
    p.add_argument("-o", "--output", default=None,
                   help="recipe path (default recipe.json; with --sweep, the PNG plot path, default pareto.png)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def parse_sweep(text: str) -> list[float]:
    """``"0.1:0.9:0.1"`` -> ``[0.1, 0.2, ..., 0.9]``."""
    try:
        start, stop, step = (float(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"--sweep must be START:STOP:STEP, e.g. 0.1:0.9:0.1, got {text!r}") from None
    if step <= 0 or start > stop:
        raise ValueError(f"--sweep needs START <= STOP and STEP > 0, got {text!r}")
    n = int(round((stop - start) / step)) + 1
    return [round(start + i * step, 10) for i in range(n)]


def run(args: argparse.Namespace) -> int:
    from quota.cli import render
    from quota.profiling.profile import Profile
    from quota.allocate import budget_from_keep_tokens, shipped_profile_path, solve, summarize
    from quota.schedule import check_budget

    if args.budget is not None and args.keep_tokens is not None:
        raise ValueError("give --budget or --keep-tokens, not both")
    profile_path = args.profile or shipped_profile_path()
    profile = Profile.load(profile_path)
    if not args.json:
        print(f"profile {Path(profile_path).name}: {profile.model_id}, measured on {profile.device or 'an unrecorded device'}")
    if args.sweep:
        rows = [summarize(solve(profile, b, args.budget_kind, args.solver, args.damage, args.time_limit))
                for b in parse_sweep(args.sweep)]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            render.print_sweep(rows, args.output or "pareto.png")
        return 0
    if args.keep_tokens is not None:
        budget = budget_from_keep_tokens(profile, args.keep_tokens)
    else:
        budget = check_budget(args.budget if args.budget is not None else 0.3)
    result = solve(profile, budget, args.budget_kind, args.solver, args.damage, args.time_limit)
    path = result.recipe.save(args.output or "recipe.json")
    summary = summarize(result)
    if args.json:
        print(json.dumps({**summary, "recipe_path": str(path), "recipe": result.recipe.to_dict()}, indent=2))
    else:
        render.print_schedule(summary, path)
    return 0
