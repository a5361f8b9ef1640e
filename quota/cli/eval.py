"""``quota eval``: accuracy of a model on the synthetic suite's test split, or of a checkpoint folder on the user's
records (``--model DIR --data test.jsonl``), with retention."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model on the synthetic VQA test split")
    p.add_argument("--model", default="testbed",
                   help="model to evaluate: 'testbed' (default) or a local checkpoint folder of a supported class")
    p.add_argument("--data", default=None, metavar="FILE",
                   help="test records (JSONL: image, question, answer, optional choices and task) for --model DIR; "
                        "scored by exact match, or choice accuracy where a record has choices")
    p.add_argument("--calibration-data", default=None, metavar="FILE",
                   help="--model DIR: records whose prompts calibrate GPTQ and the clipping searches (not the test "
                        "records); --calibration N takes the first N of them")
    p.add_argument("--references", action="store_true",
                   help="--model DIR: also answer in full precision with all tokens and with the low-bit model with "
                        "all tokens, in this run, and report the retention against both")
    p.add_argument("--max-new-tokens", type=int, default=16, help="--model DIR: longest answer, in tokens (default 16)")
    p.add_argument("--recipe", default=None, help="recipe JSON: quantization and pruning schedule")
    p.add_argument("--baseline", default=None, help="stage-wise pruning preset: fastv, pyramiddrop, "
                        "sparsevlm (with recycling), sparsevlm_norecycle, visionzip (with merging), "
                        "visionzip_nomerge, divprune, cdpruner, random")
    p.add_argument("--tokens", type=float, default=None, help="equivalent visual tokens per layer for --baseline")
    p.add_argument("--quant", default=None, help="QuantConfig JSON file, 'w4a4kv4' for the default low-bit config, or 'rtn' for its bits "
                        "without calibration (round-to-nearest weights, fixed activation clip)")
    p.add_argument("--tasks", nargs="*", help="task names (default: all)")
    p.add_argument("--limit", type=int, default=None,
                   help="first LIMIT test questions of each task (--data: first LIMIT records), >= 1 (default: all)")
    p.add_argument("--device", default=None,
                   help="torch device to run on, e.g. cuda, cuda:1 or cpu (default: cuda when available, else cpu; "
                        "bf16 on CUDA, float32 on the CPU)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="questions answered per generate call; changes speed and memory, not the answers (default 32)")
    p.add_argument("--calibration", type=int, default=None, metavar="N",
                   help="calibrate the low-bit model on the first N calibration questions (default: all 256)")
    p.add_argument("--weights", default=None, help="folder of testbed weights (default: the shipped ones)")
    p.add_argument("--ref-bf16", default=None, help="result JSON of bf16 with all tokens (for retention)")
    p.add_argument("--ref-lowbit", default=None, help="result JSON of the same low-bit model with all tokens")
    p.add_argument("-o", "--output", default=None, help="write the JSON result here (atomically)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--by-form", action="store_true",
                   help="also print accuracy per question form within each task (the JSON always holds it)")
    p.add_argument("--data-version", default="stress",
                   choices=("stress", "natural", "synthvqa-v1", "natural-v1"),
                   help="testbed suite: stress (synthvqa-v1, dense scenes; default) or natural (natural-v1, "
                        "density calibrated to FastV's published curve; docs/natural_suite.md)")
    p.add_argument("--suite", default=None, metavar="DIR",
                   help="comparison suite into DIR: all-token references and every --plans x --budgets row, "
                        "in bf16 and on the low-bit model (loaded and quantized once)")
    p.add_argument("--plans", nargs="*",
                   default=["fastv", "pyramiddrop", "sparsevlm", "sparsevlm_norecycle", "visionzip", "visionzip_nomerge",
                            "divprune", "cdpruner", "random"],
                   help="suite plans: baseline names (default: every stage-wise preset), fastv_keep, or recipe:PATH")
    p.add_argument("--budgets", nargs="*", type=float, default=[64, 128, 192], help="suite budgets (equivalent tokens)")
    p.add_argument("--precisions", nargs="*", default=["bf16", "lowbit"], choices=("bf16", "lowbit"),
                   help="suite: which models to run the plans on (default both)")
    p.add_argument("--resume", nargs="?", const="strict", default=None, choices=("strict", "recompute"),
                   help="suite: keep the rows already in DIR; plain --resume keeps only rows measured with exactly "
                        "these settings (model, quantization, questions, versions, device) and refuses otherwise, "
                        "--resume=recompute evaluates rows of other settings again")
    p.add_argument("--report-only", action="store_true",
                   help="suite: evaluate nothing; write suite.md from the rows already in DIR and list the missing")
    p.add_argument("--paired-against", default=None, metavar="ROW",
                   help="suite: the row every other row's paired difference is taken against, e.g. lowbit/all "
                        "(default: each pruned row against the best stage-wise row of its precision at its budget)")
    p.set_defaults(func=run)


def parse_quant(value: str | None):
    from quota.quant.config import QuantConfig

    if value is None:
        return None
    if value.lower() in ("w4a4kv4", "default"):
        return QuantConfig(impl="auto")
    if value.lower() == "rtn":  # the same bits, round-to-nearest weights and a fixed activation clip: no calibration
        return QuantConfig(impl="auto", weight_method="rtn", a_clip_search=False)
    with open(value) as f:
        return QuantConfig.from_dict(json.load(f))


def run(args: argparse.Namespace) -> int:
    from quota.eval.run import check_limit, evaluate

    from quota.models.registry import check_model_name

    check_limit(args.limit)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    model = check_model_name(args.model, "eval", folders=True)
    if model != "testbed":
        return run_checkpoint(args, model)
    for flag, value in (("--data", args.data), ("--calibration-data", args.calibration_data)):
        if value is not None:
            raise ValueError(f"{flag} is for a checkpoint folder (--model DIR); the testbed has its own splits")
    if args.suite:
        from quota.eval.suite import markdown, run_suite

        results = run_suite(args.suite, args.plans, args.budgets, parse_quant(args.quant), args.limit, args.tasks,
                            args.batch_size, args.device, precisions=args.precisions, resume=args.resume or False,
                            weights_dir=args.weights, report_only=args.report_only,
                            calibration_limit=args.calibration, paired_against=args.paired_against,
                            version=args.data_version)
        print(markdown(results))
        return 0
    refs = {k: v for k, v in (("bf16_all_tokens", args.ref_bf16), ("lowbit_all_tokens", args.ref_lowbit)) if v}
    result = evaluate(args.model, args.tasks, args.limit, args.device, None, args.batch_size, args.weights,
                      args.output, quant=parse_quant(args.quant), recipe=args.recipe, baseline=args.baseline,
                      tokens=args.tokens, references=refs, calibration_limit=args.calibration,
                      version=args.data_version)
    return print_result(result, args)


def run_checkpoint(args: argparse.Namespace, folder: str) -> int:
    """``quota eval --model DIR --data FILE``: :func:`quota.eval.records.evaluate_checkpoint`."""
    from quota.eval.records import evaluate_checkpoint
    from quota.eval.run import load_result

    if args.data is None:
        raise ValueError(f"--model {folder} is a checkpoint folder: give its test records with --data FILE")
    if args.suite:
        raise ValueError("--suite runs the testbed's synthetic suite; for a checkpoint folder use --data")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    refs = {k: load_result(v) for k, v in (("bf16_all_tokens", args.ref_bf16), ("lowbit_all_tokens", args.ref_lowbit)) if v}
    if (Path(folder) / "quota_checkpoint.json").is_file():  # saved by quota quantize: run as it was saved
        from quota.eval.records import evaluate_saved

        for flag, value in (("--recipe", args.recipe), ("--quant", args.quant), ("--baseline", args.baseline),
                            ("--calibration-data", args.calibration_data), ("--references", args.references or None)):
            if value is not None:
                raise ValueError(f"{flag}: {folder} is a saved quantized checkpoint, run with the recipe it stores; "
                                 f"give {flag} with the source checkpoint folder instead")
        result = evaluate_saved(folder, args.data, limit=args.limit, device=args.device, batch_size=args.batch_size,
                                max_new_tokens=args.max_new_tokens, output=args.output, references=refs)
        return print_result(result, args)
    result = evaluate_checkpoint(
        folder, args.data, quant=parse_quant(args.quant), recipe=args.recipe, baseline=args.baseline,
        tokens=args.tokens, limit=args.limit, calibration_data=args.calibration_data,
        calibration_limit=args.calibration, device=args.device, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, output=args.output, references=refs, with_references=args.references,
    )
    return print_result(result, args)


def print_result(result, args: argparse.Namespace) -> int:
    """The result as JSON (``--json``) or as a rich table, then the retention lines."""
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    m = result.meta
    tokens = "all tokens" if m.get("equivalent_tokens") is None else f"{m['equivalent_tokens']:.0f} equivalent tokens"
    title = (f"{m['model']} {m['quant']}, {tokens}"
             f"{' (' + m['baseline'] + ')' if m['baseline'] else ''} on {result.data_version} ({m['device']})")
    table = Table(title=title)
    for col in ("task", "accuracy", "95% interval", "n"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for task, s in result.tasks.items():
        table.add_row(task, f"{100 * s.accuracy:.1f}%", f"{100 * s.ci_low:.1f}-{100 * s.ci_high:.1f}", str(s.n))
    lo, hi = result.average_ci
    table.add_row("average", f"{100 * result.average:.1f}%", f"{100 * lo:.1f}-{100 * hi:.1f}", "", style="bold")
    console = Console()
    console.print(table)
    for name, value in m.get("retention", {}).items():
        console.print(f"retention vs {name}: {100 * value:.2f}%")
    if getattr(args, "by_form", False) and result.forms:
        console.print(form_table(result))
    return 0


def form_table(result):
    """A rich table of accuracy per question form within each task (``EvalResult.forms``)."""
    from rich.table import Table

    table = Table(title="accuracy per question form")
    for col in ("task", "form", "accuracy", "n"):
        table.add_column(col, justify="left" if col in ("task", "form") else "right")
    for task, forms in result.forms.items():
        for i, (form, score) in enumerate(forms.items()):
            table.add_row(task if i == 0 else "", form, f"{100 * score['accuracy']:.1f}%", str(score["n"]))
    return table
