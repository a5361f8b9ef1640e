"""A comparison suite: many pruning plans evaluated on one loaded model, in bf16 and on the low-bit model,
with retention against both all-token references. The testbed is loaded and quantized once; every row
re-uses it through :func:`quota.runtime.apply.apply` (which only attaches the plan). Results are written
per row (atomically) so an interrupted run keeps what it finished and ``resume`` skips those rows.

Rows: ``bf16/all``, ``lowbit/all`` (the two references), then for each precision, budget and plan name
``<precision>/<plan>@<tokens>``; plans are stage-wise baselines (:data:`quota.runtime.baselines.BASELINES`,
``fastv_keep`` is FastV's "keep R from layer 2" form) or recipes (``recipe:<path>``, their own budget).

Each row file ``<readable stem>-<hash of the row name>.json`` holds the result and a ``settings`` record
(:func:`row_settings`: model hash, data version, tasks and questions per task, for low-bit rows the
quantization config and calibration count, the recipe file's digest, library versions, device). A resumed
run reuses a row only when its record equals this run's, so ``suite.md`` never mixes settings; the batch
size is not recorded, since batching does not change the greedy answers.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from quota.atomic import (
    ResumeMismatchError, first_difference, mismatch_error, resume_mode, runtime_record, show_value, unrecorded_error,
    write_json_atomic, write_text_atomic,
)
from quota.device import placement
from quota.eval.harness import EvalResult, answer_questions, retention, summarize
from quota.eval.run import check_calibration_limit, check_limit, load_result, warn_if_recipe_for_other_weights
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
from quota.testbed.splits import DATA_VERSION, calibration_split, test_split
from quota.testbed.tasks import TASKS, check_task


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
        """A readable stem plus 10 hex digits of the exact row name: distinct rows never share a file
        (``recipe:a/b.json`` and ``recipe:a__b.json`` read alike but hash apart)."""
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", self.legacy_file_stem).strip("._")[:80]
        return f"{readable}-{hashlib.sha256(self.name.encode()).hexdigest()[:10]}"

    @property
    def legacy_file_stem(self) -> str:
        """The stem of suite folders written before row names were hashed (distinct rows could collide); read
        only, by ``report_only`` and ``resume``."""
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


def plan_of(row: SuiteRow, model, model_hash: str | None = None) -> PruningPlan | None:
    """The pruning plan (schedule + scoring) of a row, or None for all tokens. With ``model_hash``, a recipe
    solved for other weights is announced on stderr (one line)."""
    if row.plan == "all":
        return None
    if row.plan.startswith("recipe:"):
        recipe = Recipe.load(row.plan[len("recipe:"):])
        if model_hash is not None:
            warn_if_recipe_for_other_weights(recipe, row.plan[len("recipe:"):], model_hash)
        return recipe.plan
    name, options = (("fastv", {"form": "keep"}) if row.plan == "fastv_keep" else (row.plan, {}))
    return baseline_plan_for(model, name, row.tokens, **options)


def suite_settings(model_hash: str, questions: Sequence, device, quant: QuantConfig, calibration: int) -> dict:
    """The settings every row of one suite run shares (``common``), and those only low-bit rows depend on
    (``lowbit``: the quantization config and the calibration question count)."""
    per_task: dict[str, int] = {}
    for q in questions:
        per_task[q.task] = per_task.get(q.task, 0) + 1
    common = {"model_hash": model_hash, "data_version": DATA_VERSION, "questions_per_task": per_task,
              **runtime_record(device)}
    return {"common": common, "lowbit": {"quant": quant.to_dict(), "calibration_questions": calibration}}


def row_settings(row: SuiteRow, settings: dict) -> dict:
    """The settings record stored with a row's result: the common ones, the row's name and plan digest, and
    for a low-bit row the quantization settings."""
    record = {"row": row.name, **settings["common"], "plan_digest": plan_digest(row)}
    if row.precision == "lowbit":
        record.update(settings["lowbit"])
    return record


def plan_digest(row: SuiteRow) -> str | None:
    """sha256 (16 hex digits) of a recipe row's file, whose contents may change under the same path; ``None``
    for baseline rows (their plans are code, covered by quota's version)."""
    if not row.plan.startswith("recipe:"):
        return None
    path = Path(row.plan[len("recipe:"):])
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def state_digest(model) -> str:
    """sha256 of a model's state dict (names, dtypes, shapes and bytes): the hash of a model given in memory."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def read_row(path: Path) -> tuple[EvalResult, dict | None]:
    """A row file's result and its settings record (``None`` for rows written before records were kept)."""
    result = load_result(path)
    settings = json.loads(path.read_text()).get("settings")
    return result, settings if isinstance(settings, dict) else None


def row_file(out: Path, row: SuiteRow) -> Path:
    return out / f"{row.file_stem}.json"


def present_row_file(out: Path, row: SuiteRow) -> Path | None:
    """The file holding ``row`` in ``out``: the current name, else the name of older suite folders."""
    for path in (row_file(out, row), out / f"{row.legacy_file_stem}.json"):
        if path.is_file():
            return path
    return None


def run_suite(
    out_dir: str | Path, plans: Sequence[str], budgets: Sequence[float], quant: QuantConfig | None = None,
    limit: int | None = None, tasks: Sequence[str] | None = None, batch_size: int = 64, device: str | None = None,
    precisions: Sequence[str] = ("bf16", "lowbit"), resume: bool | str = False, model=None, tokenizer=None,
    weights_dir: str | Path | None = None, report_only: bool = False, calibration_limit: int | None = None,
    model_hash: str | None = None,
) -> dict[str, EvalResult]:
    """Evaluate every row; returns ``{row name: result}`` and writes ``<row>.json`` files and ``suite.md``.
    Without ``model``, the testbed is loaded from ``weights_dir`` (default: the shipped weights); a model given
    in memory is identified by ``model_hash``, else by the digest of its state dict. With ``report_only``,
    nothing is evaluated: ``suite.md`` is written from the rows already in ``out_dir`` (also those of folders
    written before rows recorded their settings) and lists the rows that are not there; rows of different
    settings are refused (:class:`quota.atomic.ResumeMismatchError`). ``calibration_limit``: calibrate the
    low-bit model on the first N calibration questions only (default: all 256; fewer for quick CPU runs).

    ``resume``: ``True``/``"strict"`` keeps the rows already in ``out_dir`` whose settings equal this run's,
    and refuses (before loading anything) if any row of this run was written with other settings;
    ``"recompute"`` evaluates those rows again. ``False`` evaluates every row."""
    out = Path(out_dir)
    rows = suite_rows(plans, budgets, precisions)
    if report_only:
        present = {r.name: path for r in rows if (path := present_row_file(out, r)) is not None}
        results = {name: row for name, row in check_consistent_rows(out, present).items()}
        return _write_report(out, results, [r.name for r in rows if r.name not in present])
    check_calibration_limit(calibration_limit)
    check_limit(limit)
    tasks = [check_task(t) for t in (tasks or TASKS)]
    mode = resume_mode(resume)
    device, dtype = placement(device)
    loads_testbed = model is None  # then its quantized form comes from the cache (quota.quantize.disk_cache)
    quant = quant or QuantConfig(impl="auto")
    questions = [q for t in tasks for q in test_split(t, limit)]
    calib_questions = calibration_split()[:calibration_limit] if needs_calibration(quant) else []
    if model_hash is None:
        model_hash = testbed.model_hash(weights_dir) if loads_testbed else state_digest(model)
    settings = suite_settings(model_hash, questions, device, quant, len(calib_questions))
    reuse = reusable_rows(out, rows, settings, mode) if mode else {}
    if loads_testbed:
        tb = testbed.load(device, dtype, weights_dir)
        model, tokenizer = tb.model, tb.tokenizer
    results: dict[str, EvalResult] = {}
    models = {"bf16": model}
    for row in rows:
        if row.name in reuse:
            results[row.name] = reuse[row.name]
            continue
        if row.precision not in models:
            if loads_testbed:
                models[row.precision] = quantize_testbed(model, tokenizer, quant, weights_dir, calibration_limit)
            else:
                dev, dt = next(model.parameters()).device, next(model.parameters()).dtype
                calib = calibration_inputs(tokenizer, dev, dt, questions=calib_questions) if calib_questions else None
                models[row.precision] = quantize_model(model, quant, calib)
        base = models[row.precision]
        plan = plan_of(row, base, model_hash if loads_testbed else None)
        runnable = base if plan is None else apply(base, Recipe.from_plan(plan, expected_visual_tokens(base)))
        answers = answer_questions(runnable, tokenizer, questions, batch_size, progress=False)
        runner = getattr(runnable, "runner", None)
        meta = {"row": row.name, "precision": row.precision, "plan": row.plan, "tokens": row.tokens,
                "quant": quant.short_name() if row.precision == "lowbit" else "BF16",
                "calibration_questions": len(calib_questions) if row.precision == "lowbit" else None,
                "schedule": list(runner.schedule) if runner is not None else None,
                "equivalent_tokens": equivalent_tokens(runner.schedule) if runner is not None else None,
                "device": settings["common"]["device"]}
        result = summarize(questions, answers, meta)
        write_json_atomic(row_file(out, row), {**result.to_dict(), "settings": row_settings(row, settings)})
        legacy = out / f"{row.legacy_file_stem}.json"
        if legacy.is_file():  # superseded by the row just written
            legacy.unlink()
        results[row.name] = result
    return _write_report(out, results, [])


def reusable_rows(out: Path, rows: Sequence[SuiteRow], settings: dict, mode: str) -> dict[str, EvalResult]:
    """The rows already in ``out`` that a resumed run keeps: those whose settings equal this run's. A row of
    other settings (or of none) raises :class:`quota.atomic.ResumeMismatchError` in ``strict`` mode and is
    left out (evaluated again) in ``recompute`` mode."""
    keep: dict[str, EvalResult] = {}
    for row in rows:
        path = present_row_file(out, row)
        if path is None:
            continue
        try:
            result, stored = read_row(path)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # written atomically, so a damaged row is foreign: evaluated again
        what = f"the results of row {row.name}"
        if stored is None:
            if mode == "strict":
                raise unrecorded_error(what, path.name, verb="evaluate it again")
            continue
        diff = first_difference(stored, row_settings(row, settings))
        if diff is not None:
            if mode == "strict":
                raise mismatch_error(what, path.name, diff, verb="evaluate it again")
            continue
        keep[row.name] = result
    return keep


def check_consistent_rows(out: Path, files: dict[str, Path]) -> dict[str, EvalResult]:
    """The results of ``files`` (``{row name: path}``), refusing rows of different settings with one line:
    every row must count the same questions per task, and rows that record settings must agree on those
    all rows share (model, data, questions, versions, device) and, among low-bit rows, on the quantization."""
    results: dict[str, EvalResult] = {}
    first: dict[str, tuple[str, Any]] = {}  # kind -> (row name, the settings every row of that kind shares)
    for name, path in files.items():
        result, stored = read_row(path)
        counts = {t: s.n for t, s in result.tasks.items()}
        checks = [("questions", counts)]
        if stored is not None:
            row_only = ("row", "plan_digest", "quant", "calibration_questions")
            checks.append(("settings", {k: v for k, v in stored.items() if k not in row_only}))
            if "quant" in stored:
                checks.append(("lowbit", {k: stored.get(k) for k in ("quant", "calibration_questions")}))
        for kind, value in checks:
            if kind not in first:
                first[kind] = (name, value)
                continue
            diff = first_difference(first[kind][1], value)
            if diff is not None:
                field, a, b = diff
                field = f"questions_per_task.{field}" if kind == "questions" else field
                raise ResumeMismatchError(
                    f"cannot report {out}: row {first[kind][0]} was measured with {field}={show_value(a)}, row {name} "
                    f"with {show_value(b)} (evaluate them again with the same settings)", field, a, b)
        results[name] = result
    return results


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
