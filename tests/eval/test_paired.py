"""Paired bootstrap differences (``quota.eval.paired``): exact on degenerate cases, equal to the exact bootstrap
distribution and to a brute-force index resampling on small ones, stratified by task, deterministic."""

import itertools

import numpy as np
import pytest

from quota.eval.harness import summarize
from quota.eval.paired import MissingPredictions, outcomes, paired_difference, paired_results
from quota.testbed.splits import test_split


def ids(task, n):
    return [f"{task}/{i}" for i in range(n)]


def test_identical_outcomes_give_exactly_zero():
    a = {q: i % 2 == 0 for i, q in enumerate(ids("t", 50))}
    d = paired_difference(a, dict(a))
    assert (d.mean, d.low, d.high, d.n, d.dropped) == (0.0, 0.0, 0.0, 50, 0)
    assert not d.ahead and d.note() is None


def test_a_constant_shift_is_exact_and_a_partial_one_is_bracketed():
    qs = ids("t", 40)
    d = paired_difference({q: True for q in qs}, {q: False for q in qs})
    assert (d.mean, d.low, d.high) == (100.0, 100.0, 100.0) and d.ahead
    b = {q: i >= 10 for i, q in enumerate(qs)}  # a right everywhere, b wrong on 10 of 40: a is 25 points ahead
    d = paired_difference({q: True for q in qs}, b)
    assert d.mean == pytest.approx(25.0) and 0 < d.low < 25 < d.high < 50 and d.ahead
    flipped = paired_difference(b, {q: True for q in qs})  # b - a: the mirror image
    assert flipped.mean == pytest.approx(-25.0) and not flipped.ahead


def test_the_seed_fixes_the_interval_and_the_order_of_the_mappings_does_not_matter():
    rng = np.random.default_rng(3)
    qs = ids("t", 60)
    a = {q: bool(x) for q, x in zip(qs, rng.integers(0, 2, 60))}
    b = {q: bool(x) for q, x in zip(qs, rng.integers(0, 2, 60))}
    first = paired_difference(a, b, seed=7)
    assert paired_difference(dict(reversed(list(a.items()))), dict(reversed(list(b.items()))), seed=7) == first
    assert paired_difference(a, b, seed=8) != first
    assert paired_difference(a, b, seed=8).mean == first.mean


def test_tasks_are_averaged_like_the_suite_and_resampled_within_each_task():
    # task x: 2 questions, a ahead on both; task y: 100 questions, a and b agree on all of them
    a = {**{q: True for q in ids("x", 2)}, **{q: i % 3 == 0 for i, q in enumerate(ids("y", 100))}}
    b = {**{q: False for q in ids("x", 2)}, **{q: i % 3 == 0 for i, q in enumerate(ids("y", 100))}}
    tasks = {q: q.split("/")[0] for q in a}
    d = paired_difference(a, b, tasks=tasks)
    # the mean of the per-task differences (100 and 0), not the pooled 2/102; every within-task resample keeps
    # each task's difference, so the interval is exact, where a pooled resample would spread it
    assert (d.mean, d.low, d.high) == (50.0, 50.0, 50.0)
    assert {t: (s.mean, s.low, s.high, s.n) for t, s in d.per_task.items()} == {
        "x": (100.0, 100.0, 100.0, 2), "y": (0.0, 0.0, 0.0, 100)}
    pooled = paired_difference(a, b)
    assert pooled.mean == pytest.approx(100 * 2 / 102) and pooled.high > pooled.low


def test_the_mean_is_the_difference_of_the_suite_averages():
    questions = test_split("counting", 7) + test_split("reading", 3)
    answers_a = [q.answer if i % 2 else "x" for i, q in enumerate(questions)]
    answers_b = [q.answer if i % 3 else "x" for i, q in enumerate(questions)]
    ra, rb = summarize(questions, answers_a), summarize(questions, answers_b)
    d = paired_results(ra, rb)
    assert d.mean == pytest.approx(100 * (ra.average - rb.average))
    for task in ("counting", "reading"):
        assert d.per_task[task].mean == pytest.approx(100 * (ra.tasks[task].accuracy - rb.tasks[task].accuracy))


def test_only_common_questions_are_paired_and_the_dropped_are_counted():
    a = {**{q: True for q in ids("t", 5)}, "only-a/1": False, "only-a/2": True}
    b = {**{q: False for q in ids("t", 5)}, "only-b/1": True}
    d = paired_difference(a, b)
    assert (d.mean, d.low, d.high, d.n, d.only_a, d.only_b) == (100.0, 100.0, 100.0, 5, 2, 1)
    assert d.note("row", "ref") == "row vs ref: 5 questions in common; left out 2 only row answered and 1 only ref answered"
    with pytest.raises(ValueError, match="no question in common"):
        paired_difference({"a": True}, {"b": True})


@pytest.mark.parametrize("kwargs, match", [
    ({"resamples": 0}, "resamples"), ({"level": 1.0}, "level"), ({"tasks": {"q0": "t"}}, "has no task"),
])
def test_bad_arguments_are_refused(kwargs, match):
    a = {"q0": True, "q1": False}
    with pytest.raises(ValueError, match=match):
        paired_difference(a, a, **kwargs)


