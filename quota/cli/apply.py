"""``quota apply RECIPE``: apply a recipe to the testbed (quantize, attach the pruning runtime) and answer
test questions with it, showing what each layer kept."""

from __future__ import annotations

import argparse
import json
import math


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("apply", help="apply a recipe to the testbed and answer test questions with it")
    p.add_argument("recipe", help="recipe JSON written by `quota solve`")
    p.add_argument("--model", default="testbed", help="model to apply the recipe to (default: testbed)")
    p.add_argument("--weights", default=None, help="folder of testbed weights (default: the shipped ones)")
    p.add_argument("--questions", type=int, default=5, help="test questions to answer, spread over the tasks")
    p.add_argument("--calibration", type=int, default=None, metavar="N",
                   help="calibrate the low-bit model on the first N calibration questions (default: all 256; "
                        "GPTQ over all of them is slow on a CPU)")
    p.add_argument("--device", default=None)
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


def run(args: argparse.Namespace) -> int:
    from quota.device import placement
    from quota.eval.harness import answer_questions
    from quota.eval.run import check_calibration_limit, prepare_model
    from quota.testbed.tasks import score
    from quota.models.registry import check_model_name
    from quota.recipe import Recipe
    from quota.testbed import model as testbed

    check_model_name(args.model, "apply")
    check_calibration_limit(args.calibration)
    recipe = Recipe.load(args.recipe, model_id=testbed.MODEL_ID)
    questions = spread_questions(args.questions)
    device, dtype = placement(args.device)
    tb = testbed.load(device, dtype, args.weights)
    same_weights = recipe.model_hash == testbed.model_hash(args.weights)
    model = prepare_model(tb.model, tb.tokenizer, None, recipe, calibration_limit=args.calibration)
    predictions = answer_questions(model, tb.tokenizer, questions, batch_size=len(questions), progress=False)
    runner = getattr(model, "runner", None)
    kept = [int(k.shape[-1]) for k in runner.kept_indices] if runner is not None and runner.kept_indices else None
    rows = [{"task": q.task, "question": q.question, "answer": q.answer, "prediction": p, "correct": score(p, q.answer)}
            for q, p in zip(questions, predictions)]
    summary = {"recipe": str(args.recipe), "quant": recipe.quant_config.short_name() if recipe.quant else "BF16", "schedule": list(recipe.schedule),
               "equivalent_tokens": recipe.equivalent_tokens, "kept_per_layer_last_batch": kept,
               "recipe_matches_weights": same_weights, "answers": rows}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not same_weights:
        console.print("[yellow]warning:[/yellow] the recipe was solved for other testbed weights (model hash differs)")
    console.print(f"{summary['quant']}, {recipe.equivalent_tokens:.1f} equivalent visual tokens; "
                  f"kept per layer: {kept if kept is not None else 'all'}")
    table = Table()
    for col in ("task", "question", "answer", "prediction"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["task"], r["question"], r["answer"], ("" if r["correct"] else "[red]") + r["prediction"])
    console.print(table)
    return 0
