"""Paired differences between two evaluations of the same questions: the mean difference in accuracy points
and its percentile bootstrap interval, resampling questions (within each task) rather than each row apart.

Two rows that answer the same questions share most of their variance (easy questions are easy for both), so
the interval of their difference is much narrower than the two unpaired intervals suggest: whether one row is
ahead of another is read from the paired interval. Inputs are mappings ``question id -> correct``; only the
ids both hold are paired, and the result says how many each side had alone.

With ``tasks`` (``question id -> task``) the difference is the mean over tasks of the per-task mean
differences, as the suite's average is the mean of per-task accuracies, and each resample draws every task's
questions from that task alone (a stratified bootstrap), as the suite's unpaired interval does. A question's
paired outcome is -1, 0 or +1, so resampling ``n`` questions of a task with replacement is drawing the counts
of the three outcomes from a multinomial of ``n`` trials with the observed shares: the same distribution as
drawing indices, at a cost independent of ``n``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from quota.eval.harness import EvalResult

ONE_TASK = ""
"""The stratum of every question when no ``tasks`` mapping is given."""


@dataclass(frozen=True)
class PairedDifference:
    """``mean`` (accuracy points of ``a`` minus ``b``) and its ``level`` bootstrap interval ``[low, high]`` over
    the ``n`` questions both sides hold; ``only_a``/``only_b`` questions were left out. ``per_task``: the same
    for each task, from the same resamples (empty without ``tasks``)."""

    mean: float
    low: float
    high: float
    n: int
    only_a: int = 0
    only_b: int = 0
    level: float = 0.95
    resamples: int = 10000
    seed: int = 0
    per_task: dict[str, "PairedDifference"] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return self.only_a + self.only_b

    @property
    def ahead(self) -> bool:
        """Whether ``a`` is ahead of ``b``: the whole interval lies above zero."""
        return self.low > 0

    def note(self, a: str = "a", b: str = "b") -> str | None:
        """One sentence naming the questions left out, or ``None`` when both sides held the same ones."""
        if not self.dropped:
            return None
        return (f"{a} vs {b}: {self.n} questions in common; left out {self.only_a} only {a} answered and "
                f"{self.only_b} only {b} answered")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_task"] = {t: {k: v for k, v in s.to_dict().items() if k in ("mean", "low", "high", "n")}
                         for t, s in self.per_task.items()}
        return d


def paired_difference(
    a: Mapping[str, bool], b: Mapping[str, bool], *, tasks: Mapping[str, str] | None = None,
    resamples: int = 10000, seed: int = 0, level: float = 0.95,
) -> PairedDifference:
    """The paired difference ``a - b`` in accuracy points over the question ids both mappings hold.

    ``tasks`` maps each common id to its task: the difference is then the mean over tasks of the per-task
    differences, and the bootstrap resamples within each task. Deterministic for a ``seed`` (and independent
    of the mappings' order). Raises ``ValueError`` when no id is common, when ``tasks`` misses a common id, or
    for a correctness value other than a bool (or 0/1)."""
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be an integer >= 1, got {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    common = sorted(set(a) & set(b))
    only_a, only_b = len(set(a)) - len(common), len(set(b)) - len(common)
    if not common:
        raise ValueError(f"no question in common to pair ({len(a)} on one side, {len(b)} on the other)")
    strata: dict[str, list[int]] = {}
    for qid in common:
        if tasks is not None and qid not in tasks:
            raise ValueError(f"question {qid!r} has no task")
        d = _outcome(a[qid], qid) - _outcome(b[qid], qid)
        strata.setdefault(ONE_TASK if tasks is None else str(tasks[qid]), []).append(d)
    rng = np.random.default_rng(seed)
    means, per_task = [], {}
    for task in sorted(strata):
        d = np.asarray(strata[task])
        resampled = _resampled_means(d, resamples, rng)  # [resamples]
        means.append((float(d.mean()), resampled))
        if tasks is not None:
            per_task[task] = _summary(100 * d.mean(), 100 * resampled, len(d), level, resamples, seed)
    mean = 100 * float(np.mean([m for m, _ in means]))
    pooled = 100 * np.mean([r for _, r in means], axis=0)  # [resamples]: the mean over tasks of each resample
    whole = _summary(mean, pooled, len(common), level, resamples, seed)
    return PairedDifference(whole.mean, whole.low, whole.high, whole.n, only_a, only_b, level, resamples, seed,
                            per_task)


class MissingPredictions(ValueError):
    """A result stores no per-question predictions (written without them), so it cannot be paired."""


def paired_results(a: EvalResult, b: EvalResult, *, resamples: int = 10000, seed: int = 0, level: float = 0.95
                   ) -> PairedDifference:
    """:func:`paired_difference` of two evaluation results (``a - b``) from their stored predictions, per task
    then averaged over tasks, as ``EvalResult.average`` is. Raises :class:`MissingPredictions` when either
    stores none, ``ValueError`` when their data versions differ or a question id common to both has another
    task or answer in each (then the ids do not name the same questions)."""
    if a.data_version != b.data_version:
        raise ValueError(f"cannot pair results of data versions {a.data_version!r} and {b.data_version!r}")
    for side, result in (("first", a), ("second", b)):
        if not result.predictions:
            raise MissingPredictions(f"the {side} result stores no per-question predictions")
    correct_a, tasks_a = outcomes(a.predictions, "the first result")
    correct_b, tasks_b = outcomes(b.predictions, "the second result")
    answers_a = {p["qid"]: (p["task"], p.get("answer")) for p in a.predictions}
    answers_b = {p["qid"]: (p["task"], p.get("answer")) for p in b.predictions}
    for qid in sorted(set(answers_a) & set(answers_b)):
        if answers_a[qid] != answers_b[qid]:
            raise ValueError(f"question {qid!r} is (task, answer) {answers_a[qid]} in one result and "
                             f"{answers_b[qid]} in the other: not the same question")
    return paired_difference(correct_a, correct_b, tasks={**tasks_b, **tasks_a}, resamples=resamples, seed=seed,
                             level=level)


def outcomes(predictions: Sequence[Mapping[str, Any]], source: str = "predictions"
             ) -> tuple[dict[str, bool], dict[str, str]]:
    """``({qid: correct}, {qid: task})`` of stored predictions (``EvalResult.predictions``: dicts with ``qid``,
    ``task`` and ``correct``). Raises ``ValueError`` naming ``source`` for a repeated id or a missing key."""
    correct: dict[str, bool] = {}
    tasks: dict[str, str] = {}
    for row in predictions:
        try:
            qid, task, ok = row["qid"], row["task"], row["correct"]
        except (KeyError, TypeError):
            raise ValueError(f"{source}: a prediction without qid, task and correct: {row!r}") from None
        if qid in correct:
            raise ValueError(f"{source}: question {qid!r} is scored twice")
        correct[qid], tasks[qid] = bool(_outcome(ok, qid)), task
    return correct, tasks


def _outcome(value: Any, qid: str) -> int:
    if value is True or value is False or (isinstance(value, (int, np.integer, np.bool_)) and value in (0, 1)):
        return int(value)
    raise ValueError(f"question {qid!r}: correctness must be a bool, got {value!r}")


def _resampled_means(d: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of the -1/0/+1 vector ``d``, drawn as multinomial counts."""
    n = len(d)
    counts = np.array([(d == -1).sum(), (d == 0).sum(), (d == 1).sum()])
    drawn = rng.multinomial(n, counts / n, size=resamples)  # [resamples, 3]
    return (drawn[:, 2] - drawn[:, 0]) / n


def _summary(mean: float, resampled: np.ndarray, n: int, level: float, resamples: int, seed: int
             ) -> PairedDifference:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return PairedDifference(float(mean), float(low), float(high), n, level=level, resamples=resamples, seed=seed)
