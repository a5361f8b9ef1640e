"""Evaluating a checkpoint folder on the user's own records (the Python form of
``quota eval --model DIR --data test.jsonl``).

Answers are greedy, at most ``max_new_tokens`` tokens, stopping at the tokenizer's EOS, the generation config's
EOS ids and the chat template's end-of-turn token. Each is scored by :func:`quota.data.scoring.is_correct`
(choice accuracy for records with ``choices``, else normalized exact match). Scores are per task (the records'
``task`` field) with 95% bootstrap intervals, their mean over tasks, and, with ``references`` or
``with_references``, the retention against the full-precision model and the same low-bit model with all
tokens, as the suite reports it (:func:`quota.eval.harness.retention`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from quota.atomic import runtime_record, write_json_atomic
from quota.data.calibration import calibration_inputs, image_size, same_size_batches
from quota.data.profile import data_version, load_records
from quota.data.prompts import answer_ids, encode_batch
from quota.data.records import Record
from quota.data.scoring import is_correct
from quota.device import placement
from quota.eval.harness import EvalResult, retention, task_scores
from quota.models.checkpoint import LoadedCheckpoint, load_checkpoint
from quota.quant.config import QuantConfig
from quota.quantize.model import ProgressBar, needs_calibration, quantize_model, wants_progress
from quota.recipe import Recipe
from quota.runtime.apply import apply
from quota.runtime.baselines import baseline_plan
from quota.saved import load as load_saved
from quota.schedule import equivalent_tokens


def stop_token_ids(processor, model, record: Record) -> list[int]:
    """Token ids that end an answer: the tokenizer's EOS, the model's generation-config EOS ids and the last token
    the chat template appends to an answer (its end-of-turn), deduplicated in that order."""
    ids: list[int] = []
    gen = getattr(model, "generation_config", None)
    for value in (processor.tokenizer.eos_token_id, getattr(gen, "eos_token_id", None), answer_ids(processor, record)[-1]):
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(v, int) and v not in ids:
                ids.append(v)
    return ids


@torch.no_grad()
def answer_records(model, processor, records: Sequence[Record], batch_size: int = 16, max_new_tokens: int = 16,
                   progress: bool | None = None) -> list[str]:
    """Greedy answers (decoded, stripped) of ``model`` (a Hugging Face VLM, or the pruned model of
    :func:`quota.runtime.apply.apply`) to ``records``, in record order. Records are batched by image size."""
    param = next(model.parameters())
    stops = stop_token_ids(processor, model, records[0])
    pad = processor.tokenizer.pad_token_id
    answers: dict[int, str] = {}
    with ProgressBar(len(records), "answer records", wants_progress(progress)) as bar:
        for chunk in same_size_batches(list(records), batch_size):
            batch = encode_batch(processor, chunk, with_answers=False, device=param.device, dtype=param.dtype)
            out = model.generate(**batch.inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=stops, pad_token_id=pad if pad is not None else stops[0])
            new = out[:, batch.input_ids.shape[1]:]  # [B, T]
            for r, text in zip(chunk, processor.tokenizer.batch_decode(new, skip_special_tokens=True)):
                answers[id(r)] = text.strip()
                bar.advance()
    return [answers[id(r)] for r in records]


def score_records(records: Sequence[Record], predictions: Sequence[str], meta: dict | None = None,
                  version: str = "") -> EvalResult:
    """Per-task accuracy (tasks in order of first appearance) with 95% bootstrap intervals, the mean over tasks
    and its interval (each task resampled on its own), and every record's prediction."""
    if len(records) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} records")
    by_task: dict[str, list[bool]] = {}
    rows = []
    for r, pred in zip(records, predictions):
        ok = is_correct(r, pred)
        by_task.setdefault(r.task, []).append(ok)
        rows.append({"qid": r.id or f"line{r.line}", "task": r.task, "answer": r.answer, "prediction": pred,
                     "correct": ok, "line": r.line})
    tasks, average, ci = task_scores(by_task)
    return EvalResult(tasks, average, ci, data_version=version, meta=meta or {}, predictions=rows)


