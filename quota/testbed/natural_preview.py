"""Preview images of the natural suite's splits and its density statistics, for ``docs/natural_suite.md``.

``python -m quota.testbed.natural_preview docs/img`` writes ``natural_calibration.png``, ``natural_test.png`` and
``natural_refinement.png`` (the first questions of each split, one per task, captioned with question and answer)
and prints the share of patches carrying content in each suite.
"""

from __future__ import annotations

import sys
from pathlib import Path

from quota.testbed.natural_scenes import content_share, is_dense
from quota.testbed.scenes import encode_png
from quota.testbed.splits import NATURAL, TASKS, calibration_split, load_scene, refinement_split, test_split, tile_questions

PREVIEW_COUNT = 5  # scenes per split: one question of each task


def split_questions(split: str, version: str = NATURAL) -> list:
    """The first question of each task in ``split`` (``calibration``, ``test`` or ``refinement``)."""
    if split == "test":
        return [test_split(t, 1, version)[0] for t in TASKS]
    pool = calibration_split(version) if split == "calibration" else refinement_split(2 * len(TASKS), version)
    return [next(q for q in pool if q.task == t) for t in TASKS]


def density_stats(version: str, count: int = 40) -> dict[str, float]:
    """Mean share of patches with an object or character label, and the share of questions on dense scenes (natural
    only), over the first ``count`` test questions of each task (``count * 5`` scenes)."""
    qs = test_split(None, count, version)
    shares = [content_share((s.patch_shape, s.patch_char)) for s in map(load_scene, qs)]
    stats = {"content_share": sum(shares) / len(shares)}
    if version == NATURAL:
        stats["dense_question_share"] = sum(is_dense(q.scene_seed) for q in qs) / len(qs)
    return stats


def main(folder: str = "docs/img") -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("calibration", "test", "refinement"):
        path = out / f"natural_{split}.png"
        path.write_bytes(encode_png(tile_questions(split_questions(split), columns=PREVIEW_COUNT, zoom=1)))
        print(f"wrote {path}")
    for version in ("synthvqa-v1", NATURAL):
        print(version, density_stats(version))


if __name__ == "__main__":
    main(*sys.argv[1:2])
