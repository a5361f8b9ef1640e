"""Terminal rendering (rich) of schedules, sweeps, profiles and recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

UNITS = {"flops": ("TFLOPs", 1e12), "kv": ("KV MiB", 2**20), "latency": ("latency ms", 1e-3), "tokens": ("tokens", 1)}


def _fmt_totals(summary: dict[str, Any]) -> str:
    parts = [f"{summary['equivalent_tokens']:.1f} equivalent tokens of {summary['n_visual_tokens']}"]
    for kind in ("flops", "kv", "latency"):
        if kind in summary["totals"]:
            name, unit = UNITS[kind]
            t, f = summary["totals"][kind] / unit, summary["full"][kind] / unit
            parts.append(f"{name} {t:.4g} of {f:.4g} ({100 * t / f:.1f}%)")
    return "; ".join(parts)


def bar(value: float, full: float, width: int = 32) -> str:
    n = 0 if full <= 0 else round(width * value / full)
    return "█" * n + "·" * (width - n)


def print_schedule(
    summary: dict[str, Any], recipe_path: str | Path | None = None, console: Console | None = None,
    notes: tuple[str, ...] = (),
) -> None:
    """The schedule as a table (fits 80 columns), its totals, its objective and ``notes`` (wrapped lines)."""
    console = console or Console()
    kind = summary["budget_kind"]
    table = Table(title=f"{summary['model_id']}: budget {summary['budget']:.3g} ({kind}), solver {summary['solver']} "
                        f"({summary['status']}, {summary['seconds']:.2f}s)")
    table.add_column("layer", justify="right")
    table.add_column("tokens kept", justify="right")
    if kind != "tokens":  # a token budget's cost is the tokens kept
        table.add_column(f"cost ({UNITS.get(kind, (kind, 1))[0]})", justify="right")
    table.add_column("predicted damage", justify="right")
    table.add_column("share of N", no_wrap=True)
    n = summary["n_visual_tokens"]
    for row in summary["per_layer"]:
        cost = row["costs"].get(kind, row["tokens"]) / UNITS.get(kind, (kind, 1))[1]
        cells = [str(row["layer"]), str(row["tokens"]), *([f"{cost:.4g}"] if kind != "tokens" else []),
                 f"{row['damage']:.4f}", f"[cyan]{bar(row['tokens'], n, 16)}[/cyan]"]
        table.add_row(*cells)
    console.print(table)
    console.print(_fmt_totals(summary))
    gap = "n/a" if summary["gap"] is None else f"{100 * summary['gap']:.2f}%"
    console.print(f"predicted damage {summary['objective']:.4f} (lower bound "
                  f"{summary['lower_bound'] if summary['lower_bound'] is None else round(summary['lower_bound'], 4)}, gap {gap})")
    if recipe_path is not None:
        console.print(f"recipe written to [bold]{recipe_path}[/bold]")
    for note in notes:
        console.print(note, highlight=False)


def print_sweep(rows: list[dict[str, Any]], png_path: str | Path | None = None, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"Pareto sweep ({rows[0]['budget_kind']} budget, solver {rows[0]['solver']})")
    for col in ("budget", "equivalent tokens", "predicted damage", "status", "schedule"):
        table.add_column(col, justify="left" if col == "schedule" else "right")
    for r in rows:
        table.add_row(f"{r['budget']:.3g}", f"{r['equivalent_tokens']:.1f}", f"{r['objective']:.4f}", r["status"],
                      " ".join(map(str, r["schedule"])))
    console.print(table)
    if png_path is not None and plot_pareto(rows, png_path):
        console.print(f"plot written to [bold]{png_path}[/bold]")


def plot_pareto(rows: list[dict[str, Any]], path: str | Path) -> bool:
    """A PNG of predicted damage against budget; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot([r["equivalent_tokens"] for r in rows], [r["objective"] for r in rows], "o-")
    ax.set_xlabel("equivalent visual tokens per layer")
    ax.set_ylabel("predicted damage")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
