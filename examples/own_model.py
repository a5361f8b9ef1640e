"""Your own VLM and data, end to end in Python: profile -> a custom objective -> solve -> quantize -> save -> load ->
generate.

    python examples/own_model.py --model DIR --calib calib.jsonl --test test.jsonl --work WORK \\
        --budget 0.3 --kv-share 0.35 --task-weight reading=2

DIR is a local Hugging Face checkpoint of a supported class (LLaVA-1.5, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL,
Idefics3, SmolVLM) with its processor files; the JSONL files hold records (``image``, ``question``, ``answer``,
optional ``choices`` and ``task``), e.g. written by ``quota data export``.

1. **Profile** the checkpoint under W4A4+KV4 (GPTQ calibrated on ``calib``): per-layer, per-task damage curves.
2. **Objective**: the per-task damage weighted by ``--task-weight`` (every other task weighs 1), under a budget of
   ``--budget`` of the visual tokens and a cap on the KV cache of ``--kv-share`` of the all-token cache.
3. **Solve** it exactly (:func:`quota.solve`) into a recipe.
4. **Quantize and save** the model with the recipe as a self-contained folder (the quantization is the profile's,
   read back from the quantized-model cache, not calibrated twice).
5. **Load** it (:func:`quota.load`: no calibration, the recipe's pruning attached) and **generate** answers to
   ``test``, scored by exact match or choice accuracy.

It prints one JSON object: the schedule, its budget and KV share, the accuracy and where the files are.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import quota
from quota.device import placement
from quota.data.profile import data_version, load_records, profile_checkpoint, quantize_on_records
from quota.eval.records import answer_records, score_records
from quota.models.checkpoint import load_checkpoint
from quota.profiling.measure import ProfileSettings
from quota.saved import Source, save


def objective(profile: quota.Profile, task_weight: dict[str, float], kv_share: float) -> dict:
    """``quota.solve`` keywords: the per-task damage, weighted, under a KV-cache cap of ``kv_share`` of all tokens'."""
    unknown = sorted(set(task_weight) - set(profile.per_task))
    if unknown:
        raise ValueError(f"--task-weight names tasks the data does not have: {unknown} (it has {sorted(profile.per_task)})")
    weights = {t: float(task_weight.get(t, 1.0)) for t in profile.per_task}
    kv_all = float(profile.costs["kv"][:, -1].sum())  # bytes of every layer's cache with all tokens
    return {"damage": "per_task", "aggregate": "weighted", "task_weights": weights,
            "constraints": [quota.CostCap("kv", kv_share * kv_all)]}


def run(model: str | Path, calib: str | Path, test: str | Path, work: str | Path, *, budget: float = 0.3,
        kv_share: float = 0.35, task_weight: dict[str, float] | None = None, quant: quota.QuantConfig | None = None,
        settings: ProfileSettings | None = None, device: str | None = None, max_new_tokens: int = 16) -> dict:
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    quant = quant or quota.QuantConfig(impl="auto")
    settings = settings or ProfileSettings(grid_steps=16, batch_size=16)

    profile = profile_checkpoint(model, calib, quant, settings, output=work / "profile.json", device=device)
    result = quota.solve(profile, budget=budget, **objective(profile, task_weight or {}, kv_share))
    result.recipe.save(work / "recipe.json")

    loaded = load_checkpoint(model, *placement(device))
    records = load_records(calib)
    quantized = quantize_on_records(loaded, records, quant, data_version(calib, records), settings.batch_size)
    save(quantized, work / "quantized", Source.of_checkpoint(loaded), files_from=model, recipe=result.recipe,
         overwrite=True)

    saved = quota.load(work / "quantized", device)
    tests = load_records(test)
    answers = answer_records(saved.model, saved.processor, tests, settings.batch_size, max_new_tokens)
    scores = score_records(tests, answers)
    kv = result.profile.costs["kv"]  # [L, G]
    return {
        "schedule": list(result.recipe.schedule), "n_visual_tokens": result.recipe.n_visual_tokens,
        "token_share": result.recipe.equivalent_tokens / result.recipe.n_visual_tokens,
        "kv_share": float(sum(kv[l, g] for l, g in enumerate(result.solution.indices)) / kv[:, -1].sum()),
        "accuracy": scores.average, "per_task": {t: s.accuracy for t, s in scores.tasks.items()},
        "answers": answers, "profile": str(work / "profile.json"), "recipe": str(work / "recipe.json"),
        "checkpoint": str(work / "quantized"),
    }


def _weights(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        task, _, value = item.partition("=")
        try:
            out[task] = float(value)
        except ValueError:
            raise SystemExit(f"--task-weight wants TASK=WEIGHT, got {item!r}") from None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder")
    parser.add_argument("--calib", required=True, help="calibration records (JSONL)")
    parser.add_argument("--test", required=True, help="test records (JSONL)")
    parser.add_argument("--work", required=True, help="folder for the profile, the recipe and the quantized model")
    parser.add_argument("--budget", type=float, default=0.3, help="share of the visual tokens (default 0.3)")
    parser.add_argument("--kv-share", type=float, default=0.35, help="cap on the KV cache, share of all tokens'")
    parser.add_argument("--task-weight", action="append", default=[], metavar="TASK=WEIGHT")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    summary = run(args.model, args.calib, args.test, args.work, budget=args.budget, kv_share=args.kv_share,
                  task_weight=_weights(args.task_weight), device=args.device)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
