"""Fixed, versioned splits of the synthetic VQA suite: an unlimited training stream, a 256-question
calibration split and a test split of ``TEST_PER_TASK`` questions per task.

Contract:
- Nothing is stored: every question, and its scene, is regenerated from integer seeds.
  ``DATA_VERSION`` names the generator's output; it changes whenever any image or question would.
- Scene seeds live in disjoint namespaces: ``scene_seed(split, stream, index, attempt)`` packs the
  split code into bits 58-60, so no test or calibration scene can come from the training stream, for
  any training seed. ``split_of(seed)`` reads the namespace back.
- A question is a pure function of ``(split, stream, index, task)``: its goal (the answer-level draw)
  comes from a question stream of its own; scenes are tried in order (``attempt`` 0, 1, ...) until one
  supports the goal.
- Only the calibration split may be seen by profiling and score calibration; the test split is for
  evaluation only.

Two data versions (suites) share these rules: ``synthvqa-v1`` (:data:`STRESS`, called ``stress``: the dense
scenes of :mod:`quota.testbed.scenes`, the default everywhere) and ``natural-v1`` (:data:`NATURAL`, called
``natural``: :mod:`quota.testbed.natural_scenes` under its frozen density parameters). Each has its own split
codes (:data:`VERSION_SPLIT_CODES`), hence its own scene seeds and question streams; a scene seed's namespace
names its data version (:func:`version_of`), so :func:`load_scene` draws any question's scene. Natural question
ids start with ``natural/`` and their ``meta["density"]`` holds the density parameters their scenes were drawn
with.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np

from quota.testbed import font
from quota.testbed import tasks as _tasks
from quota.testbed.natural_scenes import NATURAL_V1, NaturalParams, make_natural_layout
from quota.testbed.scenes import IMAGE_SIZE, Layout, Scene, make_layout, render_scene
from quota.testbed.tasks import TASKS, Question, check_task

STRESS, NATURAL = "synthvqa-v1", "natural-v1"
DATA_VERSION = STRESS  # the default data version (the stress suite); results and the model card name it
SUITES = {"stress": STRESS, "natural": NATURAL}  # suite name -> data version
CALIBRATION_SIZE = 256
TEST_PER_TASK = 1000
MAX_ATTEMPTS = 64  # scenes tried per question (6 bits of the scene seed)

SPLIT_CODES = {"train": 1, "calibration": 2, "test": 3}  # 0 is left to ad-hoc seeds, e.g. make_scene(7)
VERSION_SPLIT_CODES = {STRESS: SPLIT_CODES, NATURAL: {"train": 5, "calibration": 6, "test": 7}}  # fixed forever
TASK_CODES = {"existence": 0, "counting": 1, "attribute": 2, "spatial": 3, "reading": 4}  # fixed forever
MAX_STREAMS = 1 << 20
MAX_INDEX = 1 << 32
_ENTROPY = 0x51A7_E5EE_D0_C0FFEE  # question-stream namespace, distinct from scene seeds' plain hashing
assert set(TASK_CODES) == set(TASKS)


def data_version(name: str | None = None) -> str:
    """The data version named by ``name``: a suite name (``stress``, ``natural``) or a data version
    (``synthvqa-v1``, ``natural-v1``); ``None`` is the default, :data:`DATA_VERSION`."""
    if name is None:
        return DATA_VERSION
    if name in SUITES:
        return SUITES[name]
    if name in VERSION_SPLIT_CODES:
        return name
    known = ", ".join([*SUITES, *VERSION_SPLIT_CODES])
    raise ValueError(f"unknown data version {name!r}; known: {known}")


def scene_seed(split: str, stream: int, index: int, attempt: int, version: str | None = None) -> int:
    """Seed of the ``attempt``-th scene tried for question ``index`` of ``stream`` in ``split`` of data version
    ``version`` (default: the stress suite): ``code << 58 | stream << 38 | index << 6 | attempt``."""
    codes = VERSION_SPLIT_CODES[data_version(version)]
    if split not in codes:
        raise ValueError(f"unknown split {split!r}; known splits: {', '.join(codes)}")
    if not (0 <= stream < MAX_STREAMS and 0 <= index < MAX_INDEX and 0 <= attempt < MAX_ATTEMPTS):
        raise ValueError(f"stream {stream}, index {index} or attempt {attempt} out of range")
    return codes[split] << 58 | stream << 38 | index << 6 | attempt


def split_of(seed: int) -> str | None:
    """The split whose namespace holds scene ``seed`` (of either data version), or ``None`` for an ad-hoc seed."""
    code = seed >> 58
    return next((name for codes in VERSION_SPLIT_CODES.values() for name, c in codes.items() if c == code), None)


def version_of(seed: int) -> str:
    """The data version whose namespace holds scene ``seed``; ad-hoc seeds are the stress suite's."""
    code = seed >> 58
    return next((v for v, codes in VERSION_SPLIT_CODES.items() if code in codes.values()), STRESS)


