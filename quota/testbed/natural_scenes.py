"""Natural-density scenes: the layouts of the ``natural`` suite, closer to photographs than the stress suite's.

Most scenes are *sparse*: a few objects, mostly large, gathered in one subject area of the image, one to
three text items, a plain background (flat colour with faint noise, or a soft gradient) and little clutter,
so most of the image carries nothing a question needs. A minority are *dense*: drawn exactly as the stress
suite draws its scenes (:mod:`quota.testbed.scenes`: 16-26 objects, 4-6 text items, textured backgrounds,
clutter). The same objects, colours, sizes, textures, font and words as the stress suite are used, so the
testbed sees nothing it was not trained on, only another density.

Contract:
- ``make_natural_layout(seed, params)`` is a pure function of the seed and the frozen :class:`NaturalParams`
  (integer draws only, PCG64 through ``SeedSequence``, the same two streams per seed as the stress suite);
  it returns a :class:`~quota.testbed.scenes.Layout` that :func:`~quota.testbed.scenes.render_scene` draws.
- Every density knob is a field of :class:`NaturalParams`; ``NATURAL_V1`` holds the values frozen into the
  ``natural-v1`` data version (searched by ``examples/calibrate_natural.py`` against FastV's published curve).
  Changing a default value changes the data version.
- ``attempt`` (the low 6 bits of a split's scene seed) at or above ``params.dense_after`` always gives a
  dense scene, so a goal only dense scenes support (a count of 9) is still found within the attempts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np

from quota.testbed.scenes import (  # the stress suite's builders, shared so both suites draw alike
    IMAGE_SIZE, Background, Layout, _background, _background_region, _clutter, _int, _muted, _Occupancy, _objects, _rngs, _texts,
)


@dataclass(frozen=True)
class NaturalParams:
    """Named density parameters of the natural suite (integers; ``*_permille`` are shares out of 1000).

    - ``dense_permille``: share of scenes drawn dense (the stress suite's layout), the main knob.
    - ``objects_min``/``objects_max``: objects tried in a sparse scene (inclusive range).
    - ``large_weight``: weight of ``large`` against 1 for ``small`` and 2 for ``medium`` in a sparse scene.
    - ``area_min``: least side in px of the subject area a sparse scene's objects are placed in (the side is
      drawn in ``[area_min, 190]``); the rest of the image holds at most text and clutter.
    - ``texts_min``/``texts_max``: text items in a sparse scene (one per cell of the 3 x 3 grid).
    - ``clutter_max``: clutter marks tried in a sparse scene (``0..clutter_max``).
    - ``plain_permille``: share of sparse scenes with a plain background (the rest get one textured region).
    - ``dense_after``: attempts at or above it are dense (see the module contract); 64 turns it off.
    - ``object_scale_permille``: a sparse scene's objects are drawn this many thousandths of their stress-suite
      side (10/14/20 px for small/medium/large); 1000 keeps the stress sizes the testbed was trained on.
    """

    dense_permille: int = 250
    objects_min: int = 2
    objects_max: int = 8
    large_weight: int = 3
    area_min: int = 96
    texts_min: int = 1
    texts_max: int = 3
    clutter_max: int = 6
    plain_permille: int = 800
    dense_after: int = 40
    object_scale_permille: int = 1000

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"NaturalParams.{f.name} must be a non-negative integer, got {v!r}")
        checks = [
            (self.dense_permille <= 1000 and self.plain_permille <= 1000, "shares are out of 1000"),
            (1 <= self.objects_min <= self.objects_max <= 26, "need 1 <= objects_min <= objects_max <= 26"),
            (1 <= self.texts_min <= self.texts_max <= 6, "need 1 <= texts_min <= texts_max <= 6"),
            (40 <= self.area_min <= 190, "area_min must be in [40, 190] px"),
            (self.large_weight >= 1 and self.clutter_max <= 40, "need large_weight >= 1 and clutter_max <= 40"),
            (500 <= self.object_scale_permille <= 3000, "object_scale_permille must be in [500, 3000]"),
        ]
        for ok, why in checks:
            if not ok:
                raise ValueError(f"invalid NaturalParams ({why}): {self}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NaturalParams":
        """The parameters of ``d`` (:meth:`to_dict`'s form); unknown keys raise ``ValueError``."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown NaturalParams fields: {sorted(unknown)}")
        return cls(**d)


NATURAL_V1 = NaturalParams()
"""The density parameters of data version ``natural-v1`` (frozen: any change is a new data version). Chosen by
``examples/calibrate_natural.py`` on a 2-core CPU, 8 questions per task (``natural_v1_calibration.json``): the
least miss of the candidates tried, not a fit. FastV kept 40 / 52.5 / 60% at 64 / 128 / 192 tokens against the
targets 76.7 / 85.4 / 90.4; no share of dense scenes (0, 150, 250 per mille) or object scale (2x) came near."""


def density_family(level: int, scale_permille: int | None = None) -> NaturalParams:
    """The family calibration searches: ``NATURAL_V1`` with ``dense_permille = level`` (0..1000), and with
    ``object_scale_permille = scale_permille`` when given. Along ``level`` the sparse scenes stay as they are;
    only the share of dense, stress-like scenes moves."""
    scale = NATURAL_V1.object_scale_permille if scale_permille is None else int(scale_permille)
    return NaturalParams(**{**NATURAL_V1.to_dict(), "dense_permille": int(level), "object_scale_permille": scale})


def _plain_background(rng: np.random.Generator) -> tuple[Background, ...]:
    """One full-image region: a flat muted colour with faint noise, or a soft gradient."""
    full = (0, 0, IMAGE_SIZE, IMAGE_SIZE)
    c0 = _muted(rng)
    delta = _int(rng, 10, 30) * (1 if sum(c0) < 300 else -1)
    c1 = tuple(min(max(v + delta, 30), 170) for v in c0)
    kind = ("noise", "gradient")[_int(rng, 0, 1)]
    return (Background(kind, full, c0, c1, 0, _int(rng, 0, 3), _int(rng, 1, 4)),)  # type: ignore[arg-type]


def _subject_area(rng: np.random.Generator, params: NaturalParams) -> tuple[int, int, int, int]:
    """A square of side in ``[area_min, 190]`` px inside the image (1 px border kept)."""
    side = _int(rng, params.area_min, IMAGE_SIZE - 2)
    x0, y0 = _int(rng, 1, IMAGE_SIZE - 1 - side), _int(rng, 1, IMAGE_SIZE - 1 - side)
    return (x0, y0, x0 + side, y0 + side)


@lru_cache(maxsize=256)
def make_natural_layout(seed: int, params: NaturalParams = NATURAL_V1) -> Layout:
    """The annotation of natural scene ``seed`` under ``params`` (no pixels); pure, cached, shared (immutable)."""
    rng, _ = _rngs(seed)
    dense = _draws_dense(rng, seed, params)
    occ = _Occupancy()
    if dense:  # the stress suite's draws, in its order
        background = _background(rng)
        texts = _texts(rng, occ)
        objects = _objects(rng, occ)
        clutter = _clutter(rng, occ, background)
        return Layout(int(seed), background, objects, texts, clutter)
    plain = _int(rng, 0, 999) < params.plain_permille
    background = _plain_background(rng) if plain else (_background_region(rng, (0, 0, IMAGE_SIZE, IMAGE_SIZE)),)
    texts = _texts(rng, occ, (params.texts_min, params.texts_max))
    area = _subject_area(rng, params)
    objects = _objects(rng, occ, (params.objects_min, params.objects_max), (1, 2, params.large_weight), area,
                       params.object_scale_permille)
    clutter = _clutter(rng, occ, background, (0, params.clutter_max))
    return Layout(int(seed), background, objects, texts, clutter)


def _draws_dense(rng: np.random.Generator, seed: int, params: NaturalParams) -> bool:
    """The layout stream's first draw: whether scene ``seed`` is dense (see the module contract)."""
    return _int(rng, 0, 999) < params.dense_permille or (int(seed) & 63) >= params.dense_after


def is_dense(seed: int, params: NaturalParams = NATURAL_V1) -> bool:
    """Whether natural scene ``seed`` is drawn dense under ``params`` (cheap: one draw, no layout)."""
    return _draws_dense(_rngs(seed)[0], seed, params)


def content_share(patch_labels: tuple[np.ndarray, ...]) -> float:
    """Share of the 576 patches that carry an object or a character label (``[24, 24]`` arrays, 0 = none)."""
    covered = np.zeros_like(patch_labels[0], dtype=bool)  # [24, 24]
    for labels in patch_labels:
        covered |= labels > 0
    return float(covered.mean())
