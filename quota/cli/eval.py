"""``quota eval``: accuracy of a model on the synthetic suite's test split."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model on the synthetic VQA test split")
    p.add_argument("--model", default="testbed", help="model to evaluate (default: testbed)")
    p.add_argument("--tasks", nargs="*", help="task names (default: all)")
    p.add_argument("--limit", type=int, default=None, help="questions per task (default: all)")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--weights", default=None, help="folder of testbed weights (default: the shipped ones)")
    p.add_argument("-o", "--output", default=None, help="write the JSON result here (atomically)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from quota.eval.run import evaluate

    result = evaluate(args.model, args.tasks, args.limit, args.device, None, args.batch_size, args.weights, args.output)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.meta['model']} on {result.data_version} ({result.meta['device']}, {result.meta['dtype']})")
    for col in ("task", "accuracy", "95% interval", "n"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for task, s in result.tasks.items():
        table.add_row(task, f"{100 * s.accuracy:.1f}%", f"{100 * s.ci_low:.1f}-{100 * s.ci_high:.1f}", str(s.n))
    lo, hi = result.average_ci
    table.add_row("average", f"{100 * result.average:.1f}%", f"{100 * lo:.1f}-{100 * hi:.1f}", "", style="bold")
    Console().print(table)
    return 0