def layout_of(seed: int, density: NaturalParams | None = None) -> Layout:
    """The layout of scene ``seed`` in its data version (natural scenes under ``density``, default
    ``NATURAL_V1``)."""
    if version_of(seed) == NATURAL:
        return make_natural_layout(seed, density or NATURAL_V1)
    return make_layout(seed)


def make_question(
    task: str, split: str, stream: int, index: int, version: str | None = None, density: NaturalParams | None = None
) -> Question:
    """Question ``index`` of ``stream`` in ``split`` for ``task`` in data version ``version`` (default: stress;
    natural scenes under ``density``, default ``NATURAL_V1``); pure function of its arguments. ``meta`` adds the
    goal and the attempt that succeeded (and, for natural questions, the density parameters); treat it as
    read-only (splits are cached)."""
    check_task(task)
    version = data_version(version)
    scene_seed(split, stream, index, 0, version)  # validates split, stream and index
    code = VERSION_SPLIT_CODES[version][split]
    density = (density or NATURAL_V1) if version == NATURAL else None
    ss = np.random.SeedSequence(_ENTROPY, spawn_key=(code, stream, index))
    rng = np.random.Generator(np.random.PCG64(ss))
    goal = _tasks.draw_goal(task, rng)
    for attempt in range(MAX_ATTEMPTS):
        seed = scene_seed(split, stream, index, attempt, version)
        posed = _tasks.pose(task, layout_of(seed, density), goal, rng)
        if posed is not None:
            text, answer, meta = posed
            meta = {**meta, "goal": goal, "attempt": attempt}
            qid = f"{split}/{task}/{stream}/{index}"
            if density is not None:
                meta["density"] = density.to_dict()
                qid = f"natural/{qid}"
            return Question(qid, task, text, answer, seed, meta)
    where = f"{version}:{split}/{stream}/{index}"
    raise RuntimeError(f"no scene supported {task} goal {goal} in {MAX_ATTEMPTS} attempts ({where})")


def iter_train(seed: int, tasks: Sequence[str] | None = None, version: str | None = None) -> Iterator[Question]:
    """Endless training questions of stream ``seed`` (``0 <= seed < 2**20``) of data version ``version`` (default:
    stress), cycling through ``tasks`` (default: all) in order. Distinct seeds give distinct streams (give each
    data-loader worker its own); none shares a scene with the calibration or test split of either version.
    ``load_scene(q)`` renders a question's image."""
    names = tuple(check_task(t) for t in (tasks if tasks is not None else TASKS))
    if not names:
        raise ValueError("iter_train needs at least one task")
    if not 0 <= seed < MAX_STREAMS:
        raise ValueError(f"training seed must be in [0, {MAX_STREAMS}), got {seed}")
    for index in range(MAX_INDEX):
        yield make_question(names[index % len(names)], "train", seed, index, version)


@lru_cache(maxsize=2)
def _calibration(version: str) -> tuple[Question, ...]:
    return tuple(make_question(TASKS[i % len(TASKS)], "calibration", 0, i, version) for i in range(CALIBRATION_SIZE))


def calibration_split(version: str | None = None) -> list[Question]:
    """Exactly ``CALIBRATION_SIZE`` (256) questions of data version ``version`` (default: stress), tasks
    interleaved in ``TASKS`` order."""
    return list(_calibration(data_version(version)))


REFINEMENT_STREAM = 1  # the calibration split's second stream: questions no profile or quantization sees


