"""``quota apply RECIPE``: apply a recipe to the testbed (quantize, attach the pruning runtime) and answer
test questions with it, showing what each layer kept, each answer marked right or wrong, and the score."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

QUANT_CHOICES = ("recipe", "rtn")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("apply", help="apply a recipe to the testbed and answer test questions with it")
    p.add_argument("recipe", help="recipe JSON written by `quota solve`")
    p.add_argument("--model", default="testbed",
                   help="model to apply the recipe to: 'testbed' (default) or a checkpoint folder (with --data)")
    p.add_argument("--data", default=None, metavar="FILE",
                   help="--model DIR: records (JSONL) whose first --questions are answered")
    p.add_argument("--calibration-data", default=None, metavar="FILE",
                   help="--model DIR: records that calibrate GPTQ and the clipping searches (--calibration N: the "
                        "first N); not needed with --quant rtn")
    p.add_argument("--weights", default=None, help="folder of testbed weights (default: the shipped ones)")
    p.add_argument("--questions", type=int, default=5, help="test questions to answer, spread over the tasks")
    p.add_argument("--calibration", type=int, default=None, metavar="N",
                   help="calibrate the low-bit model on the first N calibration questions (default: all 256; "
                        "GPTQ over all of them is slow on a CPU)")
    p.add_argument("--quant", default="recipe", metavar="recipe|rtn|FILE",
                   help="quantization: 'recipe' (default) the recipe's own config (GPTQ and calibrated clipping: "
                        "minutes on a CPU, then kept in the quantized-model cache); 'rtn' the same bits by "
                        "round-to-nearest with a fixed activation clip and no calibration (seconds: a quick CPU "
                        "demo, less accurate than the recipe's config); or a QuantConfig JSON file")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when there is one)")
    p.add_argument("--json", action="store_true", help="print the answers and the run as JSON")
    p.set_defaults(func=run)


def spread_questions(count: int):
    """The first ``count`` test questions taken round-robin over the tasks (question ``i`` of every task
    before question ``i + 1`` of any)."""
    from quota.testbed.splits import test_split
    from quota.testbed.tasks import TASKS

    if count < 1:
        raise ValueError(f"--questions must be at least 1, got {count}")
    per_task = math.ceil(count / len(TASKS))
    by_task = [test_split(t, per_task) for t in TASKS]
    return [by_task[t][i] for i in range(per_task) for t in range(len(TASKS))][:count]


def quant_config_for(recipe, choice: str, calibration: int | None):
    """The :class:`~quota.quant.config.QuantConfig` to apply (``None``: full precision) for ``--quant choice``:
    ``recipe`` (the recipe's), ``rtn`` (the recipe's bits, round-to-nearest weights, fixed activation clip: no
    calibration) or a QuantConfig JSON file (given the recipe's per-layer precision and KV bits when it has none of its
    own). ``ValueError`` names ``--quant`` or ``--calibration`` when the
    choice cannot apply."""
    from quota.quant.config import QuantConfig

    if choice == "recipe":
        return recipe.quant_config
    if choice == "rtn":
        config = recipe.quant_config
        if config is None or config.is_identity:
            raise ValueError("--quant rtn: the recipe quantizes nothing (full precision); leave --quant out")
        if calibration is not None:
            raise ValueError("--calibration: --quant rtn calibrates nothing; leave one of them out")
        return config.replace(weight_method="rtn", a_clip_search=False)
    try:
        with open(choice) as f:
            return recipe.with_precision(QuantConfig.from_dict(json.load(f)))  # the recipe's per-layer precision
    except FileNotFoundError:
        raise ValueError(f"--quant must be one of {list(QUANT_CHOICES)} or a QuantConfig JSON file, got {choice!r}")


def quant_label(config, choice: str) -> str:
    """``W4A4-KV4 (GPTQ)``-style description of what was applied."""
    if config is None or config.is_identity:
        return "BF16"
    method = config.weight_method.upper() if config.quantizes_weights else "no weight quantization"
    return f"{config.short_name()} ({method}{', --quant rtn: no calibration' if choice == 'rtn' else ''})"


def prepare(tb, recipe, config, weights, calibration):
    """The testbed quantized per ``config`` (through the quantized-model cache, so a second run loads it) with
    ``recipe``'s pruning attached."""
    from quota.runtime.apply import apply
    from quota.testbed.quantized import quantize_testbed

    model = tb.model
    if config is not None and not config.is_identity:
        model = quantize_testbed(model, tb.tokenizer, config, weights, calibration_limit=calibration)
    return apply(model, dataclasses.replace(recipe, quant=None))


