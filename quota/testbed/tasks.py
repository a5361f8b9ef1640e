"""Task families of the synthetic VQA suite, each modelled on a standard VLM benchmark, and answer scoring.

Families (``TASKS``):
- ``existence`` (POPE): "Is there a red star?"; balanced yes/no; negatives are adversarial, i.e. the
  absent object shares its colour and its shape (or all but one attribute) with objects present.
- ``counting`` (CLEVR): "How many red objects are there?"; answers ``"0"``..``"9"``, drawn uniformly.
- ``attribute`` (GQA): "What colour is the star in the top left?"; the referred object is unique,
  by its other attributes, its region of the 3 x 3 grid, or being closest to a text item or object.
- ``spatial`` (GQA/VSR): "Is the blue circle left of the word LAMP?" (yes/no) or "... left of, right of,
  above or below ...?" (left/right/above/below); pairs are uniquely referred and clearly separated.
- ``reading`` (TextVQA/OCRBench): "What number is written in the top left?" or
  "What word is written next to the red star?".

Contract: ``draw_goal(task, rng)`` fixes the answer-level choices (so answers stay balanced) and
``pose(task, layout, goal, rng)`` turns them into ``(question, answer, meta)`` on one scene layout, or
``None`` when that scene cannot support the goal (the caller then tries another scene). Every
question is answerable from the annotation alone and unambiguous by construction. ``meta["evidence"]``
lists the boxes needed to answer (``meta["scope"] == "global"`` when the whole image must be searched).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from quota.data.scoring import exact_match, normalize_answer  # noqa: F401  (re-exported)
from quota.testbed.scenes import (
    CELL, COLOURS, GRID, PATCH, REGIONS, SHAPES, SIZES, TEXTURES, Box, Layout, SceneObject, TextItem,
)

TASKS = ("existence", "counting", "attribute", "spatial", "reading")
BENCHMARKS = {
    "existence": "POPE", "counting": "CLEVR", "attribute": "GQA", "spatial": "GQA/VSR",
    "reading": "TextVQA/OCRBench",
}
ATTRIBUTES = ("size", "texture", "colour", "shape")  # order of words in a phrase: "small striped red star"
VALUES: dict[str, tuple[str, ...]] = {
    "size": tuple(SIZES), "texture": TEXTURES, "colour": tuple(COLOURS), "shape": SHAPES,
}
PLURALS = {s: s + ("es" if s.endswith("s") else "s") for s in (*SHAPES, "object")}
RELATIONS = ("left", "right", "above", "below")
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
RELATION_WORDS = {"left": "left of", "right": "right of", "above": "above", "below": "below"}

NEAR_MAX = 40  # px: "closest to" / "next to" only within this centre distance
REGION_MARGIN = 6  # px: a located object's centre keeps this distance from its cell's inner borders
MIN_OFFSET = 16  # px: a spatial relation needs this offset along its axis, and twice the other axis


@dataclass(frozen=True)
class Question:
    """One question on one scene. ``scene_seed`` regenerates the image (``scenes.make_scene``); ``answer`` is
    short and already normalized; ``meta`` (JSON-friendly) holds the form and the evidence boxes."""

    qid: str
    task: str
    question: str
    answer: str
    scene_seed: int
    meta: dict[str, Any] = field(default_factory=dict, hash=False)


def evidence_patches(question: Question) -> np.ndarray:
    """``bool [24, 24]``: the patches that ``question.meta["evidence"]`` boxes touch (what pruning must keep)."""
    mask = np.zeros((GRID, GRID), dtype=bool)  # [24, 24]
    for x0, y0, x1, y1 in question.meta.get("evidence", []):
        mask[y0 // PATCH : (y1 - 1) // PATCH + 1, x0 // PATCH : (x1 - 1) // PATCH + 1] = True
    return mask


def check_task(task: str) -> str:
    """Return ``task`` if known, else raise ``ValueError`` naming it and listing the known tasks."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return task


# ----------------------------------------------------------------------------------------------
# Answers

def score(prediction: str, answer: str) -> bool:
    """Exact match of the normalized short answers (:func:`quota.data.scoring.normalize_answer`)."""
    return exact_match(prediction, answer)


