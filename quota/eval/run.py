"""``evaluate``: the Python form of ``quota eval`` — load a model, optionally quantize it and attach a
recipe's schedule or a stage-wise baseline, answer the test split, score it, compute retention
against reference results, and write the JSON result atomically."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from quota.atomic import runtime_record, write_json_atomic
from quota.device import placement
from quota.eval.harness import EvalResult, TaskScore, answer_questions, retention, summarize
from quota.models.registry import check_model_name
from quota.quant.config import QuantConfig
from quota.quantize.model import needs_calibration, quantize_model
from quota.recipe import Recipe
from quota.runtime.apply import apply
from quota.runtime.baselines import baseline_plan_for
from quota.runtime.vision import expected_visual_tokens
from quota.schedule import equivalent_tokens
from quota.testbed import model as testbed
from quota.testbed.batches import calibration_inputs
from quota.testbed.splits import calibration_split, test_split
from quota.testbed.tasks import TASKS, check_task


def load_result(path: str | Path) -> EvalResult:
    """An evaluation result written by :func:`evaluate` (``-o``)."""
    return result_from_dict(json.loads(Path(path).read_text()))


def result_from_dict(d: dict) -> EvalResult:
    """An evaluation result from :meth:`EvalResult.to_dict`'s form, with its per-question predictions when
    they were stored (``with_predictions``; else none). Keys it does not know are ignored."""
    tasks = {t: TaskScore(**s) for t, s in d["tasks"].items()}
    return EvalResult(tasks, d["average"], tuple(d["average_ci"]), d.get("data_version", ""), d.get("meta", {}),
                      predictions=list(d.get("predictions") or []), forms=d.get("forms", {}))


def check_limit(limit: int | None) -> int | None:
    """``limit`` (questions per task) as given, or ``ValueError`` naming ``--limit`` unless it is ``None`` (all
    questions) or an integer >= 1: no question means no score (an average of NaN)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"--limit must be a number of questions per task >= 1, got {limit!r}")
    return limit


def warn_if_recipe_for_other_weights(recipe: Recipe, path: str | Path, model_hash: str) -> bool:
    """One line on stderr when ``recipe`` was solved for other weights than those of ``model_hash`` (its
    schedule was measured on another model; it still runs). Returns whether the weights match."""
    if recipe.model_hash == model_hash:
        return True
    print(f"[quota] warning: recipe {path} was solved for other testbed weights (model hash "
          f"{recipe.model_hash[:12] or '(none)'}, these weights {model_hash[:12]})", file=sys.stderr, flush=True)
    return False


def check_calibration_limit(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"--calibration must be a number of calibration questions >= 1, got {limit!r}")
    return limit


def prepare_model(model, tokenizer, quant: QuantConfig | None, recipe: Recipe | None = None,
                  baseline: str | None = None, tokens: float | None = None, calibration_limit: int | None = None):
    """Quantize (``quant``, else the recipe's config) and attach pruning (the recipe's or a baseline's plan).
    Calibration uses the first ``calibration_limit`` questions of the calibration split (default: all 256)."""
    check_calibration_limit(calibration_limit)
    if recipe is not None and baseline is not None:
        raise ValueError("give --recipe or --baseline, not both")
    if baseline is not None and tokens is None:
        raise ValueError(f"--baseline {baseline} needs --tokens (equivalent visual tokens per layer)")
    if recipe is not None and quant is not None:
        recipe = dataclasses.replace(recipe, quant=quant.to_dict())
    elif baseline is not None:
        plan = baseline_plan_for(model, baseline, tokens)
        recipe = Recipe.from_plan(plan, expected_visual_tokens(model), quant)
    config = recipe.quant_config if recipe is not None else quant
    calib = None
    if config is not None and needs_calibration(config):
        device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
        calib = calibration_inputs(tokenizer, device, dtype, questions=calibration_split()[:calibration_limit])
    if recipe is None:
        return model if config is None else quantize_model(model, config, calib)
    return apply(model, recipe, calib)


def evaluate(
    model_name: str = "testbed",
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int = 32,
    weights_dir: str | None = None,
    output: str | Path | None = None,
    progress: bool | None = None,
    quant: QuantConfig | None = None,
    recipe: str | Path | None = None,
    baseline: str | None = None,
    tokens: float | None = None,
    references: dict[str, str | Path | EvalResult] | None = None,
    calibration_limit: int | None = None,
    version: str | None = None,
) -> EvalResult:
    """Accuracy on the test split (``limit`` questions per task) with 95% intervals; with ``references``
    (name -> result or result file), the retention against each."""
    check_model_name(model_name, "eval")
    tasks = [check_task(t) for t in (tasks or TASKS)]
    check_limit(limit)
    check_calibration_limit(calibration_limit)
    refs = {name: (r if isinstance(r, EvalResult) else load_result(r)) for name, r in (references or {}).items()}
    device, default_dtype = placement(device)
    dtype = dtype or default_dtype
    rec = Recipe.load(recipe, model_id=testbed.MODEL_ID) if recipe is not None else None
    if rec is not None:
        warn_if_recipe_for_other_weights(rec, recipe, testbed.model_hash(weights_dir))
    tb = testbed.load(device, dtype, weights_dir)
    model = prepare_model(tb.model, tb.tokenizer, quant, rec, baseline, tokens, calibration_limit)
    questions = [q for t in tasks for q in test_split(t, limit, version)]  # version: data version (default stress)
    start = time.time()
    answers = answer_questions(model, tb.tokenizer, questions, batch_size, progress=progress)
    runner = getattr(model, "runner", None)
    meta = {
        "model": testbed.MODEL_ID,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "quant": (quant or (rec.quant_config if rec else None)).short_name() if (quant or rec) else "BF16",
        "recipe": str(recipe) if recipe else None,
        "baseline": baseline,
        "schedule": list(runner.schedule) if runner is not None else None,
        "equivalent_tokens": equivalent_tokens(runner.schedule) if runner is not None else testbed.N_VISUAL_TOKENS,
        "questions_per_task": limit,
        "calibration_questions": calibration_limit,  # None: the whole calibration split (when calibrated)
        "seconds": round(time.time() - start, 1),
        "torch": torch.__version__,
        "versions": runtime_record(device)["versions"],
    }
    result = summarize(questions, answers, meta)
    result.meta["retention"] = {name: retention(result, ref) for name, ref in refs.items()}
    if output is not None:
        write_json_atomic(output, result.to_dict(with_predictions=True))
    return result
