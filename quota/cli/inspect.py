"""``quota inspect FILE``: a profile or a recipe in readable form."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show a profile or a recipe in readable form")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the validated document as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from quota.cli.render import bar
    from quota.profiling.profile import Profile, is_profile
    from quota.recipe import Recipe, is_recipe
    from quota.versioned import read_json, type_of

    path = Path(args.file)
    data = read_json(path, "file")
    console = Console()
    if is_recipe(data):
        r = Recipe.load(path)
        if args.json:
            print(json.dumps(r.to_dict(), indent=2))
            return 0
        console.print(f"[bold]recipe[/bold] for {r.model_id} ({r.model_hash[:12]}), {r.n_layers} layers, "
                      f"N={r.n_visual_tokens}; budget {r.budget:.3g} ({r.budget_kind}); "
                      f"{r.equivalent_tokens:.1f} equivalent tokens; quant {r.quant_config.short_name() if r.quant else 'none (full precision)'}")
        console.print(f"solver {r.solver.get('name')} {r.solver.get('status')} gap {r.solver.get('gap')} "
                      f"in {r.solver.get('seconds')}s; scoring {r.scoring.to_dict()}; data {r.data_version}")
        table = Table()
        table.add_column("layer", justify="right")
        table.add_column("tokens", justify="right")
        table.add_column("")
        for i, k in enumerate(r.schedule):
            table.add_row(str(i), str(k), f"[cyan]{bar(k, r.n_visual_tokens)}[/cyan]")
        console.print(table)
        return 0
    if is_profile(data):
        p = Profile.load(path)
        if args.json:
            print(json.dumps(p.to_dict(), indent=2))
            return 0
        console.print(f"[bold]profile[/bold] of {p.model_id} ({p.model_hash[:12]}) on {p.device or '?'}; "
                      f"{p.n_layers} layers, N={p.n_visual_tokens}, {len(p.grid)} candidates "
                      f"({p.grid[0]}..{p.grid[-1]}); data {p.data_version}; versions {p.versions}")
        console.print(f"damage curves {sorted(p.damage)} + per task {sorted(p.per_task)}; costs {sorted(p.costs)}; "
                      f"score weights {p.score_weights}")
        kind = "kl" if "kl" in p.damage else sorted(p.damage)[0]
        marks = [g for g in range(len(p.grid)) if g in (0, len(p.grid) // 4, len(p.grid) // 2, 3 * len(p.grid) // 4)]
        table = Table(title=f"damage ({kind}) by layer and keep count")
        table.add_column("layer", justify="right")
        for g in marks:
            table.add_column(f"k={p.grid[g]}", justify="right")
        for layer in range(p.n_layers):
            table.add_row(str(layer), *[f"{p.damage[kind][layer, g]:.4f}" for g in marks])
        console.print(table)
        return 0
    raise ValueError(f"{path}: type {type_of(data)!r} is neither a quota profile nor a quota recipe")