# ----------------------------------------------------------------------------------------------
# Referring to objects and text

Spec = dict[str, str]  # attribute -> value, e.g. {"colour": "red", "shape": "star"}


def phrase(spec: Spec, plural: bool = False) -> str:
    """``{"size": "small", "colour": "red", "shape": "star"}`` -> ``"small red star"``; the noun is ``object``
    when there is no shape."""
    noun = spec.get("shape", "object")
    words = [spec[a] for a in ATTRIBUTES[:3] if a in spec] + [PLURALS[noun] if plural else noun]
    return " ".join(words)


def matches(obj: SceneObject, spec: Spec) -> bool:
    return all(getattr(obj, a) == v for a, v in spec.items())


class ObjectIndex:
    """Counts of the objects of a scene matching attribute specs (one ``Counter`` per attribute subset)."""

    def __init__(self, objects: tuple[SceneObject, ...]) -> None:
        self.objects = objects
        self._counters: dict[tuple[str, ...], Counter[tuple[str, ...]]] = {}

    def count(self, spec: Spec) -> int:
        sub = tuple(a for a in ATTRIBUTES if a in spec)
        counter = self._counters.get(sub)
        if counter is None:
            counter = Counter(tuple(getattr(o, a) for a in sub) for o in self.objects)
            self._counters[sub] = counter
        return counter[tuple(spec[a] for a in sub)]

    def values(self, attr: str) -> list[str]:
        """Values of ``attr`` present in the scene, in ``VALUES`` order."""
        return [v for v in VALUES[attr] if self.count({attr: v})]


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _text_ref(t: TextItem) -> str:
    return f"the {t.kind} {t.text}"


