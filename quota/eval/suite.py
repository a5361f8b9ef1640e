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

Row files are versioned (:mod:`quota.versioned`, type ``quota.suite_row``). Version 2 stores every question's
outcome under ``predictions`` (``EvalResult.predictions``, the form ``quota eval -o`` writes: ``qid``, ``task``,
``answer``, ``prediction``, ``correct``), so that two rows can be compared on the same questions. Files without
a type are version 1 (written before): they are still read and reported, with predictions only where they
happen to hold them, but a resumed run does not reuse a row without predictions (``--resume=recompute``
evaluates it again).

The report (``suite.md``, and ``suite.json`` without the predictions) gives every row's average with its
unpaired interval, and the paired difference against a reference row with its interval
(:func:`paired_column`): by default, for each pruned row, the best stage-wise row of its precision at the
budget nearest its equivalent tokens.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
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
from quota.eval.paired import outcomes, paired_results
from quota.eval.run import check_calibration_limit, check_limit, result_from_dict, warn_if_recipe_for_other_weights
from quota.quant.config import QuantConfig
from quota.quantize.model import needs_calibration, quantize_model
from quota.recipe import PruningPlan, Recipe
from quota.runtime.apply import apply
from quota.runtime.baselines import baseline_plan, baseline_plan_for
from quota.runtime.vision import expected_visual_tokens
from quota.schedule import equivalent_tokens
from quota.testbed import model as testbed
from quota.testbed.batches import calibration_inputs
from quota.testbed.quantized import quantize_testbed
from quota.testbed.splits import calibration_split, data_version, test_split
from quota.testbed.tasks import TASKS, check_task
from quota.versioned import VersionError, stamp, type_of, unstamp

SUITE_ROW_TYPE, SUITE_ROW_VERSION = "quota.suite_row", 2
"""A row file's type and the version this quota writes; files without a type are read as version 1."""

TOKEN_TOLERANCE = 0.125
"""A recipe row's default paired reference is a stage-wise budget within this share of its equivalent tokens
(a recipe solved for 64 tokens on a 72-token grid spends 57.6)."""


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

    @classmethod
    def parse(cls, name: str) -> "SuiteRow":
        """The row named ``name`` (:attr:`name`'s inverse): ``bf16/all``, ``lowbit/fastv@64``, ``lowbit/recipe:r.json``."""
        precision, _, plan = name.partition("/")
        if not plan.startswith("recipe:") and "@" in plan:
            plan, _, tokens = plan.rpartition("@")
            return cls(precision, plan, float(tokens))
        return cls(precision, plan)

    @property
    def stage_wise(self) -> bool:
        """Whether the row prunes with a stage-wise baseline (not all tokens, not a recipe)."""
        return self.plan != "all" and not self.plan.startswith("recipe:")

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


