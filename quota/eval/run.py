"""``evaluate``: the Python form of ``quota eval`` — load a model, answer the test split, score it, and
write the JSON result atomically."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

from quota.atomic import write_json_atomic
from quota.eval.harness import EvalResult, answer_questions, summarize
from quota.eval.splits import test_split
from quota.eval.tasks import TASKS, check_task

SUPPORTED_MODELS = ("testbed",)


def evaluate(
    model_name: str = "testbed",
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int = 32,
    weights_dir: str | None = None,
    output: str | Path | None = None,
    progress: bool | None = None,
) -> EvalResult:
    """Accuracy of ``model_name`` on the test split (``limit`` questions per task), with 95% intervals."""
    if model_name not in SUPPORTED_MODELS:
        raise ValueError(f"unknown model {model_name!r}; supported: {', '.join(SUPPORTED_MODELS)}")
    tasks = [check_task(t) for t in (tasks or TASKS)]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    from quota.models import testbed

    tb = testbed.load(device, dtype, weights_dir)
    questions = [q for t in tasks for q in test_split(t, limit)]
    start = time.time()
    answers = answer_questions(tb.model, tb.tokenizer, questions, batch_size, progress=progress)
    meta = {
        "model": testbed.MODEL_ID,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "questions_per_task": limit,
        "seconds": round(time.time() - start, 1),
        "torch": torch.__version__,
    }
    result = summarize(questions, answers, meta)
    if output is not None:
        write_json_atomic(output, result.to_dict(with_predictions=True))
    return result
