"""Splits: fixed sizes, disjoint seed namespaces, determinism, versioning, streaming."""

import hashlib
import itertools
from collections import Counter

import pytest

from quota.testbed import splits
from quota.testbed.splits import (
    CALIBRATION_SIZE, DATA_VERSION, MAX_ATTEMPTS, TASKS, TEST_PER_TASK, calibration_split, iter_train, load_scene,
    make_question, scene_seed, split_of, test_split,
)

# sha256 over the first 20 test questions of each task and the first 20 calibration questions.
GOLDEN_QUESTIONS = {"synthvqa-v1": "53e913fed8a67029b1549e41b7c7bdfa4484cf4fb89ab810049df3730a1ed909"}


def _fingerprint(questions):
    h = hashlib.sha256()
    for q in questions:
        h.update(f"{q.qid}|{q.question}|{q.answer}|{q.scene_seed}\n".encode())
    return h.hexdigest()


def test_pinned_questions_for_this_data_version():
    assert _fingerprint(test_split(limit=20) + calibration_split()[:20]) == GOLDEN_QUESTIONS[DATA_VERSION]


def test_version_and_sizes():
    assert isinstance(DATA_VERSION, str) and DATA_VERSION
    cal = calibration_split()
    assert len(cal) == CALIBRATION_SIZE == 256
    counts = Counter(q.task for q in cal)
    assert set(counts) == set(TASKS) and max(counts.values()) - min(counts.values()) <= 1
    assert [q.task for q in cal[:5]] == list(TASKS)
    assert len(test_split("counting")) == TEST_PER_TASK >= 1000
    full = test_split()
    assert len(full) == len(TASKS) * TEST_PER_TASK
    assert [q.task for q in full[:: TEST_PER_TASK]] == list(TASKS)


def test_limit_takes_a_prefix_per_task():
    five = test_split(limit=5)
    assert len(five) == 5 * len(TASKS)
    assert five[:5] == test_split("existence", limit=5) == test_split("existence")[:5]
    assert test_split("reading", limit=0) == []


def test_questions_are_deterministic():
    a = make_question("spatial", "test", 3, 12345)
    b = make_question("spatial", "test", 3, 12345)
    assert a == b and a.meta == b.meta
    assert load_scene(a).image.tobytes() == load_scene(b).image.tobytes()
    assert list(itertools.islice(iter_train(7), 12)) == list(itertools.islice(iter_train(7), 12))


def test_training_streams_differ_and_cycle_tasks():
    s7, s8 = list(itertools.islice(iter_train(7), 10)), list(itertools.islice(iter_train(8), 10))
    assert [q.task for q in s7] == list(TASKS) * 2
    assert not {q.scene_seed for q in s7} & {q.scene_seed for q in s8}
    only = list(itertools.islice(iter_train(0, tasks=["reading"]), 3))
    assert all(q.task == "reading" for q in only)


def test_namespaces_are_disjoint():
    test_seeds = {q.scene_seed for q in test_split()}
    cal_seeds = {q.scene_seed for q in calibration_split()}
    train_seeds = {q.scene_seed for s in (0, 1) for q in itertools.islice(iter_train(s), 400)}
    assert not test_seeds & train_seeds and not cal_seeds & train_seeds and not test_seeds & cal_seeds
    assert {split_of(s) for s in test_seeds} == {"test"}
    assert {split_of(s) for s in cal_seeds} == {"calibration"}
    assert {split_of(s) for s in train_seeds} == {"train"}
    assert not {q.qid for q in test_split()} & {q.qid for q in calibration_split()}
    # every seed the training stream could ever try, for any stream, index and attempt, is a train seed
    for stream, index, attempt in itertools.product((0, 1, 2**20 - 1), (0, 5, 2**32 - 1), (0, MAX_ATTEMPTS - 1)):
        assert split_of(scene_seed("train", stream, index, attempt)) == "train"
    assert split_of(12345) is None


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError) as err:
        test_split("ocrbench")
    assert "'ocrbench'" in str(err.value) and all(t in str(err.value) for t in TASKS)
    with pytest.raises(ValueError, match="unknown task"):
        next(iter_train(0, tasks=["existence", "nope"]))
    with pytest.raises(ValueError, match="training seed"):
        next(iter_train(-1))
    with pytest.raises(ValueError, match="unknown split"):
        scene_seed("val", 0, 0, 0)
    with pytest.raises(ValueError, match="out of range"):
        scene_seed("test", 0, 0, MAX_ATTEMPTS)


def test_preview_renders():
    img = splits.preview_image(picks=[("counting", 0)], columns=1, zoom=1)
    assert img.ndim == 3 and img.shape[1] == 192 + 16 and img.dtype.name == "uint8"


def test_refinement_questions_are_held_out_from_calibration_and_test():
    from quota.testbed.splits import calibration_split, refinement_split, test_split

    held = refinement_split(20)
    assert [q.qid for q in held] == [q.qid for q in refinement_split(40)[:20]]  # a prefix, deterministic
    assert len({q.task for q in held}) == 5
    seen = {q.qid for q in calibration_split()} | {q.qid for q in test_split(limit=50)}
    assert not {q.qid for q in held} & seen
    from quota.testbed.splits import load_scene
    assert not {load_scene(q).image.tobytes() for q in held[:5]} & {load_scene(q).image.tobytes() for q in calibration_split()[:5]}