def reference_tokens(loaded: LoadedCheckpoint, records: Sequence[Record]) -> int:
    """The ``N`` a baseline's keep counts refer to: the model's fixed ``N``, or for dynamic resolution the largest
    image's among ``records`` (others run the plan as fractions, :func:`quota.schedule.resolve_schedule`)."""
    if not loaded.dynamic_resolution:
        return loaded.visual_tokens()
    return max(loaded.visual_tokens(image_size(r)) for r in records)


def checkpoint_recipe(loaded: LoadedCheckpoint, records: Sequence[Record], quant: QuantConfig | None,
                      recipe: Recipe | None, baseline: str | None, tokens: float | None) -> Recipe | None:
    """The recipe to run: ``recipe`` (its quantization replaced by ``quant`` when given), or a baseline's plan at
    ``tokens`` equivalent tokens under ``quant``, or ``None`` (no pruning)."""
    if recipe is not None and baseline is not None:
        raise ValueError("give --recipe or --baseline, not both")
    if baseline is not None and tokens is None:
        raise ValueError(f"--baseline {baseline} needs --tokens (equivalent visual tokens per layer)")
    if recipe is not None:
        return dataclasses.replace(recipe, quant=quant.to_dict()) if quant is not None else recipe
    if baseline is None:
        return None
    n_ref = reference_tokens(loaded, records)
    plan = baseline_plan(baseline, float(tokens), n_ref, len(loaded.spec.layers_of(loaded.model)))
    return Recipe.from_plan(plan, n_ref, quant, model_id=loaded.model_id, model_hash=loaded.model_hash)


def quantized_model(loaded: LoadedCheckpoint, config: QuantConfig | None, calibration: Sequence[Record] | None,
                    batch_size: int):
    """``loaded.model`` quantized per ``config`` (a copy; the model itself when ``config`` is ``None``), GPTQ and
    the clipping searches calibrated on the ``calibration`` records' prompts."""
    if config is None or config.is_identity:
        return loaded.model
    calib = None
    if needs_calibration(config):
        if not calibration:
            raise ValueError(f"{config.short_name()} calibrates GPTQ and the clipping ratios on data: give calibration "
                             f"records (--calibration-data FILE), or --quant rtn")
        param = next(loaded.model.parameters())
        calib = calibration_inputs(loaded.processor, calibration, batch_size, param.device, param.dtype)
    return quantize_model(loaded.model, config, calib)


