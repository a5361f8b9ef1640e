"""Procedural, information-dense scenes for the testbed VLM: 192 x 192 RGB, 24 x 24 patches of 8 px.

A scene is many small objects (7 shapes, 8 colours, 3 sizes, 3 textures), 4-6 short text items
(numbers and words in the bitmap font of ``quota.testbed.font``), clutter marks, and a textured
background (noise, gradients, stripes, checkers, ruled grids, or several of those in regions).

Contract:
- ``make_layout(seed)`` is a pure function of a non-negative integer seed and returns the full
  annotation without drawing anything (cheap: questions are posed on layouts alone).
  ``render_scene(layout)`` draws it and computes per-patch labels; ``make_scene(seed)`` does both.
- Deterministic across platforms: only ``Generator.integers`` draws (PCG64 seeded through
  ``SeedSequence``) and integer arithmetic; the layout and the pixel noise use separate streams.
- Objects never overlap each other or text (bounding boxes keep a gap), so each is fully visible.
  Text items sit one per cell of the 3 x 3 grid of 64 px cells, entirely inside their cell.
- Boxes are half-open pixel boxes ``(x0, y0, x1, y1)``; ``x`` is the column, ``y`` the row.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from quota.testbed import font

IMAGE_SIZE = 192
PATCH = 8
GRID = IMAGE_SIZE // PATCH  # 24 patches per side, 576 visual tokens
CELL = IMAGE_SIZE // 3  # 64 px cells of the 3 x 3 region grid
MIN_PATCH_PIXELS = 6  # an object (or a character box) labels a patch only if it covers >= 6 of its 64 pixels

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond", "ring")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (222, 36, 36),
    "green": (40, 184, 64),
    "blue": (44, 86, 236),
    "yellow": (242, 222, 40),
    "purple": (150, 62, 206),
    "orange": (250, 138, 24),
    "cyan": (36, 214, 222),
    "pink": (252, 112, 184),
}
SIZES: dict[str, int] = {"small": 10, "medium": 14, "large": 20}  # bounding-box side in pixels
TEXTURES = ("solid", "striped", "dotted")
SHAPE_IDS = {s: i + 1 for i, s in enumerate(SHAPES)}  # 0 = background
COLOUR_IDS = {c: i + 1 for i, c in enumerate(COLOURS)}  # 0 = background
SIZE_IDS = {z: i + 1 for i, z in enumerate(SIZES)}  # 0 = background
TEXTURE_IDS = {t: i + 1 for i, t in enumerate(TEXTURES)}  # 0 = background
REGIONS = (
    "top left", "top middle", "top right",
    "middle left", "centre", "middle right",
    "bottom left", "bottom middle", "bottom right",
)  # index = 3 * row + column of the 64 px cell

WORDS = (
    "CAT", "DOG", "SUN", "MAP", "KEY", "BOX", "CUP", "HAT", "PEN", "BUS", "CAR", "JAM", "OAK", "ICE",
    "FISH", "BIRD", "TREE", "LAMP", "DOOR", "BOOK", "MILK", "RAIN", "SHIP", "FROG", "LION", "BEAR",
    "WOLF", "DUCK", "GOLD", "SALT", "ROAD", "PARK", "CAKE", "SOAP", "KITE", "STOP", "EXIT", "OPEN",
    "SHOP", "TAXI", "MENU", "BANK", "CAFE", "FARM", "HILL", "LAKE", "MOON", "SNOW", "WIND", "ZONE",
    "JAZZ", "QUIZ", "VOTE", "PLUM", "APPLE", "GRAPE", "LEMON", "MANGO", "TIGER", "ZEBRA", "HOUSE",
    "TRAIN", "PLANE", "CLOCK", "WATCH", "CHAIR", "TABLE", "RADIO", "PHONE", "BREAD", "HONEY", "PIANO",
)  # no number words, articles, colours, shapes, sizes, textures, yes/no or directions

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), half-open
RGB = tuple[int, int, int]

_BG_KINDS = ("noise", "gradient", "stripes", "checker", "grid")


@dataclass(frozen=True)
class SceneObject:
    """One drawn object. ``centre`` is ``((x0 + x1) // 2, (y0 + y1) // 2)``; ``rgb`` its exact base colour."""

    shape: str
    colour: str
    size: str
    texture: str
    rgb: RGB
    bbox: Box
    centre: tuple[int, int]


@dataclass(frozen=True)
class TextItem:
    """A number or word. ``bbox`` bounds the ink area; ``char_boxes`` the ``5s x 7s`` cell of each character;
    ``plate`` is the plate colour (``plate_bbox`` its box) or ``None`` for text drawn on the background."""

    text: str
    kind: str  # "number" | "word"
    scale: int
    rgb: RGB
    bbox: Box
    centre: tuple[int, int]
    cell: int  # index into REGIONS
    char_boxes: tuple[Box, ...]
    plate: RGB | None
    plate_bbox: Box | None


@dataclass(frozen=True)
class Background:
    """One background region: ``kind`` in noise|gradient|stripes|checker|grid, two colours, a period or
    direction parameter and a noise amplitude (pixels get ``+-noise`` luminance noise)."""

    kind: str
    box: Box
    colour0: RGB
    colour1: RGB
    period: int
    direction: int
    noise: int


@dataclass(frozen=True)
class Mark:
    """Clutter: a straight 1 px line (``step`` in {-1, 0, 1}^2, ``length`` pixels) or a small speck box."""

    kind: str  # "line" | "speck"
    start: tuple[int, int]
    step: tuple[int, int]
    length: int
    box: Box
    rgb: RGB


@dataclass(frozen=True)
class Layout:
    """Everything about a scene except its pixels: the full annotation."""

    seed: int
    background: tuple[Background, ...]
    objects: tuple[SceneObject, ...]
    texts: tuple[TextItem, ...]
    clutter: tuple[Mark, ...]


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered scene: image plus annotation and per-patch labels for the vision tower's auxiliary loss.

    ``patch_shape`` / ``patch_colour`` / ``patch_size`` / ``patch_texture`` hold the shape / colour / size /
    texture id (``SHAPE_IDS`` / ``COLOUR_IDS`` / ``SIZE_IDS`` / ``TEXTURE_IDS``) of the object covering the
    most pixels of each 8 x 8 patch (at least ``MIN_PATCH_PIXELS``), 0 if none;
    ``patch_char`` the ``font.CHAR_IDS`` id of the character whose ``char_boxes`` cell covers the most
    pixels of the patch (same threshold). Ties go to the earlier object / character.
    """

    layout: Layout
    image: np.ndarray  # [192, 192, 3] uint8
    patch_shape: np.ndarray  # [24, 24] int64
    patch_colour: np.ndarray  # [24, 24] int64
    patch_char: np.ndarray  # [24, 24] int64
    patch_size: np.ndarray  # [24, 24] int64
    patch_texture: np.ndarray  # [24, 24] int64

    @property
    def seed(self) -> int:
        return self.layout.seed

    @property
    def objects(self) -> tuple[SceneObject, ...]:
        return self.layout.objects

    @property
    def texts(self) -> tuple[TextItem, ...]:
        return self.layout.texts


# ----------------------------------------------------------------------------------------------
# Random draws (integers only)


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(layout stream, render stream) of one scene seed."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"scene seed must be a non-negative integer, got {seed!r}")
    streams = [np.random.SeedSequence(int(seed), spawn_key=(k,)) for k in (0, 1)]
    return np.random.Generator(np.random.PCG64(streams[0])), np.random.Generator(np.random.PCG64(streams[1]))


def _int(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Uniform integer in ``[lo, hi]`` (inclusive)."""
    return int(rng.integers(lo, hi + 1))


def _weighted(r: int, weights: list[int]) -> int:
    """Index ``i`` whose cumulative-weight interval holds ``r`` (``r`` uniform in ``[0, sum(weights))``)."""
    for i, w in enumerate(weights):
        r -= w
        if r < 0:
            return i
    raise AssertionError("unreachable")


def _permutation(rng: np.random.Generator, n: int) -> list[int]:
    """Fisher-Yates shuffle of ``range(n)`` with integer draws."""
    p = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i + 1))
        p[i], p[j] = p[j], p[i]
    return p


