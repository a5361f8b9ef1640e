"""``quota solve``: a per-layer visual-token schedule under a budget, from a profile, written as a recipe."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

BUDGET_KINDS = ("tokens", "flops", "kv", "latency")  # quota.schedule.BUDGET_KINDS (checked by a test; kept
# literal here so that `quota --help` loads nothing but the standard library)
SOLVER_NAMES = ("auto", "dp", "cpsat", "mip", "relax", "greedy")  # quota.solvers.SOLVERS (checked by a test)
JOINT_ONLY_KINDS = ("ttft", "decode", "weight_bytes", "kv_bytes")  # budget kinds of a precision profile only
JOINT_SOLVER_NAMES = ("auto", "dp", "cpsat")  # quota.solvers.joint_solve.JOINT_SOLVERS

DAMAGE_FITS = ("monotone", "raw")  # quota.profiling.damage_fit.DAMAGE_FITS (checked by a test)
DAMAGE_LINE = (
    "predicted damage: the profile's estimate of the mean KL divergence (nats, summed over the answer tokens) "
    "between the pruned and the all-tokens model, as a sum of per-layer terms fitted to the measured damages "
    "(each term >= 0 and non-increasing in the keep count; --damage-fit raw takes the measured differences, "
    "which can be negative where two measurements agree within noise)"
)


def positive_seconds(text: str) -> float:
    """``--time-limit``: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got {text!r}")
    return value