def evaluate_checkpoint(
    folder: str | Path, data: str | Path, *, quant: QuantConfig | None = None, recipe: str | Path | None = None,
    baseline: str | None = None, tokens: float | None = None, limit: int | None = None,
    calibration_data: str | Path | None = None, calibration_limit: int | None = None, device: str | None = None,
    batch_size: int = 16, max_new_tokens: int = 16, output: str | Path | None = None, progress: bool | None = None,
    references: dict[str, EvalResult] | None = None, with_references: bool = False,
) -> EvalResult:
    """Accuracy of the checkpoint in ``folder`` on the first ``limit`` records of ``data``, quantized per ``quant``
    (else the recipe's config; calibrated on ``calibration_data``) and pruned per ``recipe`` or ``baseline``.

    Retention: against each of ``references`` (name -> result), and with ``with_references`` against the model in
    full precision with all tokens (``full_precision_all_tokens``) and the same quantized model with all tokens
    (``lowbit_all_tokens``), both answered in this run (the model is loaded and quantized once; their results are
    in ``meta["references"]``). Written to ``output`` (atomically, with every prediction) when given."""
    records = load_records(data, limit)
    calib = load_records(calibration_data, calibration_limit) if calibration_data is not None else None
    rec = Recipe.load(recipe, model_id=Path(folder).resolve().name) if recipe is not None else None
    wanted = quant or (rec.quant_config if rec is not None else None)
    if wanted is not None and needs_calibration(wanted) and not calib:
        raise ValueError(f"{wanted.short_name()} calibrates GPTQ and the clipping ratios on data: give calibration "
                         f"records (--calibration-data FILE), or --quant rtn")
    device, dtype = placement(device)
    loaded = load_checkpoint(folder, device, dtype)
    if rec is not None and rec.model_hash and rec.model_hash != loaded.model_hash:
        print(f"[quota] warning: recipe {recipe} was solved for other weights (model hash {rec.model_hash[:12]}, "
              f"these weights {loaded.model_hash[:12]})", file=sys.stderr, flush=True)
    plan = checkpoint_recipe(loaded, records, quant, rec, baseline, tokens)
    config = plan.quant_config if plan is not None else quant
    version = data_version(data, records)
    refs = dict(references or {})

    def run(model) -> EvalResult:
        return score_records(records, answer_records(model, loaded.processor, records, batch_size, max_new_tokens,
                                                     progress), version=version)

    if with_references:
        refs["full_precision_all_tokens"] = run(loaded.model)
    model = quantized_model(loaded, config, calib, batch_size)
    if with_references and model is not loaded.model:
        refs["lowbit_all_tokens"] = run(model)
    if plan is not None and plan.prunes:
        model = apply(model, dataclasses.replace(plan, quant=None))  # already quantized: attach the pruning only
    start = time.time()
    result = run(model)
    runner = getattr(model, "runner", None)
    result.meta = {
        "model": loaded.model_id, "model_class": loaded.model_class, "model_hash": loaded.model_hash,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "quant": config.short_name() if config is not None else str(dtype).replace("torch.", "").upper(),
        "recipe": str(recipe) if recipe else None, "baseline": baseline,
        "schedule": list(runner.schedule) if runner is not None else None,
        "reference_tokens": runner.reference_tokens if runner is not None else None,
        "equivalent_tokens": equivalent_tokens(runner.schedule) if runner is not None else None,
        "records": len(records), "data": str(data), "calibration_records": len(calib) if calib else 0,
        "seconds": round(time.time() - start, 1), "versions": runtime_record(device)["versions"],
        "retention": {name: retention(result, ref) for name, ref in refs.items()},
    }
    if with_references:
        result.meta["references"] = {name: {"average": r.average, "tasks": {t: s.accuracy for t, s in r.tasks.items()}}
                                     for name, r in refs.items()}
    if output is not None:
        write_json_atomic(output, result.to_dict(with_predictions=True))
    return result


def evaluate_saved(folder: str | Path, data: str | Path, *, limit: int | None = None, device: str | None = None,
                   batch_size: int = 16, max_new_tokens: int = 16, output: str | Path | None = None,
                   progress: bool | None = None, references: dict[str, EvalResult] | None = None) -> EvalResult:
    """Accuracy of a checkpoint saved by ``quota quantize`` (:func:`quota.saved.load`: quantized, and pruned when
    its recipe prunes) on the first ``limit`` records of ``data``; otherwise as :func:`evaluate_checkpoint`."""
    records = load_records(data, limit)
    saved = load_saved(folder, device)
    if saved.manifest["source"].get("kind") == "testbed":
        raise ValueError(f"{folder} holds the quantized testbed: evaluate it with `quota eval` (its test split)")
    start = time.time()
    result = score_records(records, answer_records(saved.model, saved.processor, records, batch_size,
                                                   max_new_tokens, progress), version=data_version(data, records))
    runner = getattr(saved.model, "runner", None)
    param = next(saved.module.parameters())
    source = saved.manifest["source"]
    result.meta = {
        "model": source["model_id"], "model_class": source["model_class"], "model_hash": source["model_hash"],
        "saved_checkpoint": str(folder), "device": torch.cuda.get_device_name() if param.is_cuda else "cpu",
        "dtype": str(param.dtype).replace("torch.", ""), "quant": saved.quant_config.short_name(),
        "recipe": "stored" if saved.recipe is not None else None, "baseline": None,
        "schedule": list(runner.schedule) if runner is not None else None,
        "reference_tokens": runner.reference_tokens if runner is not None else None,
        "equivalent_tokens": equivalent_tokens(runner.schedule) if runner is not None else None,
        "records": len(records), "data": str(data), "seconds": round(time.time() - start, 1),
        "versions": runtime_record(param.device.type)["versions"],
        "retention": {name: retention(result, ref) for name, ref in (references or {}).items()},
    }
    if output is not None:
        write_json_atomic(output, result.to_dict(with_predictions=True))
    return result