def _skewed_weights(rng: np.random.Generator, n: int) -> list[int]:
    """Per-scene category weights: uniform, or (half the time) one dominant category so counts spread to 9."""
    w = [2] * n
    if _int(rng, 0, 1):
        w[_int(rng, 0, n - 1)] += _int(rng, 2, 10)
    return w


# ----------------------------------------------------------------------------------------------
# Shapes


# Polygons in units where the bounding box spans [-1000, 1000] on both axes.
_TRIANGLE = ((0, -900), (1000, 800), (-1000, 800))
_STAR = (
    (0, -905), (265, -269), (951, -214), (428, 234), (588, 904),
    (0, 545), (-588, 904), (-428, 234), (-951, -214), (-265, -269),
)


def _polygon(verts: tuple[tuple[int, int], ...], s: int) -> np.ndarray:
    """Even-odd point-in-polygon test at pixel centres, exact integer arithmetic; ``bool [s, s]``."""
    c = (2 * np.arange(s, dtype=np.int64) + 1 - s) * 1000  # pixel centres in half-pixels x 1000
    px, py = c[None, :], c[:, None]
    inside = np.zeros((s, s), dtype=bool)
    for k in range(len(verts)):
        (ax, ay), (bx, by) = verts[k], verts[(k + 1) % len(verts)]
        ax, ay, bx, by = ax * s, ay * s, bx * s, by * s
        if ay == by:
            continue
        crosses = (ay > py) != (by > py)
        lhs, rhs = (px - ax) * (by - ay), (py - ay) * (bx - ax)
        left = (lhs < rhs) if by > ay else (lhs > rhs)
        inside ^= crosses & left
    return inside