def run(args: argparse.Namespace) -> int:
    from quota.device import placement
    from quota.eval.harness import answer_questions
    from quota.eval.run import check_calibration_limit
    from quota.models.registry import check_model_name
    from quota.recipe import Recipe
    from quota.testbed import model as testbed
    from quota.testbed.tasks import score

    model_name = check_model_name(args.model, "apply", folders=True)
    check_calibration_limit(args.calibration)
    if model_name != "testbed":
        return run_folder(args)
    for flag, value in (("--data", args.data), ("--calibration-data", args.calibration_data)):
        if value is not None:
            raise ValueError(f"{flag} is for a checkpoint folder (--model DIR); the testbed has its own splits")
    recipe = Recipe.load(args.recipe, model_id=testbed.MODEL_ID)
    config = quant_config_for(recipe, args.quant, args.calibration)
    questions = spread_questions(args.questions)
    device, dtype = placement(args.device)
    tb = testbed.load(device, dtype, args.weights)
    same_weights = recipe.model_hash == testbed.model_hash(args.weights)
    start = time.monotonic()
    model = prepare(tb, recipe, config, args.weights, args.calibration)
    quantize_s = time.monotonic() - start
    predictions = answer_questions(model, tb.tokenizer, questions, batch_size=len(questions))
    rows = [{"task": q.task, "question": q.question, "answer": q.answer, "prediction": p, "correct": score(p, q.answer)}
            for q, p in zip(questions, predictions)]
    return report(args, recipe, config, model, rows, quantize_s, same_weights)


def report(args: argparse.Namespace, recipe, config, runnable, rows: list[dict], quantize_s: float,
           same_weights: bool, **extra) -> int:
    """The run's summary (``extra`` keys first; ``runnable``: the model that answered): printed as JSON with
    ``--json``, else as :func:`print_answers`."""
    runner = getattr(runnable, "runner", None)
    kept = [int(k.shape[-1]) for k in runner.kept_indices] if runner is not None and runner.kept_indices else None
    summary = {"recipe": str(args.recipe), **extra, "quant": config.short_name() if config is not None else "BF16",
               "quant_choice": args.quant, "schedule": list(recipe.schedule),
               "equivalent_tokens": recipe.equivalent_tokens, "kept_per_layer_last_batch": kept,
               "recipe_matches_weights": same_weights, "correct": sum(r["correct"] for r in rows),
               "questions": len(rows), "quantize_seconds": round(quantize_s, 1), "answers": rows}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print_answers(summary, quant_label(config, args.quant), same_weights)
    return 0


def run_folder(args: argparse.Namespace) -> int:
    """``quota apply RECIPE --model DIR --data FILE``: quantize the checkpoint per the recipe (or ``--quant``),
    attach its pruning and answer the first ``--questions`` records, each marked right or wrong."""
    from pathlib import Path

    from quota.data.profile import load_records
    from quota.device import placement
    from quota.eval.records import answer_records, quantized_model
    from quota.models.checkpoint import load_checkpoint
    from quota.data.scoring import is_correct
    from quota.quantize.model import needs_calibration
    from quota.recipe import Recipe
    from quota.runtime.apply import apply

    if args.data is None:
        raise ValueError(f"--model {args.model} is a checkpoint folder: give the records to answer with --data FILE")
    if args.questions < 1:
        raise ValueError(f"--questions must be at least 1, got {args.questions}")
    recipe = Recipe.load(args.recipe, model_id=Path(args.model).resolve().name)
    config = quant_config_for(recipe, args.quant, args.calibration if args.calibration_data else None)
    if config is not None and needs_calibration(config) and args.calibration_data is None:
        raise ValueError(f"{config.short_name()} calibrates GPTQ and the clipping ratios on data: give "
                         f"--calibration-data FILE, or --quant rtn")
    records = load_records(args.data, args.questions)
    calib = load_records(args.calibration_data, args.calibration) if args.calibration_data else None
    device, dtype = placement(args.device)
    loaded = load_checkpoint(args.model, device, dtype)
    same_weights = not recipe.model_hash or recipe.model_hash == loaded.model_hash
    start = time.monotonic()
    model = apply(quantized_model(loaded, config, calib, 8), dataclasses.replace(recipe, quant=None))
    quantize_s = time.monotonic() - start
    predictions = answer_records(model, loaded.processor, records, batch_size=8)
    rows = [{"task": r.task, "question": r.question, "answer": r.answer, "prediction": p, "correct": is_correct(r, p)}
            for r, p in zip(records, predictions)]
    return report(args, recipe, config, model, rows, quantize_s, same_weights, model=str(args.model))


def score_line(correct: int, total: int) -> str:
    """``3/5 correct (60%)``."""
    return f"{correct}/{total} correct ({100 * correct / total:.0f}%)"


def print_answers(summary: dict, label: str, same_weights: bool) -> None:
    """The run's header, a table of the answers (a ✓/✗ column, so wrong answers show without colour) and the
    score line."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not same_weights:
        console.print("[yellow]warning:[/yellow] the recipe was solved for other testbed weights (model hash differs)")
    kept = summary["kept_per_layer_last_batch"]
    console.print(f"{label}, quantized in {summary['quantize_seconds']:.0f} s; "
                  f"{summary['equivalent_tokens']:.1f} equivalent visual tokens; "
                  f"kept per layer: {kept if kept is not None else 'all'}")
    table = Table()
    for col in ("", "task", "question", "answer", "prediction"):
        table.add_column(col)
    for r in summary["answers"]:
        mark = "[green]✓[/green]" if r["correct"] else "[red]✗[/red]"
        prediction = escape(r["prediction"]) if r["correct"] else f"[red]{escape(r['prediction'])}[/red]"
        table.add_row(mark, r["task"], escape(r["question"]), escape(r["answer"]), prediction)
    console.print(table)
    console.print(score_line(summary["correct"], summary["questions"]))