def suite_settings(model_hash: str, questions: Sequence, device, quant: QuantConfig, calibration: int,
                   version: str | None = None) -> dict:
    """The settings every row of one suite run shares (``common``, with the data version of the questions,
    default the stress suite's), and those only low-bit rows depend on (``lowbit``: the quantization config and
    the calibration question count)."""
    per_task: dict[str, int] = {}
    for q in questions:
        per_task[q.task] = per_task.get(q.task, 0) + 1
    common = {"model_hash": model_hash, "data_version": data_version(version), "questions_per_task": per_task,
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
    """sha256 (16 hex digits) of what a row runs: a recipe row's file (its contents may change under the same
    path), or a baseline row's plan on the testbed's shape (schedule, scoring, selection rule and merging: a
    preset whose meaning changes, as ``visionzip`` did when it gained merging, no longer matches its old rows);
    ``None`` for the all-token rows."""
    if row.plan.startswith("recipe:"):
        path = Path(row.plan[len("recipe:"):])
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None
    if row.plan == "all":
        return None
    name, options = (("fastv", {"form": "keep"}) if row.plan == "fastv_keep" else (row.plan, {}))
    plan = baseline_plan(name, float(row.tokens), testbed.N_VISUAL_TOKENS, testbed.N_LANGUAGE_LAYERS, **options)
    return hashlib.sha256(json.dumps(plan.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def state_digest(model) -> str:
    """sha256 of a model's state dict (names, dtypes, shapes and bytes): the hash of a model given in memory."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def row_document(result: EvalResult, settings: dict) -> dict:
    """What a row file holds: the result with its predictions and the row's settings record, stamped."""
    return stamp(SUITE_ROW_TYPE, SUITE_ROW_VERSION, {**result.to_dict(with_predictions=True), "settings": settings})


def read_row(path: Path) -> tuple[EvalResult, dict | None]:
    """A row file's result (with its predictions when stored) and its settings record (``None`` for rows written
    before records were kept). Raises :class:`quota.versioned.VersionError` for another type or an unknown
    version, ``ValueError`` for a version-2 row without predictions or predictions that do not match its
    scores."""
    doc = json.loads(path.read_text())
    if type_of(doc) is None:
        version, body = 1, doc
    else:
        version, body = unstamp(doc, SUITE_ROW_TYPE, (SUITE_ROW_VERSION,), path.name)
    result = result_from_dict(body)
    check_predictions(result, path.name, required=version >= 2)
    settings = body.get("settings")
    return result, settings if isinstance(settings, dict) else None


def check_predictions(result: EvalResult, source: str, required: bool = False) -> None:
    """``ValueError`` naming ``source`` unless ``result.predictions`` score exactly its tasks: each question once,
    as many per task as the task's ``n``, with the task's accuracy. No predictions pass unless ``required``."""
    if not result.predictions:
        if required:
            raise ValueError(f"{source}: a {SUITE_ROW_TYPE} version {SUITE_ROW_VERSION} row without predictions")
        return
    correct, tasks = outcomes(result.predictions, source)
    for task in sorted(set(tasks.values()) | set(result.tasks)):
        oks = [correct[q] for q, t in tasks.items() if t == task]
        score = result.tasks.get(task)
        if score is None or len(oks) != score.n or (oks and abs(sum(oks) / len(oks) - score.accuracy) > 1e-9):
            raise ValueError(f"{source}: the predictions of task {task} ({len(oks)} questions) do not match its "
                             f"score ({'none' if score is None else f'{score.n} questions'})")


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
    model_hash: str | None = None, paired_against: str | None = None, version: str | None = None,
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
    ``"recompute"`` evaluates those rows again. ``False`` evaluates every row.

    ``paired_against``: the row (one of this run's, by name) every other row's paired difference is taken
    against in the report; by default each pruned row's is the best stage-wise row at its budget
    (:func:`paired_column`).

    ``version``: the suite's data version (``stress`` or ``natural``, or ``synthvqa-v1``/``natural-v1``; default
    stress); every row records it, so a resumed run never mixes rows of two data versions. The low-bit model is
    calibrated on the stress calibration split in either case (the model, not the suite, is quantized)."""
    out = Path(out_dir)
    rows = suite_rows(plans, budgets, precisions)
    if paired_against is not None and paired_against not in [r.name for r in rows]:
        raise ValueError(f"--paired-against {paired_against!r} is not a row of this suite; its rows: "
                         f"{', '.join(r.name for r in rows)}")
    if report_only:
        present = {r.name: path for r in rows if (path := present_row_file(out, r)) is not None}
        results = {name: row for name, row in check_consistent_rows(out, present).items()}
        return _write_report(out, results, [r.name for r in rows if r.name not in present], paired_against)
    check_calibration_limit(calibration_limit)
    check_limit(limit)
    tasks = [check_task(t) for t in (tasks or TASKS)]
    mode = resume_mode(resume)
    device, dtype = placement(device)
    loads_testbed = model is None  # then its quantized form comes from the cache (quota.quantize.disk_cache)
    quant = quant or QuantConfig(impl="auto")
    questions = [q for t in tasks for q in test_split(t, limit, version)]
    calib_questions = calibration_split()[:calibration_limit] if needs_calibration(quant) else []
    if model_hash is None:
        model_hash = testbed.model_hash(weights_dir) if loads_testbed else state_digest(model)
    settings = suite_settings(model_hash, questions, device, quant, len(calib_questions), version)
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
        start = time.perf_counter()
        answers = answer_questions(runnable, tokenizer, questions, batch_size, progress=False)
        seconds = time.perf_counter() - start
        runner = getattr(runnable, "runner", None)
        meta = {"row": row.name, "precision": row.precision, "plan": row.plan, "tokens": row.tokens,
                "quant": quant.short_name() if row.precision == "lowbit" else "BF16",
                "calibration_questions": len(calib_questions) if row.precision == "lowbit" else None,
                "schedule": list(runner.schedule) if runner is not None else None,
                "equivalent_tokens": equivalent_tokens(runner.schedule) if runner is not None else None,
                "device": settings["common"]["device"]}
        result = summarize(questions, answers, meta)
        write_json_atomic(row_file(out, row), row_document(result, row_settings(row, settings)))
        legacy = out / f"{row.legacy_file_stem}.json"
        if legacy.is_file():  # superseded by the row just written
            legacy.unlink()
        results[row.name] = result
        print(f"[quota eval] {row.name}: {len(questions)} questions in {seconds:.0f} s, average {result.average:.3f}",
              file=sys.stderr, flush=True)
    return _write_report(out, results, [], paired_against)


def reusable_rows(out: Path, rows: Sequence[SuiteRow], settings: dict, mode: str) -> dict[str, EvalResult]:
    """The rows already in ``out`` that a resumed run keeps: those whose settings equal this run's and that
    store their predictions. A row of other settings (or of none), without predictions or of another row-file
    version raises :class:`quota.atomic.ResumeMismatchError` in ``strict`` mode and is left out (evaluated
    again) in ``recompute`` mode."""
    keep: dict[str, EvalResult] = {}
    for row in rows:
        path = present_row_file(out, row)
        if path is None:
            continue
        what = f"the results of row {row.name}"
        try:
            result, stored = read_row(path)
        except VersionError as err:
            if mode == "strict":
                raise ResumeMismatchError(f"cannot resume: {what}: {err} (rerun with --resume=recompute to "
                                          f"evaluate it again)", "version") from None
            continue
        except (OSError, ValueError, KeyError, TypeError):
            continue  # written atomically, so a damaged row is foreign: evaluated again
        if stored is None:
            if mode == "strict":
                raise unrecorded_error(what, path.name, verb="evaluate it again")
            continue
        diff = first_difference(stored, row_settings(row, settings))
        if diff is not None:
            if mode == "strict":
                raise mismatch_error(what, path.name, diff, verb="evaluate it again")
            continue
        if not result.predictions:
            if mode == "strict":
                raise ResumeMismatchError(
                    f"cannot resume: {what} in {path.name} store no per-question predictions (written by an earlier "
                    f"quota); rerun with --resume=recompute to evaluate it again", "predictions")
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


def _write_report(out: Path, results: dict[str, EvalResult], missing: Sequence[str],
                  paired_against: str | None = None) -> dict[str, EvalResult]:
    """Retention against both references and the paired column (``meta["retention"]``, ``meta["paired"]``), then
    ``suite.md`` and ``suite.json`` (atomically; ``suite.json`` without the per-question predictions)."""
    refs = {"bf16_all_tokens": results.get("bf16/all"), "lowbit_all_tokens": results.get("lowbit/all")}
    for result in results.values():
        result.meta["retention"] = {k: retention(result, r) for k, r in refs.items() if r is not None}
    for name, record in paired_column(results, paired_against).items():
        results[name].meta["paired"] = record
    text = markdown(results)
    if missing:
        text += f"\nNot measured ({len(missing)} row{'s' * (len(missing) != 1)}): {', '.join(missing)}.\n"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "suite.md", text)
    write_json_atomic(out / "suite.json", {k: r.to_dict() for k, r in results.items()})
    return results


def default_reference(name: str, results: dict[str, EvalResult]) -> str | None:
    """The row ``name`` is paired against by default: the best (highest average) stage-wise row of its
    precision at the budget nearest its tokens (a stage-wise row's own budget, a recipe row's measured
    equivalent tokens), if that budget is within :data:`TOKEN_TOLERANCE` of them; ``None`` for the all-token
    rows and where no stage-wise row is that near. The first of equal averages wins."""
    row = SuiteRow.parse(name)
    target = row.tokens if row.stage_wise else results[name].meta.get("equivalent_tokens")
    if row.plan == "all" or target is None:
        return None
    stage = {n: r for n in results
             if (r := SuiteRow.parse(n)).stage_wise and r.tokens is not None and r.precision == row.precision}
    if not stage:
        return None
    budget = min({r.tokens for r in stage.values()}, key=lambda t: (abs(t - target), -t))
    if abs(budget - target) > TOKEN_TOLERANCE * budget:
        return None
    return max((n for n, r in stage.items() if r.tokens == budget), key=lambda n: results[n].average)


def paired_column(results: dict[str, EvalResult], against: str | None = None) -> dict[str, dict]:
    """``{row name: record}``: each row's paired difference against its reference row, in accuracy points
    (:func:`quota.eval.paired.paired_results`: per task on the questions both rows answered, averaged over
    tasks; 95% interval of a bootstrap within each task). The reference is ``against`` for every other row,
    else :func:`default_reference`. A record is one of

    - ``{"against", "mean", "low", "high", "n", "only_a", "only_b", "level", "resamples", "seed", "per_task"}``
      (:class:`quota.eval.paired.PairedDifference`, ``a`` the row, ``b`` its reference), with ``"note"`` naming
      the questions left out when the two rows did not answer the same ones;
    - ``{"against": name, "reference": True}`` for the reference itself;
    - ``{"against", "unavailable": why}``, with ``"without_predictions": [rows]`` where the row or its
      reference stores no per-question predictions (``against`` is ``None`` where no reference exists), and
      ``"note"`` where the two rows' questions do not agree (another data version, or an id with another answer).

    Each also says how its reference was ``chosen``: ``"default"`` or ``"given"`` (``against``)."""
    column: dict[str, dict] = {}
    for name, result in results.items():
        ref = against if against is not None else default_reference(name, results)
        if ref is None:
            column[name] = {"against": None, "unavailable": "no stage-wise row at its budget"}
        elif ref == name:
            column[name] = {"against": name, "reference": True}
        elif ref not in results:
            column[name] = {"against": ref, "unavailable": f"row {ref} was not measured"}
        elif not result.predictions or not results[ref].predictions:
            lacking = [n for n in (name, ref) if not results[n].predictions]
            column[name] = {"against": ref, "unavailable": "no per-question predictions",
                            "without_predictions": lacking}
        else:
            try:
                diff = paired_results(result, results[ref])
            except ValueError as err:  # not the same questions: said under the table, not hidden
                column[name] = {"against": ref, "unavailable": str(err), "note": f"{name} vs {ref}: not paired, {err}"}
            else:
                note = diff.note(name, ref)
                column[name] = {"against": ref, **diff.to_dict(), **({"note": note} if note else {})}
        column[name]["chosen"] = "default" if against is None else "given"
    return column


def markdown(results: dict[str, EvalResult], paired_against: str | None = None) -> str:
    """The suite table: per-task accuracy, the average with its unpaired 95% interval, the paired difference
    against each row's reference with its 95% interval (``meta["paired"]`` as the report stored it, computed
    here for results that lack it, against ``paired_against`` or by default), and retention; then notes on the
    paired column."""
    if paired_against is not None or any("paired" not in r.meta for r in results.values()):
        paired = paired_column(results, paired_against)
    else:
        paired = {name: r.meta["paired"] for name, r in results.items()}
    tasks = [t for t in TASKS if any(t in r.tasks for r in results.values())]
    head = ["row", "eq. tokens", *tasks, "average (95% CI)", "paired Δ (95% CI)", "paired vs", "ret. vs bf16",
            "ret. vs low-bit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        ret = r.meta.get("retention", {})
        eq = r.meta.get("equivalent_tokens")
        cells = [name, "all" if eq is None else f"{eq:.1f}"]
        cells += [f"{100 * r.tasks[t].accuracy:.1f}" if t in r.tasks else "-" for t in tasks]
        cells.append(f"{100 * r.average:.1f} ({100 * r.average_ci[0]:.1f}-{100 * r.average_ci[1]:.1f})")
        cells += paired_cells(paired[name])
        cells += [f"{100 * ret[k]:.1f}%" if k in ret else "-" for k in ("bf16_all_tokens", "lowbit_all_tokens")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" + paired_notes(paired)


def paired_cells(record: dict) -> list[str]:
    """The paired difference cell (``+4.2 (+1.1 to +7.3)``, ``reference`` or ``-``) and the reference's name."""
    if record.get("reference"):
        return ["reference", "-"]
    against = record.get("against") or "-"
    if "mean" not in record:
        return ["-", against]
    low, mean, high = (f"{round(record[k], 1) or 0.0:+.1f}" for k in ("low", "mean", "high"))  # no "-0.0"
    return [f"{mean} ({low} to {high})", against]


def paired_notes(paired: dict[str, dict]) -> str:
    """The paragraphs under the table: what the paired column means, against which reference, and which rows
    it leaves out, and why."""
    against = next((r["against"] for r in paired.values() if r.get("chosen") == "given"), None)
    computed = next((r for r in paired.values() if "mean" in r), None)
    how = (f"{computed['resamples']} resamples, seed {computed['seed']}" if computed is not None else "")
    reference = (f"row {against}" if against is not None else "for each pruned row, the best stage-wise row of its "
                 f"precision at the budget nearest its equivalent tokens (within {100 * TOKEN_TOLERANCE:g}%)")
    notes = [f"Paired Δ: accuracy points of the row minus its reference on the questions both answered (per-task "
             f"differences averaged over tasks, as the average is), with the 95% percentile bootstrap interval "
             f"resampling questions within each task{' (' + how + ')' if how else ''}; the row is ahead of its "
             f"reference where the whole interval lies above zero. Reference: {reference}. The average's own "
             f"interval is unpaired."]
    lacking = sorted({n for r in paired.values() for n in r.get("without_predictions", [])})
    if lacking:
        notes.append(f"No paired Δ (\"-\") where a row or its reference stores no per-question predictions, as rows "
                     f"written before suite rows kept them do: {', '.join(lacking)}; evaluate them again "
                     f"(--resume=recompute) to pair them.")
    alone = [n for n, r in paired.items() if r.get("against") is None and SuiteRow.parse(n).plan != "all"]
    if alone:
        notes.append(f"No paired Δ for {', '.join(alone)}: no stage-wise row of its precision within "
                     f"{100 * TOKEN_TOLERANCE:g}% of its equivalent tokens (a reference row can be named instead).")
    if against is not None and any("not measured" in r.get("unavailable", "") for r in paired.values()):
        notes.append(f"No paired Δ: the reference row {against} was not measured.")
    notes += [r["note"] + "." for r in paired.values() if r.get("note")]
    return "\n" + "\n\n".join(notes) + "\n"