def _d2(a: tuple[int, int], b: tuple[int, int]) -> int:
    return (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2


def _clearly_nearest(target: tuple[int, int], points: list[tuple[int, int]], winner: int) -> bool:
    """``points[winner]`` is within ``NEAR_MAX`` of ``target`` and every other point is >= 1.5x farther."""
    d = [_d2(target, p) for p in points]
    if d[winner] > NEAR_MAX * NEAR_MAX:
        return False
    return all(4 * dj >= 9 * d[winner] for j, dj in enumerate(d) if j != winner)


def _subsets(exclude: tuple[str, ...], allow_empty: bool) -> list[tuple[str, ...]]:
    """Attribute subsets (phrase order) not using ``exclude``, shortest first."""
    free = [a for a in ATTRIBUTES if a not in exclude]
    subs = [tuple(a for i, a in enumerate(free) if m >> i & 1) for m in range(1 << len(free))]
    subs = [s for s in subs if s or allow_empty]
    return sorted(subs, key=len)


def _minimal_spec(
    obj: SceneObject, accept: Callable[[Spec], bool], rng: np.random.Generator,
    exclude: tuple[str, ...] = (), allow_empty: bool = False, require: tuple[str, ...] = (),
) -> Spec | None:
    """A shortest attribute description of ``obj`` (ties broken at random) that ``accept`` takes as unique."""
    found: list[Spec] = []
    for sub in _subsets(exclude, allow_empty):
        if found and len(sub) > len(found[0]):
            break
        if not all(r in sub for r in require):
            continue
        spec = {a: getattr(obj, a) for a in sub}
        if accept(spec):
            found.append(spec)
    return found[int(rng.integers(0, len(found)))] if found else None


def unique_spec(
    obj: SceneObject, index: ObjectIndex, rng: np.random.Generator, exclude: tuple[str, ...] = ()
) -> Spec | None:
    """Shortest description (containing the shape unless it is asked) matching ``obj`` alone in the scene."""
    require = () if "shape" in exclude else ("shape",)
    return _minimal_spec(obj, lambda s: index.count(s) == 1, rng, exclude, require=require)


def _strict_region(p: tuple[int, int]) -> int | None:
    """Cell index of point ``p`` if it is at least ``REGION_MARGIN`` px from every inner cell border."""
    x, y = p
    for v in (x, y):
        if any(abs(v - b) < REGION_MARGIN for b in (CELL, 2 * CELL)):
            return None
    return 3 * min(y // CELL, 2) + min(x // CELL, 2)


def _near_region(p: tuple[int, int], cell: int) -> bool:
    """Point ``p`` lies in ``cell`` grown by ``REGION_MARGIN`` px (could be taken as inside it)."""
    cx0, cy0 = (cell % 3) * CELL, (cell // 3) * CELL
    m = REGION_MARGIN
    return cx0 - m <= p[0] < cx0 + CELL + m and cy0 - m <= p[1] < cy0 + CELL + m


Found = tuple[str, list[Box]]  # (reference without "the", evidence boxes)


def _located_ref(obj: SceneObject, layout: Layout, rng: np.random.Generator, exclude: tuple[str, ...]) -> Found | None:
    cell = _strict_region(obj.centre)
    if cell is None:
        return None
    nearby = [o for o in layout.objects if _near_region(o.centre, cell)]
    spec = _minimal_spec(obj, lambda s: sum(matches(o, s) for o in nearby) == 1, rng, exclude, allow_empty=True)
    if spec is None:
        return None
    return f"{phrase(spec)} in the {REGIONS[cell]}", [obj.bbox]


def _near_text_ref(
    obj: SceneObject, layout: Layout, rng: np.random.Generator, exclude: tuple[str, ...]
) -> Found | None:
    texts = list(layout.texts)
    order = _shuffled(rng, len(texts))
    for i in order:
        t = texts[i]

        def accept(spec: Spec, t: TextItem = t) -> bool:
            pool = [o for o in layout.objects if matches(o, spec)]
            return _clearly_nearest(t.centre, [o.centre for o in pool], pool.index(obj))

        spec = _minimal_spec(obj, accept, rng, exclude, allow_empty=True)
        if spec is not None:
            return f"{phrase(spec)} closest to {_text_ref(t)}", [obj.bbox, t.bbox]
    return None


def _near_object_ref(
    obj: SceneObject, layout: Layout, rng: np.random.Generator, exclude: tuple[str, ...]
) -> Found | None:
    others, index = [o for o in layout.objects if o is not obj], ObjectIndex(layout.objects)
    for i in _shuffled(rng, len(others)):
        anchor = others[i]
        anchor_spec = unique_spec(anchor, index, rng)
        if anchor_spec is None:
            continue

        def accept(spec: Spec, anchor: SceneObject = anchor) -> bool:
            pool = [o for o in layout.objects if matches(o, spec) and o is not anchor]
            return _clearly_nearest(anchor.centre, [o.centre for o in pool], pool.index(obj))

        spec = _minimal_spec(obj, accept, rng, exclude, allow_empty=True)
        if spec is not None:
            return f"{phrase(spec)} closest to the {phrase(anchor_spec)}", [obj.bbox, anchor.bbox]
    return None


def _shuffled(rng: np.random.Generator, n: int) -> list[int]:
    p = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i + 1))
        p[i], p[j] = p[j], p[i]
    return p


def _pick(rng: np.random.Generator, items: list | tuple) -> Any:
    return items[int(rng.integers(0, len(items)))]


def relation(a: tuple[int, int], b: tuple[int, int]) -> str | None:
    """Where point ``a`` is relative to ``b``: left/right/above/below, or ``None`` unless one axis dominates
    (offset >= ``MIN_OFFSET`` px and >= twice the other axis)."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) >= MIN_OFFSET and abs(dx) >= 2 * abs(dy):
        return "left" if dx < 0 else "right"
    if abs(dy) >= MIN_OFFSET and abs(dy) >= 2 * abs(dx):
        return "above" if dy < 0 else "below"
    return None


# ----------------------------------------------------------------------------------------------
# Families: goal (answer-level draw) and pose (question on one layout)

Posed = tuple[str, str, dict[str, Any]]


def _existence_goal(rng: np.random.Generator) -> dict[str, Any]:
    variant = ("colour+shape", "colour+shape", "size+colour+shape", "texture+colour+shape")[int(rng.integers(0, 4))]
    return {"answer": ("yes", "no")[int(rng.integers(0, 2))], "variant": variant}


def _existence_pose(layout: Layout, goal: dict[str, Any], rng: np.random.Generator) -> Posed | None:
    attrs = goal["variant"].split("+")
    objs = layout.objects
    if goal["answer"] == "yes":
        obj = _pick(rng, objs)
        spec = {a: getattr(obj, a) for a in attrs}
        evidence = [o.bbox for o in objs if matches(o, spec)]
    else:
        # Adversarial negatives: every attribute value present, and every pair but one (for three attributes)
        # present together, yet the combination absent.
        index = ObjectIndex(objs)
        cands = []
        for combo in _product([index.values(a) for a in attrs]):
            spec = dict(zip(attrs, combo))
            if index.count(spec):
                continue
            if len(attrs) == 3 and not index.count({"colour": spec["colour"], "shape": spec["shape"]}):
                continue
            cands.append(spec)
        if not cands:
            return None
        spec = _pick(rng, cands)
        evidence = [o.bbox for o in _near_misses(objs, spec)]
    text = f"Is there {_article(phrase(spec))}" + ("?" if int(rng.integers(0, 2)) else " in the image?")
    return text, goal["answer"], {"form": goal["variant"], "spec": spec, "evidence": evidence, "scope": "global"}


def _near_misses(objects: tuple[SceneObject, ...], spec: Spec) -> list[SceneObject]:
    """Objects matching all but one attribute of ``spec``: what must be inspected to answer "no" or "0"."""
    return [o for o in objects if sum(getattr(o, a) == v for a, v in spec.items()) == len(spec) - 1]


def _product(lists: list[list[str]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    for values in lists:
        out = [p + (v,) for p in out for v in values]
    return out


_COUNT_FORMS = (
    ("colour",), ("shape",), ("colour", "shape"), ("size",), ("texture",), ("size", "shape"), ("texture", "colour"),
)


def _counting_goal(rng: np.random.Generator) -> dict[str, Any]:
    return {"count": int(rng.integers(0, 10))}


def _counting_pose(layout: Layout, goal: dict[str, Any], rng: np.random.Generator) -> Posed | None:
    want, objs = goal["count"], layout.objects
    index = ObjectIndex(objs)
    cands = []
    for form in _COUNT_FORMS:
        # a zero-count combination is made of values that are present (adversarial)
        values = [list(VALUES[a]) if want or len(form) == 1 else index.values(a) for a in form]
        for combo in _product(values):
            spec = dict(zip(form, combo))
            if index.count(spec) == want:
                cands.append(spec)
    if not cands:
        return None
    spec = _pick(rng, cands)
    text = f"How many {phrase(spec, plural=True)} are there?"
    found = [o for o in objs if matches(o, spec)] if want else _near_misses(objs, spec)
    evidence = [o.bbox for o in found]
    return text, str(want), {"form": "+".join(spec), "spec": spec, "evidence": evidence, "scope": "global"}


_ATTRIBUTE_QUESTIONS = {
    "colour": "What colour is the {}?",
    "shape": "What shape is the {}?",
    "size": "What size is the {}?",
    "texture": "What pattern does the {} have?",
}
_REFERENCES = ("attributes", "attributes", "location", "near_text", "near_object")


def _attribute_goal(rng: np.random.Generator) -> dict[str, Any]:
    attr = _pick(rng, ATTRIBUTES)
    return {"attribute": attr, "value": _pick(rng, VALUES[attr]), "reference": _pick(rng, _REFERENCES)}


def _attribute_pose(layout: Layout, goal: dict[str, Any], rng: np.random.Generator) -> Posed | None:
    attr, value, ref = goal["attribute"], goal["value"], goal["reference"]
    cands = [o for o in layout.objects if getattr(o, attr) == value]
    index = ObjectIndex(layout.objects)
    for i in _shuffled(rng, len(cands)):
        obj, exclude = cands[i], (attr,)
        if ref == "attributes":
            spec = unique_spec(obj, index, rng, exclude)
            found = (phrase(spec), [obj.bbox]) if spec else None
        elif ref == "location":
            found = _located_ref(obj, layout, rng, exclude)
        elif ref == "near_text":
            found = _near_text_ref(obj, layout, rng, exclude)
        else:
            found = _near_object_ref(obj, layout, rng, exclude)
        if found is not None:
            text = _ATTRIBUTE_QUESTIONS[attr].format(found[0])
            return text, value, {"form": f"{attr}/{ref}", "evidence": found[1], "scope": "local"}
    return None


def _spatial_goal(rng: np.random.Generator) -> dict[str, Any]:
    return {"form": ("yesno", "open")[int(rng.integers(0, 2))], "relation": _pick(rng, RELATIONS),
            "answer": ("yes", "no")[int(rng.integers(0, 2))]}


def _referents(layout: Layout, rng: np.random.Generator) -> list[tuple[str, tuple[int, int], Box]]:
    """Uniquely referable things: ``(reference without 'the', centre, bbox)``."""
    refs, index = [], ObjectIndex(layout.objects)
    for o in layout.objects:
        spec = unique_spec(o, index, rng)
        if spec is not None:
            refs.append((phrase(spec), o.centre, o.bbox))
    refs += [(f"{t.kind} {t.text}", t.centre, t.bbox) for t in layout.texts]
    return refs


def _spatial_pose(layout: Layout, goal: dict[str, Any], rng: np.random.Generator) -> Posed | None:
    rel = goal["relation"]
    true_rel = rel if goal["form"] == "open" or goal["answer"] == "yes" else OPPOSITE[rel]
    refs = _referents(layout, rng)
    pairs = [(a, b) for a in refs for b in refs if a is not b and relation(a[1], b[1]) == true_rel]
    if not pairs:
        return None
    a, b = _pick(rng, pairs)
    if goal["form"] == "open":
        text, answer = f"Is the {a[0]} left of, right of, above or below the {b[0]}?", rel
    else:
        text, answer = f"Is the {a[0]} {RELATION_WORDS[rel]} the {b[0]}?", goal["answer"]
    return text, answer, {"form": goal["form"], "relation": true_rel, "evidence": [a[2], b[2]], "scope": "local"}


def _reading_goal(rng: np.random.Generator) -> dict[str, Any]:
    kind = ("number", "word")[int(rng.integers(0, 2))]
    return {"kind": kind, "reference": ("location", "object")[int(rng.integers(0, 2))]}


def _reading_pose(layout: Layout, goal: dict[str, Any], rng: np.random.Generator) -> Posed | None:
    texts = [t for t in layout.texts if t.kind == goal["kind"]]
    if not texts:
        return None
    if goal["reference"] == "location":
        t = _pick(rng, texts)
        text = f"What {t.kind} is written in the {REGIONS[t.cell]}?"
        return text, t.text.lower(), {"form": "location", "evidence": [t.bbox], "scope": "local"}
    centres, index = [t.centre for t in layout.texts], ObjectIndex(layout.objects)
    for i in _shuffled(rng, len(layout.objects)):
        obj = layout.objects[i]
        d = [_d2(obj.centre, c) for c in centres]
        j = min(range(len(d)), key=d.__getitem__)
        t = layout.texts[j]
        if t.kind != goal["kind"] or not _clearly_nearest(obj.centre, centres, j):
            continue
        spec = unique_spec(obj, index, rng)
        if spec is None:
            continue
        text = f"What {t.kind} is written next to the {phrase(spec)}?"
        return text, t.text.lower(), {"form": "object", "evidence": [t.bbox, obj.bbox], "scope": "local"}
    return None


@dataclass(frozen=True)
class _Family:
    goal: Callable[[np.random.Generator], dict[str, Any]]
    pose: Callable[[Layout, dict[str, Any], np.random.Generator], Posed | None]


_FAMILIES = {
    "existence": _Family(_existence_goal, _existence_pose),
    "counting": _Family(_counting_goal, _counting_pose),
    "attribute": _Family(_attribute_goal, _attribute_pose),
    "spatial": _Family(_spatial_goal, _spatial_pose),
    "reading": _Family(_reading_goal, _reading_pose),
}
assert tuple(_FAMILIES) == TASKS


def draw_goal(task: str, rng: np.random.Generator) -> dict[str, Any]:
    """Answer-level choices for one question of ``task`` (drawn before any scene, so answers stay balanced)."""
    return _FAMILIES[check_task(task)].goal(rng)


def pose(task: str, layout: Layout, goal: dict[str, Any], rng: np.random.Generator) -> Posed | None:
    """``(question, answer, meta)`` for ``goal`` on ``layout``, or ``None`` if this scene cannot support it."""
    return _FAMILIES[check_task(task)].pose(layout, goal, rng)