@lru_cache(maxsize=None)
def shape_mask(shape: str, size_px: int) -> np.ndarray:
    """Filled silhouette of ``shape`` in a ``size_px`` square box: ``bool [size_px, size_px]`` (read-only)."""
    s = size_px
    c = 2 * np.arange(s, dtype=np.int64) + 1 - s  # pixel centres in half-pixels, box is [-s, s]
    x, y = c[None, :], c[:, None]
    r2 = x * x + y * y
    if shape == "circle":
        m = r2 <= s * s
    elif shape == "ring":
        m = (r2 <= s * s) & (4 * r2 >= s * s)
    elif shape == "square":
        m = (5 * np.abs(x) <= 4 * s) & (5 * np.abs(y) <= 4 * s)
    elif shape == "diamond":
        m = np.abs(x) + np.abs(y) <= s
    elif shape == "cross":
        m = (3 * np.abs(x) <= s) | (3 * np.abs(y) <= s)
    elif shape == "triangle":
        m = _polygon(_TRIANGLE, s)
    elif shape == "star":
        m = _polygon(_STAR, s)
    else:
        raise ValueError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")
    m = np.broadcast_to(m, (s, s)).copy()
    m.setflags(write=False)
    return m


@lru_cache(maxsize=None)
def texture_mask(texture: str, size_px: int) -> np.ndarray:
    """Pixels of a ``size_px`` box drawn in the dark shade of the colour: ``bool [size_px, size_px]``."""
    yy, xx = np.mgrid[0:size_px, 0:size_px]
    if texture == "solid":
        m = np.zeros((size_px, size_px), dtype=bool)
    elif texture == "striped":
        m = ((xx + yy) // 2) % 2 == 1  # diagonal stripes, 2 px wide
    elif texture == "dotted":
        m = (xx % 3 == 1) & (yy % 3 == 1)
    else:
        raise ValueError(f"unknown texture {texture!r}; known textures: {', '.join(TEXTURES)}")
    m.setflags(write=False)
    return m


def dark_shade(rgb: RGB) -> RGB:
    """The shade used for stripes and dots: 2/5 of each channel."""
    return (rgb[0] * 2 // 5, rgb[1] * 2 // 5, rgb[2] * 2 // 5)


def region_of(x: int, y: int) -> int:
    """Index into ``REGIONS`` of the 64 px cell holding pixel ``(x, y)``."""
    return 3 * min(y // CELL, 2) + min(x // CELL, 2)


# ----------------------------------------------------------------------------------------------
# Layout


class _Occupancy:
    def __init__(self) -> None:
        self.grid = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)  # [192, 192]

    def free(self, box: Box, gap: int) -> bool:
        x0, y0, x1, y1 = box
        return not self.grid[max(y0 - gap, 0) : y1 + gap, max(x0 - gap, 0) : x1 + gap].any()

    def take(self, box: Box) -> None:
        x0, y0, x1, y1 = box
        self.grid[y0:y1, x0:x1] = True


def _muted(rng: np.random.Generator, lo: int = 56, hi: int = 146) -> RGB:
    g = _int(rng, lo, hi)
    return tuple(min(max(g + _int(rng, -18, 18), 30), 170) for _ in range(3))  # type: ignore[return-value]


def _background_region(rng: np.random.Generator, box: Box) -> Background:
    kind = _BG_KINDS[_int(rng, 0, len(_BG_KINDS) - 1)]
    c0 = _muted(rng)
    delta = _int(rng, 16, 40) * (1 if sum(c0) < 300 else -1)
    c1 = tuple(min(max(v + delta + _int(rng, -10, 10), 30), 170) for v in c0)
    period = {"stripes": _int(rng, 3, 10), "checker": _int(rng, 5, 16), "grid": _int(rng, 7, 18)}.get(kind, 0)
    direction = _int(rng, 0, 3)
    noise = _int(rng, 3, 20) if kind == "noise" else _int(rng, 0, 8)
    return Background(kind, box, c0, c1, period, direction, noise)  # type: ignore[arg-type]


def _background(rng: np.random.Generator) -> tuple[Background, ...]:
    full = (0, 0, IMAGE_SIZE, IMAGE_SIZE)
    if _int(rng, 0, 2) > 0:
        return (_background_region(rng, full),)
    boxes = [full]  # one in three scenes: 2-4 regions by guillotine cuts
    for _ in range(_int(rng, 1, 3)):
        i = _int(rng, 0, len(boxes) - 1)
        x0, y0, x1, y1 = boxes[i]
        if x1 - x0 >= y1 - y0:
            cut = _int(rng, x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4)
            parts = [(x0, y0, cut, y1), (cut, y0, x1, y1)]
        else:
            cut = _int(rng, y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4)
            parts = [(x0, y0, x1, cut), (x0, cut, x1, y1)]
        boxes[i : i + 1] = parts
    return tuple(_background_region(rng, b) for b in boxes)


def _random_text(rng: np.random.Generator, used: set[str]) -> tuple[str, str]:
    while True:
        if _int(rng, 0, 1):
            n = _int(rng, 2, 4)
            s = str(_int(rng, 1, 9)) + "".join(str(_int(rng, 0, 9)) for _ in range(n - 1))
            kind = "number"
        else:
            s, kind = WORDS[_int(rng, 0, len(WORDS) - 1)], "word"
        if s not in used:
            used.add(s)
            return s, kind


def _texts(rng: np.random.Generator, occ: _Occupancy, count: tuple[int, int] = (4, 6)) -> tuple[TextItem, ...]:
    """``count`` (inclusive range) text items, one per cell of a random subset of the 3 x 3 grid."""
    cells = _permutation(rng, 9)[: _int(rng, *count)]
    used: set[str] = set()
    items = []
    for cell in sorted(cells):
        s, kind = _random_text(rng, used)
        scale = 1 if len(s) > 4 else _int(rng, 1, 2)
        h, w = font.text_size(s, scale)
        plate = None
        if _int(rng, 0, 1):
            v = _int(rng, 196, 240)
            plate = (v + _int(rng, -8, 8), v + _int(rng, -8, 8), v + _int(rng, -8, 8))
            rgb = (_int(rng, 0, 40),) * 3
        else:
            rgb = (_int(rng, 226, 255),) * 3
        pad = 2 if plate else 0
        cx0, cy0 = (cell % 3) * CELL, (cell // 3) * CELL
        x0 = _int(rng, cx0 + 3 + pad, cx0 + CELL - 3 - pad - w)
        y0 = _int(rng, cy0 + 3 + pad, cy0 + CELL - 3 - pad - h)
        bbox = (x0, y0, x0 + w, y0 + h)
        boxes = tuple(
            (x0 + dx, y0, x0 + dx + font.GLYPH_W * scale, y0 + h) for dx in font.char_offsets(s, scale)
        )
        plate_bbox = (x0 - pad, y0 - pad, x0 + w + pad, y0 + h + pad) if plate else None
        occ.take(plate_bbox or bbox)
        centre = ((bbox[0] + bbox[2]) // 2, (bbox[1] + bbox[3]) // 2)
        item = TextItem(s, kind, scale, rgb, bbox, centre, cell, boxes, plate, plate_bbox)  # type: ignore[arg-type]
        items.append(item)
    return tuple(items)


def _objects(
    rng: np.random.Generator, occ: _Occupancy, count: tuple[int, int] = (16, 26),
    size_w: tuple[int, int, int] = (3, 2, 1), area: Box | None = None, scale_permille: int = 1000,
) -> tuple[SceneObject, ...]:
    """``count`` (inclusive range) objects tried, sizes drawn with weights ``size_w`` (small, medium, large) and
    drawn ``scale_permille / 1000`` times their ``SIZES`` side, each placed at up to 40 random spots inside
    ``area`` (default: the whole image less a 1 px border)."""
    colour_names, size_names = list(COLOURS), list(SIZES)
    colour_w, shape_w = _skewed_weights(rng, len(COLOURS)), _skewed_weights(rng, len(SHAPES))
    size_w, texture_w = list(size_w), [2, 1, 1]
    lows = [0, 0, 0, 0, -10, -10, -10]
    highs = [sum(shape_w), sum(colour_w), sum(size_w), sum(texture_w), 11, 11, 11]
    objects = []
    for _ in range(_int(rng, *count)):
        r = [int(v) for v in rng.integers(lows, highs)]  # one draw per attribute and colour channel
        shape, colour = SHAPES[_weighted(r[0], shape_w)], colour_names[_weighted(r[1], colour_w)]
        size, texture = size_names[_weighted(r[2], size_w)], TEXTURES[_weighted(r[3], texture_w)]
        rgb = tuple(min(max(c + j, 0), 255) for c, j in zip(COLOURS[colour], r[4:]))
        s = SIZES[size] * scale_permille // 1000
        if area is None:
            spots = rng.integers(1, IMAGE_SIZE - s, size=(40, 2))  # [40, 2] up to 40 placements
        else:
            spots = rng.integers(area[:2], [max(area[2] - s, area[0] + 1), max(area[3] - s, area[1] + 1)], size=(40, 2))
        for x0, y0 in spots.tolist():
            box = (x0, y0, x0 + s, y0 + s)
            if occ.free(box, gap=3):
                occ.take(box)
                centre = (x0 + s // 2, y0 + s // 2)
                objects.append(SceneObject(shape, colour, size, texture, rgb, box, centre))  # type: ignore[arg-type]
                break
    return tuple(objects)


_STEPS = ((1, 0), (0, 1), (1, 1), (1, -1))


def _clutter(
    rng: np.random.Generator, occ: _Occupancy, bg: tuple[Background, ...], count: tuple[int, int] = (16, 40)
) -> tuple[Mark, ...]:
    """Up to ``count`` (inclusive range, drawn) clutter marks; those touching content or the border are dropped."""
    base = sum(bg[0].colour0) // 3
    n = _int(rng, *count)
    # per mark: light?, contrast, rgb jitter x3, line?, step, length, x, y, speck w, speck h
    lows = [0, 30, -12, -12, -12, 0, 0, 5, 0, 0, 1, 1]
    highs = [2, 61, 13, 13, 13, 3, 4, 17, IMAGE_SIZE, IMAGE_SIZE, 4, 4]
    marks = []
    draws = rng.integers(lows, highs, size=(n, 12)).tolist()  # [n, 12]
    for light, contrast, jr, jg, jb, kind, step_i, length, x, y, w, h in draws:
        v = min(max(base + contrast * (1 if light else -1), 10), 190)
        rgb = (min(max(v + jr, 0), 255), min(max(v + jg, 0), 255), min(max(v + jb, 0), 255))
        if kind:
            step = _STEPS[step_i]
            xe, ye = x + step[0] * (length - 1), y + step[1] * (length - 1)
            mark = Mark("line", (x, y), step, length, (min(x, xe), min(y, ye), max(x, xe) + 1, max(y, ye) + 1), rgb)
        else:
            mark = Mark("speck", (x, y), (0, 0), 0, (x, y, x + w, y + h), rgb)
        x0, y0, x1, y1 = mark.box
        if x0 < 0 or y0 < 0 or x1 > IMAGE_SIZE or y1 > IMAGE_SIZE or not occ.free(mark.box, gap=2):
            continue
        marks.append(mark)
    return tuple(marks)


@lru_cache(maxsize=256, typed=True)  # a question's layout is rendered right after it was posed
def make_layout(seed: int) -> Layout:
    """The annotation of scene ``seed`` (no pixels). Pure function of ``seed``; the result is shared
    (immutable), recent seeds come from a small cache."""
    rng, _ = _rngs(seed)
    background = _background(rng)
    occ = _Occupancy()
    texts = _texts(rng, occ)
    objects = _objects(rng, occ)
    clutter = _clutter(rng, occ, background)
    return Layout(int(seed), background, objects, texts, clutter)


# ----------------------------------------------------------------------------------------------
# Rendering


def _paint_background(img: np.ndarray, bg: Background, noise: np.ndarray) -> None:
    """Fill ``bg.box`` of ``img`` (int16 ``[192, 192, 3]``) in place, adding ``noise`` (int16 ``[192, 192]``,
    values in [-16, 16]) scaled to ``+-bg.noise``."""
    x0, y0, x1, y1 = bg.box
    h, w = y1 - y0, x1 - x0
    xx, yy = np.arange(w, dtype=np.int32)[None, :], np.arange(h, dtype=np.int32)[:, None]  # [1, w], [h, 1]
    c0, c1 = np.array(bg.colour0, dtype=np.int32), np.array(bg.colour1, dtype=np.int32)
    if bg.kind == "gradient":
        t, span = ((xx, w), (yy, h), (xx + yy, w + h - 1), (xx + (h - 1 - yy), w + h - 1))[bg.direction]
        t = np.broadcast_to(t, (h, w))
        region = (c0 + (c1 - c0) * t[..., None] // max(span - 1, 1)).astype(np.int16)  # [h, w, 3]
    else:
        if bg.kind == "noise":
            sel = np.zeros((h, w), dtype=np.int16)
        elif bg.kind == "stripes":
            t = (xx + 0 * yy, yy + 0 * xx, xx + yy, xx - yy + h)[bg.direction]
            sel = ((t // bg.period) % 2).astype(np.int16)
        elif bg.kind == "checker":
            sel = ((xx // bg.period + yy // bg.period) % 2).astype(np.int16)
        else:  # grid: 1 px rules every `period` pixels
            sel = ((xx % bg.period == 0) | (yy % bg.period == 0)).astype(np.int16)
        region = c0.astype(np.int16) + sel[..., None] * (c1 - c0).astype(np.int16)  # [h, w, 3]
    region += (noise[y0:y1, x0:x1] * np.int16(bg.noise) // np.int16(16))[..., None]
    img[y0:y1, x0:x1] = region


def _paint_mark(img: np.ndarray, m: Mark) -> None:
    if m.kind == "line":
        idx = np.arange(m.length)
        img[m.start[1] + m.step[1] * idx, m.start[0] + m.step[0] * idx] = m.rgb
    else:
        x0, y0, x1, y1 = m.box
        img[y0:y1, x0:x1] = m.rgb


def object_pixels(obj: SceneObject) -> np.ndarray:
    """``bool [s, s]`` silhouette of ``obj`` inside its (square) bbox of side ``s``."""
    return shape_mask(obj.shape, obj.bbox[2] - obj.bbox[0])


def _patch_cover(mask: np.ndarray, x0: int, y0: int) -> tuple[np.ndarray, int, int]:
    """Pixels of ``mask`` (placed at ``(x0, y0)``) falling in each patch it touches: ``([ph, pw], py0, px0)``."""
    h, w = mask.shape
    px0, py0 = x0 // PATCH, y0 // PATCH
    px1, py1 = (x0 + w - 1) // PATCH + 1, (y0 + h - 1) // PATCH + 1
    canvas = np.zeros(((py1 - py0) * PATCH, (px1 - px0) * PATCH), dtype=np.int32)
    oy, ox = y0 - py0 * PATCH, x0 - px0 * PATCH
    canvas[oy : oy + h, ox : ox + w] = mask
    counts = canvas.reshape(py1 - py0, PATCH, px1 - px0, PATCH).sum(axis=(1, 3))  # [ph, pw]
    return counts, py0, px0


def _claim(best: np.ndarray, counts: np.ndarray, py0: int, px0: int) -> tuple[np.ndarray, slice, slice]:
    """Patches where ``counts`` beats the best cover so far (and the threshold); updates ``best``."""
    ph, pw = counts.shape
    rows, cols = slice(py0, py0 + ph), slice(px0, px0 + pw)
    b = best[rows, cols]
    win = (counts >= MIN_PATCH_PIXELS) & (counts > b)  # [ph, pw]
    b[win] = counts[win]
    return win, rows, cols


def render_scene(layout: Layout) -> Scene:
    """Draw ``layout`` (background, noise, clutter, objects, plates, text) and compute its patch labels."""
    _, rng = _rngs(layout.seed)
    noise = rng.integers(-16, 17, size=(IMAGE_SIZE, IMAGE_SIZE), dtype=np.int16)  # [192, 192]
    canvas = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.int16)  # [192, 192, 3]; regions tile the image
    for bg in layout.background:
        _paint_background(canvas, bg, noise)
    img = np.clip(canvas, 0, 255).astype(np.uint8)  # [192, 192, 3]
    for m in layout.clutter:
        _paint_mark(img, m)

    patch_shape = np.zeros((GRID, GRID), dtype=np.int64)  # [24, 24]
    patch_colour = np.zeros((GRID, GRID), dtype=np.int64)  # [24, 24]
    patch_size = np.zeros((GRID, GRID), dtype=np.int64)  # [24, 24]
    patch_texture = np.zeros((GRID, GRID), dtype=np.int64)  # [24, 24]
    best = np.zeros((GRID, GRID), dtype=np.int32)  # [24, 24] pixel count of the current label
    for o in layout.objects:
        x0, y0, x1, y1 = o.bbox
        mask = object_pixels(o)  # [s, s]
        dark = mask & texture_mask(o.texture, x1 - x0)
        box = img[y0:y1, x0:x1]
        box[mask] = o.rgb
        box[dark] = dark_shade(o.rgb)
        counts, py0, px0 = _patch_cover(mask, x0, y0)
        win, rows, cols = _claim(best, counts, py0, px0)
        patch_shape[rows, cols][win] = SHAPE_IDS[o.shape]
        patch_colour[rows, cols][win] = COLOUR_IDS[o.colour]
        patch_size[rows, cols][win] = SIZE_IDS[o.size]
        patch_texture[rows, cols][win] = TEXTURE_IDS[o.texture]

    patch_char = np.zeros((GRID, GRID), dtype=np.int64)  # [24, 24]
    best_char = np.zeros((GRID, GRID), dtype=np.int32)
    for t in layout.texts:
        if t.plate_bbox is not None:
            x0, y0, x1, y1 = t.plate_bbox
            img[y0:y1, x0:x1] = t.plate
        x0, y0, x1, y1 = t.bbox
        img[y0:y1, x0:x1][font.render_text(t.text, t.scale)] = t.rgb
        for ch, (cx0, cy0, cx1, cy1) in zip(t.text, t.char_boxes):
            counts, py0, px0 = _patch_cover(np.ones((cy1 - cy0, cx1 - cx0), dtype=bool), cx0, cy0)
            win, rows, cols = _claim(best_char, counts, py0, px0)
            patch_char[rows, cols][win] = font.CHAR_IDS[ch]

    return Scene(layout, img, patch_shape, patch_colour, patch_char, patch_size, patch_texture)


def make_scene(seed: int) -> Scene:
    """``render_scene(make_layout(seed))``: the image, its annotation and its patch labels."""
    return render_scene(make_layout(seed))


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB ``uint8 [H, W, 3]`` image (zlib + struct; no imaging library needed)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {image.dtype} {image.shape}")
    h, w, _ = image.shape
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), image.reshape(h, w * 3)], axis=1)  # filter 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body
