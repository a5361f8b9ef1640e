"""The Pareto sweep of a precision profile: predicted damage (the accuracy proxy) against predicted TTFT and decode
time, for the uniform options with and without a token schedule, and for the joint recipes over a range of budgets.

Every point is **predicted** from the profile (``"predicted": true``); measured points come from a GPU run of the
recipes (``quota eval`` / ``quota bench``) and are added by whoever measures them. Points:

- ``uniform <p>, all tokens``: every layer at option p, all N tokens (the prediction ``sum_l D[l, p]``);
- ``uniform <p> + tokens b``: every layer at p, the token schedule the solver picks at equivalent-token budget
  ``token_budget`` (restricted to p);
- ``joint <kind> b``: the joint optimum at each budget of the sweep (all allowed options).

TTFT and decode are given as fractions of the all-bf16 all-tokens cost (``ttft``, ``decode``) and in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from quota.atomic import write_json_atomic
from quota.profiling.damage_fit import DEFAULT_DAMAGE_FIT
from quota.profiling.precision_problem import build_joint_problem, joint_kind
from quota.profiling.precision_profile import PrecisionProfile
from quota.solvers.constraints import FixedLayer
from quota.solvers.errors import InfeasibleError
from quota.solvers.joint_solve import solve_joint

UNIFORM = ("bf16", "fp8", "w4a8", "w4a4")


def _point(label: str, family: str, solution, budget: float | None) -> dict[str, Any]:
    return {"label": label, "family": family, "budget": budget, "damage": solution.objective,
            "ttft": solution.cost_ratios.get("ttft"), "decode": solution.cost_ratios.get("decode"),
            "ttft_s": solution.costs.get("ttft"), "decode_s": solution.costs.get("decode"),
            "equivalent_tokens": sum(solution.schedule) / len(solution.schedule),
            "layer_precision": list(solution.precisions), "schedule": list(solution.schedule),
            "status": solution.status, "predicted": True}


def precision_sweep(pp: PrecisionProfile, budgets: Sequence[float], budget_kind: str = "latency",
                    precisions: Sequence[str] | None = None, token_budget: float = 0.3, solver: str = "auto",
                    time_limit: float | None = 30.0, damage_fit: str = DEFAULT_DAMAGE_FIT) -> dict[str, Any]:
    """``{"points": [...], "skipped": [...], ...}``: the points of the module docstring. Uniform options not
    profiled are left out; joint budgets that are infeasible are listed in ``skipped`` with the reason.
    ``damage_fit``: how the token curves are read (:func:`build_joint_problem`)."""
    allowed = tuple(precisions) if precisions is not None else pp.precisions
    kind = joint_kind(budget_kind)
    points, skipped = [], []
    for name in [n for n in UNIFORM if n in pp.precisions]:
        keep_all = [FixedLayer(layer, pp.n_visual_tokens) for layer in range(pp.n_layers)]
        full = build_joint_problem(pp, {"tokens": 1.0}, [name], constraints=keep_all, damage_fit=damage_fit)
        points.append(_point(f"uniform {name}, all tokens", "uniform", solve_joint(full, "dp", time_limit), None))
        pruned = build_joint_problem(pp, {"tokens": token_budget}, [name], damage_fit=damage_fit)
        points.append(_point(f"uniform {name} + tokens {token_budget:g}", "uniform+tokens",
                             solve_joint(pruned, solver, time_limit), token_budget))
    for b in budgets:
        try:
            solution = solve_joint(build_joint_problem(pp, {kind: b}, allowed, damage_fit=damage_fit), solver,
                                   time_limit)
        except InfeasibleError as err:
            skipped.append({"budget": b, "why": str(err)})
            continue
        points.append(_point(f"joint {budget_kind} {b:g}", "joint", solution, b))
    return {"model_id": pp.profile.model_id, "device": pp.device, "latency_method": pp.latency.get("method"),
            "budget_kind": budget_kind, "precisions": list(allowed), "token_budget": token_budget,
            "reference": pp.reference, "damage_fit": damage_fit, "points": points, "skipped": skipped,
            "note": "every point is predicted from the profile; measured points come from a GPU run"}


def markdown_table(sweep: dict[str, Any]) -> str:
    """The sweep as a markdown table (one row per point)."""
    lines = [f"Predicted Pareto points ({sweep['model_id']}, latency {sweep['latency_method']} on {sweep['device']}; "
             f"TTFT and decode as fractions of all-bf16 all-tokens)", "",
             "| point | predicted damage (KL) | TTFT | decode | equivalent tokens | precisions |",
             "|---|---:|---:|---:|---:|---|"]
    for p in sweep["points"]:
        counts: dict[str, int] = {}
        for name in p["layer_precision"]:
            counts[name] = counts.get(name, 0) + 1
        mix = ", ".join(f"{k} x{v}" for k, v in counts.items())
        lines.append(f"| {p['label']} | {p['damage']:.4f} | {p['ttft']:.3f} | {p['decode']:.3f} | "
                     f"{p['equivalent_tokens']:.1f} | {mix} |")
    for s in sweep["skipped"]:
        lines.append(f"| joint {sweep['budget_kind']} {s['budget']:g} | infeasible | | | | |")
    return "\n".join(lines) + "\n"


def plot_sweep(sweep: dict[str, Any], path: str | Path) -> bool:
    """A PNG of predicted damage against TTFT and against decode time (two panels); False without matplotlib
    (the optional ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120, sharey=True)
    styles = {"uniform": "s", "uniform+tokens": "^", "joint": "o-"}
    for ax, key, title in ((axes[0], "ttft", "TTFT"), (axes[1], "decode", "decode time per token")):
        for family, marker in styles.items():
            pts = sorted((p for p in sweep["points"] if p["family"] == family), key=lambda p: p[key])
            ax.plot([p[key] for p in pts], [p["damage"] for p in pts], marker, label=f"{family} (predicted)")
        ax.set_xlabel(f"{title}, fraction of all-bf16 all-tokens")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("predicted damage (KL)")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{sweep['model_id']} on {sweep['device']} ({sweep['latency_method']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_sweep(sweep: dict[str, Any], json_path: str | Path, png_path: str | Path | None = None) -> dict[str, str]:
    """Write the sweep's JSON, its markdown table beside it (``.md``) and, with matplotlib, the PNG; returns the
    paths written."""
    json_path = Path(json_path)
    write_json_atomic(json_path, sweep)
    md = json_path.with_suffix(".md")
    md.write_text(markdown_table(sweep))
    out = {"json": str(json_path), "markdown": str(md)}
    if png_path is not None and plot_sweep(sweep, png_path):
        out["png"] = str(png_path)
    return out
