import pytest

from quota.data.records import Record
from quota.data.scoring import accuracy, exact_match, is_correct, match_choice, normalize_answer
from quota.testbed import tasks as testbed_tasks

SAMPLES = ["The Two.", "1,234", "an Apple", "left of", "  Yes!  ", "twenty-one", "LAMP", "a_b", "3 stars", "No."]


def test_normalization():
    assert [normalize_answer(t) for t in SAMPLES[:3]] == ["2", "1234", "apple"]
    assert testbed_tasks.score("The Two.", "2")  # the synthetic suite scores with the same rule


def test_exact_match():
    assert exact_match("Two", "2") and exact_match("the red.", "Red")
    assert not exact_match("2 3", "2") and not exact_match("blue", "red")


@pytest.mark.parametrize("prediction,index", [
    ("blue", 1), ("The Blue.", 1), ("B", 1), ("(c)", 2), ("b.", 1), ("It is green, I think", 2),
    ("D", None), ("red or blue", None), ("purple", None),
])
def test_match_choice(prediction, index):
    assert match_choice(prediction, ["red", "blue", "green"]) == index


def test_is_correct_uses_choices_when_given(tmp_path):
    mc = Record(tmp_path / "x.png", "Which?", "blue", ("red", "blue", "green"))
    assert is_correct(mc, "B") and is_correct(mc, "the blue one")
    assert is_correct(mc, "Blue") and not is_correct(mc, "A") and not is_correct(mc, "red and blue")
    open_ = Record(tmp_path / "x.png", "How many?", "3")
    assert is_correct(open_, "three") and not is_correct(open_, "C")
    assert accuracy([mc, open_], ["b", "4"]) == 0.5
    with pytest.raises(ValueError, match="1 predictions for 2 records"):
        accuracy([mc, open_], ["b"])