def test_correctness_must_be_a_bool():
    with pytest.raises(ValueError, match="must be a bool"):
        paired_difference({"q": "yes"}, {"q": True})


# ----------------------------------------------------------------------------- against exact and brute force


def exact_distribution(d_by_task):
    """``{value: probability}`` of the bootstrap statistic (mean over tasks of each task's resampled mean, in
    points), by enumerating every resample of every task."""
    dist = {0.0: 1.0}
    for d in d_by_task:
        n = len(d)
        task = {}
        for pick in itertools.product(range(n), repeat=n):
            m = sum(d[i] for i in pick) / n
            task[m] = task.get(m, 0.0) + 1.0 / n ** n
        combined = {}
        for (v, p), (m, q) in itertools.product(dist.items(), task.items()):
            key = round(v + 100 * m / len(d_by_task), 9)
            combined[key] = combined.get(key, 0.0) + p * q
        dist = combined
    return dist


def quantile(dist, level):
    total = 0.0
    for v in sorted(dist):
        total += dist[v]
        if total >= level - 1e-12:
            return v
    return max(dist)


def test_the_interval_matches_the_exact_bootstrap_distribution():
    d_by_task = [[1, 0, 0, -1, 1], [0, 1, 1, 0]]  # two tasks: 5**5 and 4**4 resamples
    pairs = {1: (True, False), -1: (False, True), 0: (True, True)}
    a, b, tasks = {}, {}, {}
    for t, d in enumerate(d_by_task):
        for i, x in enumerate(d):
            q = f"{t}/{i}"
            (a[q], b[q]), tasks[q] = pairs[x], str(t)
    dist = exact_distribution(d_by_task)
    got = paired_difference(a, b, tasks=tasks, resamples=200_000, seed=1)
    assert got.mean == pytest.approx(sum(dist[v] * v for v in dist))  # the bootstrap mean is the sample mean
    assert quantile(dist, 0.015) <= got.low <= quantile(dist, 0.035)
    assert quantile(dist, 0.965) <= got.high <= quantile(dist, 0.985)


def brute_force(a, b, tasks, resamples, seed):
    """The textbook stratified paired bootstrap: draw each task's question indices with replacement."""
    rng = np.random.default_rng(seed)
    by_task = {}
    for q in sorted(set(a) & set(b)):
        by_task.setdefault(tasks[q], []).append(int(a[q]) - int(b[q]))
    means = np.mean([np.asarray(d)[rng.integers(0, len(d), (resamples, len(d)))].mean(1)
                     for _, d in sorted(by_task.items())], axis=0)
    return tuple(100 * np.percentile(means, [2.5, 97.5]))


def test_the_interval_matches_a_brute_force_index_resampling():
    rng = np.random.default_rng(0)
    a, b, tasks = {}, {}, {}
    for task, n, pa, pb in (("x", 30, 0.7, 0.5), ("y", 50, 0.4, 0.45), ("z", 20, 0.9, 0.6)):
        shared = rng.random(n)  # correlated rows, as two pruning plans of one model are
        for i in range(n):
            q = f"{task}/{i}"
            a[q], b[q], tasks[q] = bool(shared[i] < pa), bool(shared[i] < pb) ^ bool(rng.random() < 0.1), task
    got = paired_difference(a, b, tasks=tasks, resamples=100_000, seed=2)
    low, high = brute_force(a, b, tasks, 100_000, seed=5)
    assert got.low == pytest.approx(low, abs=0.4) and got.high == pytest.approx(high, abs=0.4)
    assert got.high - got.low > 5  # not a degenerate case


# ----------------------------------------------------------------------------- evaluation results


def test_results_are_paired_by_question_id_not_by_position():
    questions = test_split("counting", 6)
    ra = summarize(questions, [q.answer if i < 3 else "x" for i, q in enumerate(questions)])
    rb = summarize(questions, [q.answer if i < 3 else "x" for i, q in enumerate(questions)])
    rb.predictions.reverse()  # stored in another order: still the same outcomes per question
    d = paired_results(ra, rb)
    assert (d.mean, d.low, d.high, d.n) == (0.0, 0.0, 0.0, 6)


def test_results_that_cannot_be_paired_are_refused():
    questions = test_split("counting", 3)
    ra = summarize(questions, ["1"] * 3)
    rb = summarize(questions, ["1"] * 3)
    rb.predictions = []
    with pytest.raises(MissingPredictions, match="second result stores no per-question predictions"):
        paired_results(ra, rb)
    rc = summarize(questions, ["1"] * 3)
    rc.predictions[0]["answer"] = "not the split's"
    with pytest.raises(ValueError, match="not the same question"):
        paired_results(ra, rc)
    rc = summarize(questions, ["1"] * 3)
    rc.data_version = "another"
    with pytest.raises(ValueError, match="data versions"):
        paired_results(ra, rc)
    with pytest.raises(ValueError, match="scored twice"):
        outcomes(ra.predictions + ra.predictions[:1])
