"""Merge evaluation results of disjoint tasks (one process per task, spread over GPUs) into the result one
run over all of them would have written: per-task scores, the task mean with its bootstrap interval, and
the accuracy per question form, all recomputed from the stored predictions.

    python -m quota.eval.merge -o all.json existence.json counting.json ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from quota.atomic import write_json_atomic
from quota.eval.harness import EvalResult, summarize
from quota.testbed.splits import test_split

AGREEING_META = ("model", "dtype", "quant", "recipe", "baseline", "schedule", "equivalent_tokens",
                 "questions_per_task", "calibration_questions", "device", "torch", "versions")
"""What every merged result must share: the same model, precision, pruning, question and calibration counts,
device and library versions, or the merge is not the result of one run (a field a result lacks counts as
``None``)."""


def merge_results(paths: Sequence[str | Path]) -> EvalResult:
    """One result from results (``quota eval -o``, predictions included) of disjoint task sets. Raises
    ``ValueError`` when there is nothing to merge, when two files score the same task, when their data
    version or model settings (``AGREEING_META``) differ, or when a file lacks predictions or they do not
    match the questions of the test split of their data version (stress or natural)."""
    if not paths:
        raise ValueError("no results to merge")
    docs = [(Path(p), json.loads(Path(p).read_text())) for p in paths]
    first_path, first = docs[0]
    questions, answers, owner = [], [], {}
    for path, doc in docs:
        if doc.get("data_version") != first.get("data_version"):
            raise ValueError(f"{path}: data version {doc.get('data_version')!r}, but {first_path} has "
                             f"{first.get('data_version')!r}")
        for key in AGREEING_META:
            if doc.get("meta", {}).get(key) != first.get("meta", {}).get(key):
                raise ValueError(f"{path}: meta {key!r} is {doc['meta'].get(key)!r}, but {first_path} has "
                                 f"{first['meta'].get(key)!r}: these results are not of one setting")
        rows = doc.get("predictions") or []
        if not rows:
            raise ValueError(f"{path}: no predictions to merge (write results with -o, which keeps them)")
        for task, score in doc["tasks"].items():
            if task in owner:
                raise ValueError(f"task {task!r} is in both {owner[task]} and {path}: merge disjoint tasks")
            owner[task] = path
            mine = {row["qid"]: row for row in rows if row["task"] == task}
            for q in test_split(task, score["n"], first.get("data_version")):
                row = mine.get(q.qid)
                if row is None or row["answer"] != q.answer:
                    raise ValueError(f"{path}: question {q.qid} is missing or has another answer than the test "
                                     f"split's: not the first {score['n']} test questions of {task}")
                questions.append(q)
                answers.append(row["prediction"])
    meta = {**first.get("meta", {}), "merged_from": [str(p) for p, _ in docs],
            "seconds": round(sum(d.get("meta", {}).get("seconds", 0.0) for _, d in docs), 1), "retention": {}}
    return summarize(questions, answers, meta)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m quota.eval.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="result JSON files of disjoint tasks")
    parser.add_argument("-o", "--output", required=True, help="merged result JSON (written atomically)")
    args = parser.parse_args(argv)
    try:
        merged = merge_results(args.results)
    except (ValueError, OSError, json.JSONDecodeError, KeyError) as exc:
        raise SystemExit(f"quota.eval.merge: {exc}") from None
    write_json_atomic(args.output, merged.to_dict(with_predictions=True))
    per_task = ", ".join(f"{t} {100 * s.accuracy:.1f}" for t, s in merged.tasks.items())
    print(f"{per_task}; average {100 * merged.average:.1f} "
          f"({100 * merged.average_ci[0]:.1f}-{100 * merged.average_ci[1]:.1f})")


if __name__ == "__main__":
    main()
