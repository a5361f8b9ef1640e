"""The schedule chart of docs/results/README.md: visual tokens kept at each decoder layer of the testbed, quota's recipes
(solved from the low-bit and the full-precision H100 profiles) against the stage-wise baselines' schedules, at
128 equivalent tokens and at the 0.3 budget. Needs matplotlib (``pip install -e '.[plot]'``).

    python examples/plot_schedules.py [--recipes docs/results/recipes] [-o docs/schedules.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from quota.atomic import savefig_atomic
from quota.recipe import Recipe
from quota.runtime.baselines import baseline_plan

BASELINES = ("fastv", "pyramiddrop", "sparsevlm", "visionzip")
STYLE = {"fastv": (":", "grey"), "pyramiddrop": ("--", "grey"), "sparsevlm": ("-.", "grey"), "visionzip": (":", "black")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", type=Path, default=Path("docs/results/recipes"))
    p.add_argument("-o", "--output", type=Path, default=Path("docs/schedules.png"))
    a = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, suffix, title in ((axes[0], "k128", "128 equivalent tokens"), (axes[1], "b0.3", "budget 0.3")):
        lowbit = Recipe.load(a.recipes / f"testbed_h100_{suffix}.json")
        full = Recipe.load(a.recipes / f"testbed_h100_fp_{suffix}.json")
        layers, n = len(lowbit.schedule), lowbit.n_visual_tokens
        x = list(range(layers))
        for recipe, label, width in ((lowbit, "quota, low-bit profile", 2.5), (full, "quota, full-precision profile", 1.5)):
            mean = sum(recipe.schedule) / layers
            ax.step(x, recipe.schedule, where="post", linewidth=width, label=f"{label} ({mean:.0f})")
        tokens = 128 if suffix == "k128" else sum(lowbit.schedule) / layers
        for name in BASELINES:
            sched = list(baseline_plan(name, tokens, n, layers).schedule)
            style, colour = STYLE[name]
            ax.step(x, sched, where="post", linestyle=style, color=colour, linewidth=1.2,
                    label=f"{name} ({sum(sched) / layers:.0f})")
        ax.set_title(f"testbed, W4A4+KV4, {title}")
        ax.set_xlabel("decoder layer")
        ax.set_xlim(0, layers - 1)
        ax.legend(fontsize=7, loc="upper right")
    axes[0].set_ylabel(f"visual tokens kept (of {n})")
    fig.tight_layout()
    a.output.parent.mkdir(parents=True, exist_ok=True)
    savefig_atomic(fig, a.output, dpi=110)  # a kill mid-write leaves the old figure, not half a file
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
