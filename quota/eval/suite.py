"""A comparison suite: many pruning plans evaluated on one loaded model, in bf16 and on the low-bit model,
with retention against both all-token references. The testbed is loaded and quantized once; every row
re-uses it through :func:`quota.runtime.apply.apply` (which only attaches the plan). Results are written
per row (atomically) so an interrupted run keeps what it finished and ``resume`` skips those rows.

Rows: ``bf16/all``, ``lowbit/all`` (the two references), then for each precision, budget and plan name
``<precision>/<plan>@<tokens>``; plans are stage-wise baselines (:data:`quota.runtime.baselines.BASELINES`,
``fastv_keep`` is FastV's "keep R from layer 2" form) or recipes (``recipe:<path>``, their own budget).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from quota.atomic import write_json_atomic, write_text_atomic
from quota.device import placement
from quota.eval.harness import EvalResult, answer_questions, retention, summarize
from quota.eval.run import check_calibration_limit, load_result
from quota.quant.config import QuantConfig
from quota.quantize.model import needs_calibration, quantize_model
from quota.recipe import PruningPlan, Recipe
from quota.runtime.apply import apply
from quota.runtime.baselines import baseline_plan_for
from quota.runtime.vision import expected_visual_tokens
from quota.schedule import equivalent_tokens
from quota.testbed import model as testbed
from quota.testbed.batches import calibration_inputs
from quota.testbed.quantized import quantize_testbed
from quota.testbed.splits import calibration_split, test_split
from quota.testbed.tasks import TASKS


@dataclass(frozen=True)
class SuiteRow:
    precision: str  # "bf16" | "lowbit"
    plan: str  # "all", a baseline name, "fastv_keep", or "recipe:<path>"
    tokens: float | None = None

    @property
    def name(self) -> str:
        return f"{self.precision}/{self.plan}" + (f"@{self.tokens:g}" if self.tokens is not None else "")

    @property
    def file_stem(self) -> str:
        return self.name.replace("/", "__").replace(":", "_").replace("@", "_at_").replace(".json", "")


def suite_rows(plans: Sequence[str], budgets: Sequence[float], precisions: Sequence[str] = ("bf16", "lowbit")) -> list[SuiteRow]:
    """Every (precision, plan, budget) row, after the all-token row of each precision. The all-token rows of
    both precisions are always included (those of precisions not asked for come last), since retention is
    reported against both references."""
    rows = [SuiteRow(p, "all") for p in precisions]
    for precision in precisions:
        for plan in plans:
            if plan.startswith("recipe:"):
                rows.append(SuiteRow(precision, plan))
            else:
                rows += [SuiteRow(precision, plan, float(t)) for t in budgets]
    return rows + [SuiteRow(p, "all") for p in ("bf16", "lowbit") if p not in precisions]


def plan_of(row: SuiteRow, model) -> PruningPlan | None:
    """The pruning plan (schedule + scoring) of a row, or None for all tokens."""
    if row.plan == "all":
        return None
    if row.plan.startswith("recipe:"):
        return Recipe.load(row.plan[len("recipe:"):]).plan
    name, options = (("fastv", {"form": "keep"}) if row.plan == "fastv_keep" else (row.plan, {}))
    return baseline_plan_for(model, name, row.tokens, **options)


def run_suite(
    out_dir: str | Path, plans: Sequence[str], budgets: Sequence[float], quant: QuantConfig | None = None,
    limit: int | None = None, tasks: Sequence[str] | None = None, batch_size: int = 64, device: str | None = None,
    precisions: Sequence[str] = ("bf16", "lowbit"), resume: bool = False, model=None, tokenizer=None,
    weights_dir: str | Path | None = None, report_only: bool = False, calibration_limit: int | None = None,
) -> dict[str, EvalResult]:
    """Evaluate every row; returns ``{row name: result}`` and writes ``<row>.json`` files and ``suite.md``.
    Without ``model``, the testbed is loaded from ``weights_dir`` (default: the shipped weights). With
    ``report_only``, nothing is evaluated: ``suite.md`` is written from the rows already in ``out_dir`` and
    lists the rows that are not there. ``calibration_limit``: calibrate the low-bit model on the first N
    calibration questions only (default: all 256; fewer for quick CPU runs)."""
    out = Path(out_dir)
    if report_only:
        rows = suite_rows(plans, budgets, precisions)
        files = {r.name: out / f"{r.file_stem}.json" for r in rows}
        present = {name: load_result(path) for name, path in files.items() if path.is_file()}
        return _write_report(out, present, [r.name for r in rows if r.name not in present])
    check_calibration_limit(calibration_limit)
    device, dtype = placement(device)
    loads_testbed = model is None  # then its quantized form comes from the cache (quota.quantize.disk_cache)
    if loads_testbed:
        tb = testbed.load(device, dtype, weights_dir)
        model, tokenizer = tb.model, tb.tokenizer
    quant = quant or QuantConfig(impl="auto")
    questions = [q for t in (tasks or TASKS) for q in test_split(t, limit)]
    rows = suite_rows(plans, budgets, precisions)
    calib_questions = calibration_split()[:calibration_limit] if needs_calibration(quant) else []
    results: dict[str, EvalResult] = {}
    models = {"bf16": model}
    for row in rows:
        path = out / f"{row.file_stem}.json"
        if resume and path.is_file():
            results[row.name] = load_result(path)
            continue
        if row.precision not in models:
            if loads_testbed:
                models[row.precision] = quantize_testbed(model, tokenizer, quant, weights_dir, calibration_limit)
            else:
                dev, dt = next(model.parameters()).device, next(model.parameters()).dtype
                calib = calibration_inputs(tokenizer, dev, dt, questions=calib_questions) if calib_questions else None
                models[row.precision] = quantize_model(model, quant, calib)
        base = models[row.precision]
        plan = plan_of(row, base)
        runnable = base if plan is None else apply(base, Recipe.from_plan(plan, expected_visual_tokens(base)))
        answers = answer_questions(runnable, tokenizer, questions, batch_size, progress=False)
        runner = getattr(runnable, "runner", None)
        meta = {"row": row.name, "precision": row.precision, "plan": row.plan, "tokens": row.tokens,
                "quant": quant.short_name() if row.precision == "lowbit" else "BF16",
                "calibration_questions": len(calib_questions) if row.precision == "lowbit" else None,
                "schedule": list(runner.schedule) if runner is not None else None,
                "equivalent_tokens": equivalent_tokens(runner.schedule) if runner is not None else None,
                "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"}
        result = summarize(questions, answers, meta)
        write_json_atomic(path, result.to_dict())
        results[row.name] = result
    return _write_report(out, results, [])


def _write_report(out: Path, results: dict[str, EvalResult], missing: Sequence[str]) -> dict[str, EvalResult]:
    """Retention against both references, then ``suite.md`` and ``suite.json`` (atomically)."""
    refs = {"bf16_all_tokens": results.get("bf16/all"), "lowbit_all_tokens": results.get("lowbit/all")}
    for result in results.values():
        result.meta["retention"] = {k: retention(result, r) for k, r in refs.items() if r is not None}
    text = markdown(results)
    if missing:
        text += f"\nNot measured ({len(missing)} row{'s' * (len(missing) != 1)}): {', '.join(missing)}.\n"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "suite.md", text)
    write_json_atomic(out / "suite.json", {k: r.to_dict() for k, r in results.items()})
    return results


def markdown(results: dict[str, EvalResult]) -> str:
    tasks = [t for t in TASKS if any(t in r.tasks for r in results.values())]
    head = ["row", "eq. tokens", *tasks, "average (95% CI)", "ret. vs bf16", "ret. vs low-bit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        ret = r.meta.get("retention", {})
        eq = r.meta.get("equivalent_tokens")
        cells = [name, "all" if eq is None else f"{eq:.1f}"]
        cells += [f"{100 * r.tasks[t].accuracy:.1f}" if t in r.tasks else "-" for t in tasks]
        cells.append(f"{100 * r.average:.1f} ({100 * r.average_ci[0]:.1f}-{100 * r.average_ci[1]:.1f})")
        cells += [f"{100 * ret[k]:.1f}%" if k in ret else "-" for k in ("bf16_all_tokens", "lowbit_all_tokens")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
