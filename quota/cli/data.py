"""``quota data export``: the synthetic suite written as user data (``records.jsonl`` + PNG images), and
``quota data check``: read a JSONL data file and report every bad record."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="export the synthetic suite as JSONL data, or check a JSONL data file")
    verbs = p.add_subparsers(dest="data_command", metavar="ACTION")
    export = verbs.add_parser("export", help="write the synthetic suite as records.jsonl + images/ (atomically)")
    export.add_argument("--split", default="test", choices=("test", "calibration"),
                        help="test: the first LIMIT questions of each task; calibration: the first LIMIT of 256")
    export.add_argument("--limit", type=int, default=None, help="questions per task (test) or in all (calibration)")
    export.add_argument("--task", action="append", default=None,
                        help="export only this task (repeatable; default: every task)")
    export.add_argument("--out", required=True, help="folder to create (refused if it exists, unless --overwrite)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out once the new one is whole")
    export.set_defaults(func=run_export)
    check = verbs.add_parser("check", help="read a JSONL data file, decode its images, list every bad record")
    check.add_argument("file")
    check.set_defaults(func=run_check)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def run_export(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    from quota.testbed.export import export_suite

    try:
        result = export_suite(args.out, split=args.split, limit=args.limit, tasks=args.task, overwrite=args.overwrite)
    except FileExistsError as err:  # bad input for the command line: one line, exit status 2
        raise ValueError(str(err)) from None
    print(f"wrote {result.records} records of the {result.split} split to {result.folder}/records.jsonl")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from collections import Counter

    from quota.data.records import read_records

    records = read_records(args.file)
    tasks = Counter(r.task for r in records)
    choices = sum(r.choices is not None for r in records)
    print(f"{args.file}: {len(records)} records, all images decode; tasks "
          + ", ".join(f"{t} {n}" for t, n in sorted(tasks.items()))
          + (f"; {choices} multiple-choice" if choices else ""))
    return 0
