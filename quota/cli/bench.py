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
    e2e = sub.add_parser("e2e", help="time to first token, decode speed and memory of a VLM-shaped model")
    e2e.add_argument("--arch", default="llava-1.5-7b",
                     help="architecture (random weights): llava-1.5-7b, qwen2-vl-7b, tiny-llava, tiny-qwen2-vl")
    e2e.add_argument("--model", default=None, metavar="DIR",
                     help="a checkpoint folder (LLaVA-1.5 or Qwen2-VL) whose config.json replaces --arch (its weights "
                          "are not read: speed does not depend on them)")
    e2e.add_argument("--batches", nargs="*", type=int, default=[1, 16])
    e2e.add_argument("--prompt-tokens", type=int, default=64)
    e2e.add_argument("--new-tokens", type=int, default=512)
    e2e.add_argument("--budget", type=float, default=0.3, help="pruned variant's mean keep ratio (default 0.3)")
    e2e.add_argument("--recipe", default=None, help="use this recipe's schedule for the pruned variant; a recipe with "
                     "per-layer precision (version 3) adds a row of that mixed-precision model with its schedule")
    e2e.add_argument("--repeats", type=int, default=3)
    e2e.add_argument("--eager", action="store_true",
                     help="prefill and decode through the eager per-layer loop instead of replaying CUDA graphs")
    e2e.add_argument("--out", type=Path, default=None, help="write bench_e2e_<arch>.json and .md here")
    e2e.set_defaults(func=run_e2e)
    bench.set_defaults(func=lambda args: bench.print_help() or 0)


def run_kernels(args: argparse.Namespace) -> int:
    from quota.bench.kernels import render_markdown, run_all

    result = run_all(quick=args.quick)
    text = render_markdown(result)
    if args.out is not None:
        from quota.atomic import write_text_atomic

        write_text_atomic(args.out / "bench_kernels.json", json.dumps(result, indent=1, default=str) + "\n")
        write_text_atomic(args.out / "bench_kernels.md", text)
    print(json.dumps(result, indent=1, default=str) if args.json else text)
    return 0  # a missed target is a measurement, reported in the table, not an error


def run_e2e(args: argparse.Namespace) -> int:
    import torch

    from quota.bench.e2e import CPU_NOTE, format_gib, run_speed

    def ratio(value: float) -> str:
        return "-" if value != value else f"{value:.2f}x"  # NaN: no such baseline row in this run

    schedule, source_visual, precision, kv_bits = None, None, None, None
    if args.recipe:
        from quota.recipe import Recipe

        recipe = Recipe.load(args.recipe)
        schedule, source_visual = recipe.schedule, recipe.n_visual_tokens
        precision, kv_bits = recipe.layer_precision, recipe.layer_kv_bits
    if args.model is not None:
        args.arch = args.model
    rows = run_speed(args.arch, args.batches, args.prompt_tokens, args.new_tokens, args.budget, args.repeats,
                     schedule=schedule, source_visual=source_visual, static=not args.eager,
                     layer_precision=precision, layer_kv_bits=kv_bits)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    head = ("| variant | batch | mean visual tokens | TTFT ms | TTFT vs bf16 / FP8 | decode tok/s | decode vs bf16 / "
            "FP8 | image encoder ms (share of TTFT) | peak GiB | KV cache MiB | KV MiB after prefill |")
    lines = [f"# End-to-end speed: {args.arch} (random weights) on {device}", "",
             f"One image + {args.prompt_tokens} prompt tokens, {args.new_tokens} generated tokens, median of "
             f"{args.repeats} runs after a warm-up; prefill and decode "
             + ("eager" if args.eager else "replayed from CUDA graphs where there is CUDA")
             + " (decode rate over steps 3 on)."]
    if device == "cpu":
        lines += ["", CPU_NOTE]
    lines += ["", head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.variant} | {r.batch} | {r.schedule_mean:.1f} | {r.ttft_ms:.1f} | "
                     f"{ratio(r.ttft_vs_bf16)} / {ratio(r.ttft_vs_fp8)} | {r.decode_tokens_per_s:.1f} | "
                     f"{ratio(r.decode_vs_bf16)} / {ratio(r.decode_vs_fp8)} | "
                     f"{r.vision_ms:.1f} ({100 * r.vision_ms / r.ttft_ms:.0f}%) | {format_gib(r.peak_memory_gib)} | "
                     f"{r.kv_cache_mib:.1f} | {r.kv_prompt_mib:.1f} |")
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        from quota.atomic import write_json_atomic, write_text_atomic

        stem = f"bench_e2e_{Path(args.arch).name}"
        write_json_atomic(args.out / f"{stem}.json", {"device": device, "arch": args.arch,
                                                      "mode": "eager" if args.eager else "static",
                                                      "rows": [r.to_dict() for r in rows]})
        write_text_atomic(args.out / f"{stem}.md", text)
    print(text)
    return 0
