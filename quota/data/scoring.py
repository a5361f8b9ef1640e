"""Scoring a model's answer to a record: exact match after normalization, or choice accuracy when the record has
``choices``.

Normalization (the VQA convention the synthetic suite also uses): lowercase; digit-grouping commas join
(``1,234 -> 1234``); other punctuation becomes a space; articles go; number words ``zero``..``twenty`` become
digits; whitespace collapses. ``"The Two."`` -> ``"2"``.

A multiple-choice prediction selects the choice whose normalized text it equals; failing that, a lone option
letter (``"B"``, ``"(b)"``, ``"B."``) selects the choice at that position; failing that, the one choice whose
normalized text appears in it as whole words. Anything else selects nothing and is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from quota.data.records import Record

NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
ARTICLES = frozenset({"a", "an", "the"})
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def normalize_answer(text: str) -> str:
    """Lowercase, punctuation and articles dropped, number words as digits, whitespace collapsed."""
    s = re.sub(r"(?<=\d),(?=\d{3})", "", text.lower())
    s = re.sub(r"[^\w\s]|_", " ", s)
    return " ".join(NUMBER_WORDS.get(t, t) for t in s.split() if t not in ARTICLES)


def exact_match(prediction: str, answer: str) -> bool:
    """Whether the normalized prediction equals the normalized answer."""
    return normalize_answer(prediction) == normalize_answer(answer)


def option_letter(index: int) -> str:
    """``0 -> "A"``: the letter naming choice ``index`` in a prompt."""
    return LETTERS[index].upper()


def match_choice(prediction: str, choices: Sequence[str]) -> int | None:
    """The index of the choice ``prediction`` selects, or ``None`` (rules in the module docstring)."""
    norm = [normalize_answer(c) for c in choices]
    pred = normalize_answer(prediction)
    if pred in norm:
        return norm.index(pred)
    letter = re.fullmatch(r"\W*([a-z])\W*", prediction.strip().lower())
    if letter and LETTERS.index(letter.group(1)) < len(choices):
        return LETTERS.index(letter.group(1))
    padded = f" {pred} "
    inside = [i for i, c in enumerate(norm) if c and f" {c} " in padded]
    return inside[0] if len(inside) == 1 else None


def is_correct(record: Record, prediction: str) -> bool:
    """Choice accuracy when ``record.choices`` is given (the selected choice is the answer), else exact match."""
    if record.choices is None:
        return exact_match(prediction, record.answer)
    picked = match_choice(prediction, record.choices)
    return picked is not None and record.choices[picked] == record.answer


def accuracy(records: Sequence[Record], predictions: Sequence[str]) -> float:
    """Share of records answered correctly (:func:`is_correct`); ``predictions[i]`` answers ``records[i]``."""
    if len(records) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} records")
    if not records:
        raise ValueError("accuracy of no records")
    return sum(is_correct(r, p) for r, p in zip(records, predictions)) / len(records)
