"""Evaluation harness: greedy short answers from a VLM on the synthetic suite, per-task accuracy with
bootstrap 95% intervals, and retention against reference results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from quota.quantize.model import ProgressBar, wants_progress
from quota.testbed.model import encode_batch, pixel_values
from quota.testbed.splits import DATA_VERSION, load_scene, question_version
from quota.testbed.tasks import TASKS, Question, normalize_answer

BOOTSTRAP_SAMPLES = 1000


@dataclass
class TaskScore:
    accuracy: float
    ci_low: float
    ci_high: float
    n: int


@dataclass
class EvalResult:
    """Per-task scores, the mean over tasks, and what was evaluated."""

    tasks: dict[str, TaskScore]
    average: float
    average_ci: tuple[float, float]
    data_version: str = DATA_VERSION
    meta: dict = field(default_factory=dict)
    predictions: list[dict] = field(default_factory=list)
    forms: dict[str, dict[str, dict]] = field(default_factory=dict)
    """``{task: {question form: {"accuracy", "n"}}}``: where in a task the errors fall (for example
    ``attribute``'s ``colour/near_text``, ``reading``'s ``location``); empty for results written before it."""

    def to_dict(self, with_predictions: bool = False) -> dict:
        d = asdict(self)
        if not with_predictions:
            d.pop("predictions")
        return d


def bootstrap_ci(correct: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of a 0/1 vector (seeded, deterministic)."""
    if len(correct) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), (samples, len(correct)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def task_scores(by_task: dict[str, list[bool]]) -> tuple[dict[str, TaskScore], float, tuple[float, float]]:
    """``(per-task scores, mean over tasks, its 95% interval)`` of per-task correctness lists (in their order): each
    task with its own bootstrap interval; the mean's interval bootstraps each task independently and averages the
    resampled means (seeded, deterministic)."""
    tasks = {}
    for task, oks in by_task.items():
        c = np.asarray(oks, dtype=np.float64)
        lo, hi = bootstrap_ci(c)
        tasks[task] = TaskScore(float(c.mean()), lo, hi, len(c))
    rng = np.random.default_rng(1)
    resampled = np.mean([
        np.asarray(oks, dtype=np.float64)[rng.integers(0, len(oks), (BOOTSTRAP_SAMPLES, len(oks)))].mean(1)
        for oks in by_task.values()
    ], axis=0)
    average = float(np.mean([s.accuracy for s in tasks.values()]))
    return tasks, average, (float(np.percentile(resampled, 2.5)), float(np.percentile(resampled, 97.5)))


def summarize(questions: Sequence[Question], predictions: Sequence[str], meta: dict | None = None) -> EvalResult:
    """Score ``predictions`` against ``questions`` (same order)."""
    rows, by_task, by_form = [], {}, {}
    for q, pred in zip(questions, predictions):
        ok = normalize_answer(pred) == normalize_answer(q.answer)
        rows.append({"qid": q.qid, "task": q.task, "answer": q.answer, "prediction": pred, "correct": ok})
        by_task.setdefault(q.task, []).append(ok)
        by_form.setdefault(q.task, {}).setdefault(question_form(q), []).append(ok)
    tasks, average, ci = task_scores({t: by_task[t] for t in TASKS if t in by_task})
    forms = {
        task: {form: {"accuracy": float(np.mean(oks)), "n": len(oks)} for form, oks in sorted(by_form[task].items())}
        for task in tasks
    }
    versions = sorted({question_version(q) for q in questions}) or [DATA_VERSION]
    return EvalResult(tasks, average, ci, "+".join(versions), meta=meta or {}, predictions=rows, forms=forms)


def question_form(question: Question) -> str:
    """The question's form within its task (``meta["form"]``, e.g. ``colour+shape``, ``size/near_text``,
    ``location``); ``"-"`` for a question built without one."""
    return str((question.meta or {}).get("form", "-"))


def retention(result: EvalResult, reference: EvalResult) -> float:
    """Mean over tasks of accuracy(result) / accuracy(reference), the retention convention of pruning papers."""
    ratios = [result.tasks[t].accuracy / reference.tasks[t].accuracy for t in result.tasks
              if t in reference.tasks and reference.tasks[t].accuracy > 0]
    return float(np.mean(ratios)) if ratios else float("nan")


@torch.no_grad()
def answer_questions(
    model,
    tokenizer,
    questions: Sequence[Question],
    batch_size: int = 32,
    max_new_tokens: int = 6,
    progress: bool | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    warm_up: bool = True,
) -> list[str]:
    """Greedy answers of a testbed-style VLM (prompt format of :mod:`quota.testbed.model`), in the order of
    ``questions``. ``progress``: show a progress bar with the time left (:class:`~quota.quantize.model.ProgressBar`)
    when ``True``, or when ``None`` and stderr is a terminal; ``on_batch(done, total)`` after each batch.
    ``warm_up`` (CUDA only): answer the first batch once and discard it first, so that kernels compile and autotune
    outside the answers kept (a process's first forward on an H100 was seen to differ from the next ones; see
    :func:`quota.profiling.sensitivity.stable_reference`)."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    if warm_up and device.type == "cuda" and questions:
        _answer_batch(model, tokenizer, questions[:batch_size], device, dtype, max_new_tokens)
    answers: list[str] = []
    with ProgressBar(len(questions), "answer questions", wants_progress(progress)) as bar:
        for i in range(0, len(questions), batch_size):
            chunk = questions[i : i + batch_size]
            answers += _answer_batch(model, tokenizer, chunk, device, dtype, max_new_tokens)
            done = min(i + batch_size, len(questions))
            for _ in chunk:
                bar.advance()
            if on_batch is not None:
                on_batch(done, len(questions))
    return answers


def _answer_batch(model, tokenizer, chunk: Sequence[Question], device, dtype, max_new_tokens: int) -> list[str]:
    """Greedy answers (stripped text) to one batch of questions, their images loaded from the suite."""
    batch = encode_batch(tokenizer, [q.question for q in chunk])  # left-padded [B, S]
    images = np.stack([load_scene(q).image for q in chunk])  # uint8 [B, H, W, 3]
    out = model.generate(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        pixel_values=pixel_values(images).to(device, dtype),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    new = out[:, batch["input_ids"].shape[1]:]  # [B, T]
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