def non_negative_gap(text: str) -> float:
    """``--accept-gap``: a relative gap >= 0 (``inf`` accepts any schedule)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (or inf), got {text!r}")
    return value


def task_weight_pairs(text: str) -> dict[str, float]:
    """``--task-weights counting=2,reading=1,...`` -> ``{"counting": 2.0, ...}``."""
    out = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes task=weight pairs, got {part!r}") from None
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"takes task=weight pairs, got {part!r}")
    return out


def kind_value_pair(text: str) -> tuple[str, float]:
    """``--add-budget decode=0.6`` / ``--cap weight_bytes=5e7`` -> ``("decode", 0.6)``."""
    name, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes KIND=NUMBER, got {text!r}") from None
    if not sep or not name.strip() or not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"takes KIND=NUMBER with a positive number, got {text!r}")
    return name.strip(), number


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "solve", help="choose per-layer visual-token counts under a budget and write a recipe",
        description="Choose how many visual tokens each decoder layer keeps, minimizing the profile's predicted "
                    "damage under a budget, and write the schedule as a recipe. Exact solvers prove optimality: "
                    "auto, dp, cpsat, mip. Heuristics: relax (LP bound and rounding), greedy (no bound).",
    )
    p.add_argument("--budget", type=float, default=None,
                   help="fraction in (0, 1] of the all-tokens cost of --budget-kind (default 0.3)")
    p.add_argument("--keep-tokens", type=float, default=None,
                   help="the budget as equivalent visual tokens per layer (mean over layers of the tokens kept)")
    p.add_argument("--budget-kind", choices=BUDGET_KINDS + JOINT_ONLY_KINDS, default="tokens",
                   help="what the budget bounds: tokens (equivalent visual tokens), flops (prefill FLOPs of the "
                        "visual tokens), kv (KV-cache bytes), latency (measured on the profiled GPU; with a precision "
                        "profile: TTFT); with a precision profile also ttft, decode (time per token), weight_bytes, "
                        "kv_bytes, as fractions of the all-bf16 all-tokens cost; default tokens")
    p.add_argument("--precisions", default=None, metavar="P1,P2,...",
                   help="solve each layer's precision with its keep count (the joint program), among these options "
                        "(e.g. w4a4,w4a8,fp8,bf16); needs a precision profile (quota profile --precisions); default "
                        "with a precision profile: every profiled option")
    p.add_argument("--add-budget", type=kind_value_pair, action="append", default=[], metavar="KIND=FRACTION",
                   help="joint program: one more budget (e.g. decode=0.6), repeatable")
    p.add_argument("--cap", type=kind_value_pair, action="append", default=[], metavar="KIND=VALUE",
                   help="joint program: an absolute cap in the kind's units (seconds, bytes, tokens), repeatable")
    p.add_argument("--token-budget", type=float, default=0.3,
                   help="joint --sweep: the equivalent-token budget of the uniform + token-recipe points (default 0.3)")
    p.add_argument("--profile", default=None, help="profile JSON file (default: the shipped testbed profile)")
    p.add_argument("--solver", choices=SOLVER_NAMES, default="auto",
                   help="auto (default: exact DP when the problem fits it, else CP-SAT), dp, cpsat, mip (exact); "
                        "relax, greedy (heuristics)")
    p.add_argument("--damage", default="kl",
                   help="damage curve to minimize: kl (default), task_loss, kl_teacher (profiles measured with a "
                        "full-precision teacher: KL to its answers, without the low-bit re-roll floor), or per_task "
                        "(with --aggregate)")
    p.add_argument("--damage-fit", choices=DAMAGE_FITS, default=DAMAGE_FITS[0],
                   help="how the profile's curves are read: monotone (default; per-layer terms fitted to be >= 0 "
                        "and non-increasing in the keep count, interaction terms recomputed against the fit) or "
                        "raw (the measured differences as they are)")
    p.add_argument("--aggregate", choices=("mean", "max", "weighted"), default=None,
                   help="with --damage per_task: mean over tasks (default), the worst task, or weighted "
                        "(--task-weights)")
    p.add_argument("--task-weights", type=task_weight_pairs, default=None, metavar="TASK=W,...",
                   help="with --aggregate weighted: one weight per task of the profile")
    p.add_argument("--time-limit", type=positive_seconds, default=30.0,
                   help="seconds the solver may run, positive (default 30)")
    p.add_argument("--accept-gap", type=non_negative_gap, default=None, metavar="G",
                   help="write a schedule not proven optimal when its relative gap to the lower bound is at most "
                        "G (e.g. 0.01); by default only proven optima of the exact solvers are written")
    p.add_argument("--sweep", default=None, metavar="START:STOP:STEP",
                   help="solve a range of budgets (a Pareto table; writes no recipe)")
    p.add_argument("-o", "--output", default=None,
                   help="recipe path (default recipe.json; with --sweep, the PNG plot path, default pareto.png)")
    p.add_argument("--refine", type=int, default=None, metavar="K",
                   help="measured refinement (testbed profiles): take the K best predicted schedules, measure each "
                        "on held-out calibration questions with the quantized testbed, keep the best measured; the "
                        "recipe records every candidate's predicted and measured damage (needs the testbed's model)")
    p.add_argument("--refine-questions", type=int, default=64, metavar="N",
                   help="--refine: held-out calibration questions to measure on (default 64)")
    p.add_argument("--refine-anchors", type=int, default=None, metavar="A",
                   help="--refine: also measure the A best stage-wise schedules of the budget (prune once, maybe drop "
                        "every token late: the shapes of FastV, VisionZip, DivPrune), default 4; 0 measures only the "
                        "solver's K best")
    p.add_argument("--device", default=None, help="--refine: cpu, cuda or cuda:N (default: cuda when there is one)")
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
    from quota.allocate import budget_from_keep_tokens, shipped_profile_path, solve, summarize
    from quota.cli import render
    from quota.profiling.profile import Profile
    from quota.schedule import check_budget
    from quota.solvers import SolverError

    if args.budget is not None and args.keep_tokens is not None:
        raise ValueError("give --budget or --keep-tokens, not both")
    if args.profile is not None and Path(args.profile).is_dir():
        raise ValueError(f"--profile {args.profile} is a directory; give a profile JSON file")
    if args.profile is not None:
        from quota.profiling.precision_profile import PrecisionProfile, load_any

        loaded = load_any(args.profile)
        if isinstance(loaded, PrecisionProfile):
            from quota.cli.solve_joint import run_joint

            return run_joint(args, loaded)
    joint_flags = [f for f, on in (("--precisions", args.precisions), ("--add-budget", args.add_budget),
                                   ("--cap", args.cap), ("--budget-kind " + args.budget_kind,
                                                         args.budget_kind in JOINT_ONLY_KINDS)) if on]
    if joint_flags:
        where = f"{args.profile} is a token profile" if args.profile else "the shipped profile is a token profile"
        raise ValueError(f"{', '.join(joint_flags)}: the joint program needs a precision profile, and {where} "
                         f"without a precision table; measure one with quota profile --precisions w4a4,w4a8,fp8,bf16 "
                         f"-o pp.json and pass --profile pp.json")
    profile_path = args.profile or shipped_profile_path()
    profile = Profile.load(profile_path)
    options = dict(solver=args.solver, damage=args.damage, time_limit=args.time_limit, accept_gap=args.accept_gap,
                   aggregate=args.aggregate, task_weights=args.task_weights, damage_fit=args.damage_fit)
    if getattr(profile, "interactions", None) is not None and args.damage == "kl" and args.solver in ("relax", "greedy"):
        import sys  # the heuristics cannot express pairwise terms: solve the additive model, and say so

        print(f"quota solve: note: --solver {args.solver} ignores the profile's interaction terms (dp, cpsat, mip and "
              f"auto use them)", file=sys.stderr)
        options["use_interactions"] = False
    if args.sweep:
        rows = []
        for budget in parse_sweep(args.sweep):
            try:
                rows.append(summarize(solve(profile, budget, args.budget_kind, **options)))
            except (SolverError, ValueError) as err:
                err.args = (f"--sweep at budget {budget:g}: {err}",)  # the same error, naming --sweep
                raise
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            render.print_sweep(rows, args.output or "pareto.png")
        return 0
    if args.keep_tokens is not None:
        budget = budget_from_keep_tokens(profile, args.keep_tokens)
    else:
        budget = check_budget(args.budget if args.budget is not None else 0.3, "--budget")
    if args.refine is not None:
        return run_refine(args, profile_path, profile, budget, options)
    result = solve(profile, budget, args.budget_kind, **options)
    path = result.recipe.save(args.output or "recipe.json")
    summary = summarize(result)
    if args.json:
        print(json.dumps({**summary, "recipe_path": str(path), "recipe": result.recipe.to_dict()}, indent=2))
        return 0
    print(f"profile {Path(profile_path).name}: {profile.model_id}, measured on {profile.device or 'an unrecorded device'}")
    if not str(profile.data_version).startswith("jsonl:"):  # the testbed (or a synthetic profile)
        next_step = (f"next: quota apply {path} --questions 5 (answers test questions with the recipe; on a GPU, "
                     f"quota eval --recipe {path} --limit 200 scores it)")
    else:
        next_step = (f"next: quota eval --model DIR --data test.jsonl --calibration-data calib.jsonl --recipe {path} "
                     f"--references (DIR: the {profile.model_id} checkpoint folder), or quota quantize --model DIR "
                     f"--recipe {path} --out QDIR")
    render.print_schedule(summary, path, notes=(DAMAGE_LINE, next_step))
    return 0


def run_refine(args: argparse.Namespace, profile_path, profile, budget: float, options: dict) -> int:
    """``quota solve --refine K``: :func:`quota.refine.refine_testbed`, then the candidates as a table."""
    if args.refine < 1:
        raise ValueError(f"--refine needs at least 1 candidate schedule, got {args.refine}")
    if args.refine_questions < 1:
        raise ValueError(f"--refine-questions must be at least 1, got {args.refine_questions}")
    if args.refine_anchors is not None and args.refine_anchors < 0:
        raise ValueError(f"--refine-anchors must be 0 or more stage-wise schedules, got {args.refine_anchors}")
    if str(profile.data_version).startswith("jsonl:"):
        raise ValueError("--refine runs on the testbed; for a checkpoint folder call quota.refine.refine with a "
                         "DamageMeter on your held-out records")
    if args.sweep:
        raise ValueError("--refine and --sweep: refine one budget at a time")
    if args.solver not in ("auto", "dp", "cpsat"):
        raise ValueError(f"--refine enumerates schedules with auto, dp or cpsat, not --solver {args.solver}")
    from quota.refine import refine_testbed

    kw = {k: v for k, v in options.items() if k in ("aggregate", "task_weights", "damage_fit") and v is not None}
    if args.refine_anchors is not None:
        kw["anchors"] = args.refine_anchors
    refined = refine_testbed(profile_path, args.refine, budget, args.refine_questions, args.device,
                             budget_kind=args.budget_kind, damage=args.damage, solver=args.solver,
                             time_limit=args.time_limit, **kw)
    path = refined.recipe.save(args.output or "recipe.json")
    if args.json:
        print(json.dumps({"recipe_path": str(path), "chosen": refined.chosen, "candidates": refined.candidates},
                         indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(refined.candidates)} candidate schedules, measured on "
                        f"{args.refine_questions} held-out calibration questions")
    for col in ("rank", "origin", "equivalent tokens", "predicted", "measured", ""):
        table.add_column(col, justify="right")
    for c in refined.candidates:
        table.add_row(str(c["rank"]), c["origin"], f"{sum(c['schedule']) / len(c['schedule']):.1f}",
                      f"{c['predicted']:.4f}", f"{c['measured']:.4f}", "chosen" if c["rank"] == refined.chosen else "")
    Console().print(table)
    print(f"recipe written to {path}: schedule {list(refined.recipe.schedule)}")
    return 0
