"""``quota bench``: speed measurements. ``quota bench kernels [--out DIR] [--quick]`` times the Triton
kernels against PyTorch baselines on the current CUDA device and writes ``bench_kernels.json`` and
``bench_kernels.md``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="speed benchmarks")
    sub = bench.add_subparsers(dest="bench_command", metavar="WHAT")
    kernels = sub.add_parser("kernels", help="time the Triton kernels against PyTorch baselines (CUDA)")
    kernels.add_argument("--out", type=Path, default=None, help="folder for bench_kernels.json and bench_kernels.md")
    kernels.add_argument("--quick", action="store_true", help="fewer shapes and shorter timings")
    kernels.add_argument("--json", action="store_true", help="print the JSON result instead of the table")
    kernels.set_defaults(func=run_kernels)
    bench.set_defaults(func=lambda args: bench.print_help() or 0)


def run_kernels(args: argparse.Namespace) -> int:
    from quota.kernels.benchmark import render_markdown, run_all

    result = run_all(quick=args.quick)
    text = render_markdown(result)
    if args.out is not None:
        from quota.atomic import write_text_atomic

        write_text_atomic(args.out / "bench_kernels.json", json.dumps(result, indent=1, default=str) + "\n")
        write_text_atomic(args.out / "bench_kernels.md", text)
    print(json.dumps(result, indent=1, default=str) if args.json else text)
    return 0  # a missed target is a measurement, reported in the table, not an error