def refinement_split(count: int = 64, version: str | None = None) -> list[Question]:
    """``count`` held-out calibration questions (stream :data:`REFINEMENT_STREAM` of the calibration namespace of
    data version ``version``, default stress; tasks interleaved in ``TASKS`` order; a prefix: question ``i`` never
    depends on ``count``): for measuring candidate schedules after profiling, never the test split and never the
    profile's own questions."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"refinement questions must be an integer >= 1, got {count!r}")
    return [make_question(TASKS[i % len(TASKS)], "calibration", REFINEMENT_STREAM, i, version) for i in range(count)]


_TEST_CACHE: dict[tuple[str, str], list[Question]] = {}


def test_split(task: str | None = None, limit: int | None = None, version: str | None = None) -> list[Question]:
    """Test questions of ``task`` (or of every task, grouped in ``TASKS`` order) of data version ``version``
    (default: stress); ``limit`` keeps the first ``limit`` questions of each task (a prefix: question ``i`` never
    depends on ``limit``)."""
    version = data_version(version)
    names = TASKS if task is None else (check_task(task),)
    n = TEST_PER_TASK if limit is None else max(0, min(int(limit), TEST_PER_TASK))
    out: list[Question] = []
    for name in names:
        done = _TEST_CACHE.setdefault((version, name), [])
        done.extend(make_question(name, "test", TASK_CODES[name], i, version) for i in range(len(done), n))
        out.extend(done[:n])
    return out


test_split.__test__ = False  # type: ignore[attr-defined]  # keeps pytest from collecting it when imported


def question_version(question: Question) -> str:
    """The data version a question belongs to (read from its scene seed's namespace)."""
    return version_of(question.scene_seed)


def load_scene(question: Question) -> Scene:
    """The rendered scene a question is about, in its data version (and its ``meta["density"]``, if any)."""
    density = (question.meta or {}).get("density")
    params = NaturalParams.from_dict(density) if density else None
    return render_scene(layout_of(question.scene_seed, params))


# ----------------------------------------------------------------------------------------------
# Preview: a grid of test scenes, each captioned with one question and its answer

PREVIEW_PICKS = (("existence", 0), ("counting", 0), ("attribute", 1), ("spatial", 1), ("reading", 0), ("reading", 2))


def preview_image(picks: Sequence[tuple[str, int]] = PREVIEW_PICKS, columns: int = 3, zoom: int = 2) -> np.ndarray:
    """``uint8 [H, W, 3]`` grid of test scenes (``(task, index)`` picks), upscaled ``zoom`` x, with captions."""
    return tile_questions([test_split(task, i + 1)[-1] for task, i in picks], columns, zoom)


def tile_questions(questions: Sequence[Question], columns: int = 3, zoom: int = 2) -> np.ndarray:
    """``uint8 [H, W, 3]`` grid of the questions' scenes, upscaled ``zoom`` x, each captioned with its question
    and answer."""
    side, gap, line_h, text_scale = IMAGE_SIZE * zoom, 8, 9 * zoom, zoom
    per_line = (side - gap) // ((font.GLYPH_W + 1) * text_scale)
    tiles = []
    for q in questions:
        img = np.repeat(np.repeat(load_scene(q).image, zoom, axis=0), zoom, axis=1)  # [side, side, 3]
        lines = _wrap(f"Q: {q.question}", per_line) + _wrap(f"A: {q.answer}", per_line)
        caption = np.full((len(lines) * line_h + 2 * gap, side, 3), 24, dtype=np.uint8)
        for k, line in enumerate(lines):
            ink = font.render_text(line.upper(), text_scale)  # [7 * scale, w]
            y = gap + k * line_h
            colour = (250, 250, 210) if k < len(lines) - 1 else (120, 240, 120)  # question, then answer
            caption[y : y + ink.shape[0], gap // 2 : gap // 2 + ink.shape[1]][ink] = colour
        tiles.append(np.concatenate([img, caption], axis=0))
    tile_h = max(t.shape[0] for t in tiles)
    rows = -(-len(tiles) // columns)
    out = np.full((rows * (tile_h + gap) + gap, columns * (side + gap) + gap, 3), 48, dtype=np.uint8)
    for n, t in enumerate(tiles):
        y, x = gap + (n // columns) * (tile_h + gap), gap + (n % columns) * (side + gap)
        out[y : y + t.shape[0], x : x + side] = t
    return out


def _wrap(text: str, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    return lines + [cur] if cur else lines


if __name__ == "__main__":  # python -m quota.testbed.splits docs/scenes_preview.png
    import sys

    from quota.testbed.scenes import encode_png

    path = sys.argv[1] if len(sys.argv) > 1 else "docs/scenes_preview.png"
    with open(path, "wb") as f:
        f.write(encode_png(preview_image()))
    print(f"wrote {path} ({DATA_VERSION})")
