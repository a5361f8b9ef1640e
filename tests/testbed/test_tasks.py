"""Tasks: answers checked by an independent oracle, balanced answers, adversarial negatives, scoring."""

from collections import Counter

import numpy as np
import pytest

from quota.testbed.scenes import COLOURS, SHAPES, SIZES, TEXTURES, make_layout
from quota.testbed.splits import calibration_split, test_split
from quota.testbed.tasks import TASKS, check_task, draw_goal, normalize_answer, score
from tests.eval.eval_oracle import answer as oracle_answer


@pytest.fixture(scope="module")
def by_task():
    return {t: test_split(t) for t in TASKS}


def test_oracle_agrees_on_every_test_and_calibration_question(by_task):
    questions = [q for qs in by_task.values() for q in qs] + calibration_split()
    wrong = []
    for q in questions:
        got = oracle_answer(q.question, make_layout(q.scene_seed))
        if got != q.answer:
            wrong.append((q.qid, q.question, q.answer, got))
    assert not wrong, wrong[:5]


def test_answers_are_short_and_normalized(by_task):
    for qs in by_task.values():
        for q in qs:
            assert q.answer == normalize_answer(q.answer) and 0 < len(q.answer.split()) <= 1
            assert q.question.endswith("?") and q.question[0].isupper()


def _share(counter: Counter, key) -> float:
    return counter[key] / sum(counter.values())


def test_existence_is_balanced_with_adversarial_negatives(by_task):
    qs = by_task["existence"]
    answers = Counter(q.answer for q in qs)
    assert set(answers) == {"yes", "no"} and 0.45 <= _share(answers, "yes") <= 0.55
    for q in qs:
        if q.answer == "no":
            objs = make_layout(q.scene_seed).objects
            for attr, value in q.meta["spec"].items():
                assert any(getattr(o, attr) == value for o in objs), "each attribute of a negative is present"
            assert any(o.colour == q.meta["spec"]["colour"] and o.shape == q.meta["spec"]["shape"] for o in objs) or (
                len(q.meta["spec"]) == 2
            )


def test_counts_are_spread_over_zero_to_nine(by_task):
    answers = Counter(q.answer for q in by_task["counting"])
    assert set(answers) == {str(i) for i in range(10)}
    assert all(0.05 <= _share(answers, str(i)) <= 0.15 for i in range(10)), answers
    forms = Counter(q.meta["form"] for q in by_task["counting"])
    assert len(forms) >= 6 and max(forms.values()) / sum(forms.values()) < 0.3


def test_attribute_answers_are_balanced_per_attribute(by_task):
    values = {"colour": COLOURS, "shape": SHAPES, "size": SIZES, "texture": TEXTURES}
    per_attr: dict[str, Counter] = {a: Counter() for a in values}
    refs = Counter()
    for q in by_task["attribute"]:
        attr, ref = q.meta["form"].split("/")
        per_attr[attr][q.answer] += 1
        refs[ref] += 1
        assert q.answer in values[attr]
    for attr, c in per_attr.items():
        assert set(c) == set(values[attr])
        assert max(c.values()) / sum(c.values()) <= 2.0 / len(values[attr]), (attr, c)
    assert set(refs) == {"attributes", "location", "near_text", "near_object"}


def test_spatial_answers_are_balanced(by_task):
    qs = by_task["spatial"]
    yesno = Counter(q.answer for q in qs if q.meta["form"] == "yesno")
    assert 0.45 <= _share(yesno, "yes") <= 0.55
    open_ = Counter(q.answer for q in qs if q.meta["form"] == "open")
    assert set(open_) == {"left", "right", "above", "below"}
    assert all(0.18 <= _share(open_, r) <= 0.32 for r in open_), open_
    assert any("number" in q.question or "word" in q.question for q in qs), "text items serve as referents too"


def test_reading_answers_are_diverse_and_local(by_task):
    qs = by_task["reading"]
    answers = Counter(q.answer for q in qs)
    assert max(answers.values()) / len(qs) < 0.03
    kinds = Counter(a.isdigit() for a in (q.answer for q in qs))
    assert 0.4 <= kinds[True] / len(qs) <= 0.6
    assert all(q.meta["scope"] == "local" and q.meta["evidence"] for q in qs)


def test_local_questions_name_small_evidence(by_task):
    for task in ("attribute", "spatial", "reading"):
        for q in by_task[task][:200]:
            area = sum((b[2] - b[0]) * (b[3] - b[1]) for b in q.meta["evidence"])
            assert 0 < area <= 0.1 * 192 * 192, (q.question, q.meta["evidence"])


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("Yes", "yes"),
        ("  No.  ", "no"),
        ("The red one!", "red 1"),
        ("Two", "2"),
        ("an orange", "orange"),
        ("1,234", "1234"),
        ("TEN", "10"),
        ("left", "left"),
        ("LAMP", "lamp"),
        ("It's  a  STAR", "it s star"),
        ("zero", "0"),
    ],
)
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_score_is_exact_match_on_normalized_answers():
    assert score("Three.", "3") and score("The circle", "circle") and score("YES", "yes")
    assert not score("3 objects", "3") and not score("circles", "circle") and not score("", "0")


def test_unknown_task_error_names_it_and_lists_known_tasks():
    with pytest.raises(ValueError) as err:
        check_task("ocr")
    assert "'ocr'" in str(err.value) and all(t in str(err.value) for t in TASKS)
    with pytest.raises(ValueError, match="unknown task"):
        draw_goal("pope", np.random.default_rng(0))


def test_evidence_patches_cover_what_the_answer_is_drawn_in(by_task):
    from quota.testbed import font
    from quota.testbed.scenes import make_scene
    from quota.testbed.tasks import evidence_patches

    for q in by_task["reading"][:40]:
        scene = make_scene(q.scene_seed)
        mask = evidence_patches(q)  # [24, 24]
        assert mask.shape == (24, 24) and mask.any()
        answer_chars = np.isin(scene.patch_char, [font.CHAR_IDS[c] for c in q.answer.upper()])
        text = next(t for t in scene.texts if t.text.lower() == q.answer)
        x0, y0, x1, y1 = text.bbox
        inside = np.zeros_like(mask)
        inside[y0 // 8 : (y1 - 1) // 8 + 1, x0 // 8 : (x1 - 1) // 8 + 1] = True
        assert (mask[answer_chars & inside]).all()
