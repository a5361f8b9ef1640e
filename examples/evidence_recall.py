"""Does a pruning method keep what the answer needs? Evidence recall on the testbed.

For each question, ``quota.testbed.tasks.evidence_patches`` marks the image patches its answer needs. A method's
evidence recall at R tokens is the share of those patches among the tokens it keeps at its first pruning point
(FastV: layer 2; the pre-LLM presets: before layer 0), averaged over questions with evidence; random selection
keeps R / 576 of them in expectation. The accuracy a method loses cannot come back once its scorer has dropped
the evidence, so this separates "the scorer looks elsewhere" from "the model needs more than it kept".

    python examples/evidence_recall.py --data-version natural --per-task 8 --methods fastv visionzip divprune
    python examples/evidence_recall.py --data-version stress --per-task 8 --device cuda

Writes one JSON line per (method, R) to stdout: recall overall and per task, and the questions counted.
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import numpy as np
import torch

from quota.device import placement
from quota.models.registry import spec_for
from quota.runtime.baselines import BASELINES
from quota.runtime.generate import PrunedRunner
from quota.testbed import model as testbed
from quota.testbed.batches import make_batches
from quota.testbed.splits import test_split
from quota.testbed.tasks import TASKS, evidence_patches


METHODS = {**BASELINES, "fastv_keep": partial(BASELINES["fastv"], form="keep")}
"""The stage-wise presets by name, and ``fastv_keep``: FastV keeping R tokens from layer 2 (the form published
tables count; ``fastv`` keeps R on average over the layers)."""


def first_pruning_layer(schedule, n_visual: int) -> int:
    return next(layer for layer, k in enumerate(schedule) if k < n_visual)


@torch.no_grad()
def recall_of(model, batches, questions, plan, n_visual: int) -> list[float | None]:
    """Per question, the share of its evidence patches kept at the plan's first pruning point (None: no evidence)."""
    runner = PrunedRunner.from_plan(model, plan)
    layer = first_pruning_layer(plan.schedule, n_visual)
    out, i = [], 0
    for batch in batches:
        runner.prefill(batch.input_ids, batch.attention_mask, batch.pixel_values, reserve=1)
        kept = runner.kept_indices[layer].cpu().numpy()  # [B, k]
        for row in kept:
            evidence = evidence_patches(questions[i]).reshape(-1)  # [576]
            i += 1
            out.append(float(evidence[row].sum() / evidence.sum()) if evidence.any() else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-version", default="stress", help="stress or natural")
    ap.add_argument("--per-task", type=int, default=8, help="first N test questions of each task")
    ap.add_argument("--methods", nargs="+", default=["fastv_keep", "visionzip_nomerge", "divprune", "random"],
                    choices=sorted(METHODS))
    ap.add_argument("--tokens", nargs="+", type=int, default=[64, 128, 192])
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    device, dtype = placement(args.device)
    tb = testbed.load(device, dtype)
    questions = [q for t in TASKS for q in test_split(t, args.per_task, args.data_version)]
    batches = make_batches(tb.tokenizer, questions, args.batch_size, device, dtype)
    n_visual, layers = 576, len(spec_for(tb.model).layers_of(tb.model))
    for name in args.methods:
        for tokens in args.tokens:
            plan = METHODS[name](tokens, n_visual, layers)
            layer = first_pruning_layer(plan.schedule, n_visual)
            recall = recall_of(tb.model, batches, questions, plan, n_visual)
            per_task = {}
            for q, r in zip(questions, recall):
                if r is not None:
                    per_task.setdefault(q.task, []).append(r)
            counted = [r for r in recall if r is not None]
            print(json.dumps({"method": name, "tokens": tokens, "data_version": args.data_version,
                              "first_pruning_layer": layer, "kept_at_that_layer": plan.schedule[layer],
                              "evidence_recall": round(float(np.mean(counted)), 4),
                              "per_task": {t: round(float(np.mean(v)), 4) for t, v in per_task.items()},
                              "questions": len(counted), "device": str(device)}), flush=True)


if __name__ == "__main__":
    main()
