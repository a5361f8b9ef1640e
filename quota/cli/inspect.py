"""``quota inspect PATH``: a profile or a recipe in readable form, or what quota sees in a checkpoint folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show a profile, a recipe or a checkpoint folder in readable form")
    p.add_argument("file", metavar="PATH", help="a profile or recipe JSON, or a checkpoint folder (--model DIR)")
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
    if path.is_dir():
        return inspect_folder(path, args.json)
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
                      f"score weights {p.score_weights}"
                      + (f", before layer 0 {p.pre_llm_weights}" if p.pre_llm_weights else "")
                      + f"; selection {p.selection}, merging {p.merge} ({p.merge_rule})")
        kind = "kl" if "kl" in p.damage else sorted(p.damage)[0]
        marks = [g for g in range(len(p.grid)) if g in (0, len(p.grid) // 4, len(p.grid) // 2, 3 * len(p.grid) // 4)]
        table = Table(title=f"damage ({kind}) by layer and keep count")
        table.add_column("layer", justify="right")
        for g in marks:
            table.add_column(f"k={p.grid[g]}", justify="right")
        for layer in range(p.n_layers):
            table.add_row(str(layer), *[f"{p.damage[kind][layer, g]:.4f}" for g in marks])
        console.print(table)
        cut = smallest_cut_line(p)
        if cut:
            console.print(cut)
        check = additivity_line(p)
        if check:
            console.print(check)
        return 0
    raise ValueError(f"{path}: type {type_of(data)!r} is neither a quota profile nor a quota recipe")


def smallest_cut_line(p) -> str:
    """The damage of the smallest cut (pruning from layer ``l`` to the grid's largest count below N, the later
    layers keeping it) at four layers, for each of the ``kl``, ``task_loss`` and ``kl_teacher`` curves the profile
    has, as one line; empty for a grid without such a count. Under low-bit operators the KL can sit well above the answer loss
    there: any change of input re-rolls the quantized model's own answers (docs/results/joint_h100)."""
    from quota.profiling.damage_fit import from_layer_damage

    if len(p.grid) < 2 or p.grid[-1] != p.n_visual_tokens:
        return ""
    g = len(p.grid) - 2
    layers = sorted({0, p.n_layers // 4, p.n_layers // 2, 3 * p.n_layers // 4})
    parts = [f"{kind} " + " / ".join(f"{from_layer_damage(p.damage[kind])[layer, g]:.2f}" for layer in layers)
             for kind in ("kl", "task_loss", "kl_teacher") if kind in p.damage]
    return (f"smallest cut (keep {p.grid[g]} of {p.n_visual_tokens}) from layers {' / '.join(map(str, layers))}: "
            + ", ".join(parts))


def additivity_line(p) -> str:
    """The profile's stored additivity check (``extra.additivity``) as one line: how the measured curves and the
    solver's monotone fit of them rank the same measured schedules; empty without a stored check."""
    from quota.profiling.additivity import fitted_ranking

    check = p.extra.get("additivity")
    if not isinstance(check, dict) or not check.get("schedules") or check.get("damage") not in p.damage:
        return ""
    line = (f"additivity check ({len(check['schedules'])} measured schedules, {check['damage']}): Spearman "
            f"{check['spearman']:.3f} as measured")
    if check.get("spearman_with_interactions") is not None:
        line += f" ({check['spearman_with_interactions']:.3f} with interaction terms)"
    fitted = fitted_ranking(p, check["schedules"], check["measured"], check["damage"])
    line += f", {fitted['spearman']:.3f} under the solver's monotone fit"
    if fitted.get("spearman_with_interactions") is not None:
        line += f" ({fitted['spearman_with_interactions']:.3f} with interaction terms)"
    for name, other in (check.get("others") or {}).items():
        if name in p.damage and isinstance(other, dict):
            line += f"; {name}: {other['spearman']:.3f} as measured, {other['fitted']:.3f} under the fit"
    return line


def inspect_folder(folder: Path, as_json: bool) -> int:
    """What quota reads from a checkpoint folder without loading its weights: the class and family, the language
    model's shape, the visual tokens of an image (fixed, or for dynamic resolution at a few image sizes), the
    processor files and the checkpoint's hash. An unsupported folder is one error line (exit status 2)."""
    from transformers import AutoConfig

    from quota.models.checkpoint import check_processor_files, checkpoint_hash, weight_files
    from quota.models.registry import checkpoint_class
    from quota.models.visual_tokens import is_dynamic, visual_tokens_of

    name = checkpoint_class(folder)
    check_processor_files(folder)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    text = getattr(config, "text_config", config)
    info = {"folder": str(folder), "class": name, "layers": text.num_hidden_layers, "hidden_size": text.hidden_size,
            "heads": text.num_attention_heads, "kv_heads": getattr(text, "num_key_value_heads", None),
            "weight_files": len(weight_files(folder)), "weight_bytes": sum(p.stat().st_size for p in weight_files(folder)),
            "model_hash": checkpoint_hash(folder)}
    if is_dynamic(config):
        from transformers import AutoImageProcessor

        image = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        info["visual_tokens"] = {f"{h}x{w}": visual_tokens_of(config, image, (h, w))
                                 for h, w in ((336, 336), (448, 672), (672, 448), (1008, 1008))}
    else:
        info["visual_tokens"] = visual_tokens_of(config)
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    n = info["visual_tokens"]
    tokens = (f"N = {n} visual tokens per image" if isinstance(n, int) else
              "dynamic resolution, N per image (height x width): " + ", ".join(f"{k} -> {v}" for k, v in n.items()))
    print(f"{folder}: {name}, {info['layers']} decoder layers (width {info['hidden_size']}, {info['heads']} heads, "
          f"{info['kv_heads']} KV heads); {tokens}; {info['weight_files']} weight files, "
          f"{info['weight_bytes'] / 2**30:.2f} GiB; hash {info['model_hash'][:12]}")
    return 0
