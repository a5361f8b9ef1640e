"""An independent answer oracle for the synthetic VQA suite: it parses a question's English text and
answers it from the scene annotation, without using the question generator's code.

Every reference must resolve to exactly one thing, or the oracle raises ``Ambiguous``: answering a
whole split with it checks both the answers and that every question is unambiguous.
"""

from __future__ import annotations

import re

from quota.testbed.scenes import CELL, COLOURS, REGIONS, SHAPES, SIZES, TEXTURES, Layout, SceneObject, TextItem
from quota.testbed.tasks import MIN_OFFSET, NEAR_MAX, REGION_MARGIN


class Ambiguous(AssertionError):
    """A reference in the question matches zero or several things."""


_SINGULAR = {s + ("es" if s.endswith("s") else "s"): s for s in SHAPES}
_SINGULAR["objects"] = "object"


def parse_phrase(text: str) -> dict[str, str]:
    """``"small striped red stars"`` -> ``{"size": "small", "texture": "striped", "colour": "red",
    "shape": "star"}``."""
    spec: dict[str, str] = {}
    *adjectives, noun = text.split()
    noun = _SINGULAR.get(noun, noun)
    if noun != "object":
        assert noun in SHAPES, text
        spec["shape"] = noun
    for w in adjectives:
        attr = "size" if w in SIZES else "texture" if w in TEXTURES else "colour" if w in COLOURS else None
        assert attr is not None and attr not in spec, text
        spec[attr] = w
    return spec


def _matching(layout: Layout, spec: dict[str, str]) -> list[SceneObject]:
    return [o for o in layout.objects if all(getattr(o, k) == v for k, v in spec.items())]


def _one(things: list, what: str):
    if len(things) != 1:
        raise Ambiguous(f"{what!r} matches {len(things)} things")
    return things[0]


def _dist2(a: tuple[int, int], b: tuple[int, int]) -> int:
    return (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2


def _nearest(target: tuple[int, int], cands: list, what: str):
    """The candidate nearest ``target``; raises unless it is within NEAR_MAX and clearly (1.5x) nearer than
    the rest."""
    if not cands:
        raise Ambiguous(f"nothing for {what!r}")
    ranked = sorted(cands, key=lambda c: _dist2(target, c.centre))
    d1 = _dist2(target, ranked[0].centre)
    if d1 > NEAR_MAX**2:
        raise Ambiguous(f"{what!r}: nearest is too far")
    if len(ranked) > 1 and 4 * _dist2(target, ranked[1].centre) < 9 * d1:
        raise Ambiguous(f"{what!r}: two candidates about as near")
    return ranked[0]


def _text(layout: Layout, kind: str, text: str) -> TextItem:
    return _one([t for t in layout.texts if t.kind == kind and t.text == text], f"{kind} {text}")


def _cell_box(cell: int, grow: int) -> tuple[int, int, int, int]:
    x0, y0 = (cell % 3) * CELL, (cell // 3) * CELL
    return x0 - grow, y0 - grow, x0 + CELL + grow, y0 + CELL + grow


def _inside(p: tuple[int, int], box: tuple[int, int, int, int]) -> bool:
    return box[0] <= p[0] < box[2] and box[1] <= p[1] < box[3]


_TEXT_REF = re.compile(r"^(number|word) ([A-Z0-9]+)$")


def resolve(layout: Layout, ref: str) -> SceneObject | TextItem:
    """The single object or text item that ``ref`` (a reference without its leading 'the') denotes."""
    if m := _TEXT_REF.match(ref):
        return _text(layout, m[1], m[2])
    if m := re.match(r"^(.+) in the (.+)$", ref):
        cell = REGIONS.index(m[2])
        spec = parse_phrase(m[1])
        # nothing else of that description is even near the cell, and the target keeps clear of the
        # borders the cell shares with other cells
        target = _one([o for o in _matching(layout, spec) if _inside(o.centre, _cell_box(cell, REGION_MARGIN))], ref)
        x, y = target.centre
        near_border = any(abs(v - b) < REGION_MARGIN for v in (x, y) for b in (CELL, 2 * CELL))
        if near_border or not _inside(target.centre, _cell_box(cell, 0)):
            raise Ambiguous(f"{ref!r}: target not clearly inside the {m[2]}")
        return target
    if m := re.match(r"^(.+) closest to the (.+)$", ref):
        spec = parse_phrase(m[1])
        anchor = resolve(layout, m[2])
        cands = [o for o in _matching(layout, spec) if o is not anchor]
        return _nearest(anchor.centre, cands, ref)
    return _one(_matching(layout, parse_phrase(ref)), ref)


def where(a: tuple[int, int], b: tuple[int, int]) -> str:
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) >= MIN_OFFSET and abs(dx) >= 2 * abs(dy):
        return "left" if dx < 0 else "right"
    if abs(dy) >= MIN_OFFSET and abs(dy) >= 2 * abs(dx):
        return "above" if dy < 0 else "below"
    raise Ambiguous(f"no clear relation between {a} and {b}")


_REL = {"left of": "left", "right of": "right", "above": "above", "below": "below"}


def answer(question: str, layout: Layout) -> str:
    """The answer to ``question`` on ``layout``, worked out from the annotation alone."""
    if m := re.match(r"^Is there an? (.+?)(?: in the image)?\?$", question):
        return "yes" if _matching(layout, parse_phrase(m[1])) else "no"
    if m := re.match(r"^How many (.+) are there\?$", question):
        return str(len(_matching(layout, parse_phrase(m[1]))))
    if m := re.match(r"^What (colour|shape|size) is the (.+)\?$", question):
        return getattr(resolve(layout, m[2]), m[1])
    if m := re.match(r"^What pattern does the (.+) have\?$", question):
        return resolve(layout, m[1]).texture
    if m := re.match(r"^Is the (.+) left of, right of, above or below the (.+)\?$", question):
        return where(resolve(layout, m[1]).centre, resolve(layout, m[2]).centre)
    if m := re.match(r"^Is the (.+?) (left of|right of|above|below) the (.+)\?$", question):
        rel = where(resolve(layout, m[1]).centre, resolve(layout, m[3]).centre)
        return "yes" if rel == _REL[m[2]] else "no"
    if m := re.match(r"^What (number|word) is written in the (.+)\?$", question):
        cell = REGIONS.index(m[2])
        return _one([t for t in layout.texts if _inside(t.centre, _cell_box(cell, 0))], question).text.lower()
    if m := re.match(r"^What (number|word) is written next to the (.+)\?$", question):
        obj = resolve(layout, m[2])
        t = _nearest(obj.centre, list(layout.texts), question)
        assert t.kind == m[1], question
        return t.text.lower()
    raise AssertionError(f"no template matches {question!r}")
