"""The natural suite's generator: deterministic byte for byte, splits disjoint and versioned, the stress suite
unchanged (a regression pin computed before the natural suite existed), density parameters validated."""

import hashlib
import subprocess
import sys

import pytest

from quota.testbed import splits
from quota.testbed.natural_calibration import DENSITY_STREAM, density_questions
from quota.testbed.natural_scenes import NATURAL_V1, NaturalParams, density_family, is_dense, make_natural_layout
from quota.testbed.scenes import make_layout, make_scene
from quota.testbed.splits import (
    NATURAL, STRESS, TASKS, calibration_split, data_version, load_scene, refinement_split, split_of, test_split,
    version_of,
)

# sha256 of the stress suite's first questions and scenes, computed on the tree before the natural suite was added
STRESS_PIN = "f49965296a644adde2cf26fea5d40da7fb6d54c3a239a6c33869ee3ef92cd042"
# the same digest of natural-v1's first questions and scenes, computed when NATURAL_V1 was frozen
NATURAL_PIN = "1c08cf09a8282174df83e3f2af7562d780e1393b2f876b078ab581e0c0c0d550"


def _digest(questions, extra_seeds=()) -> str:
    h = hashlib.sha256()
    for q in questions:
        h.update(f"{q.qid}|{q.question}|{q.answer}|{q.scene_seed};".encode())
        h.update(load_scene(q).image.tobytes())  # uint8 [192, 192, 3]
    for s in extra_seeds:
        h.update(make_scene(s).image.tobytes())
    return h.hexdigest()


def _stress_digest() -> str:
    qs = [q for t in TASKS for q in test_split(t, 2)] + calibration_split()[:5] + refinement_split(3)
    return _digest(qs, (0, 1, 7))


def _natural_questions():
    return ([q for t in TASKS for q in test_split(t, 2, "natural")] + calibration_split("natural")[:5]
            + refinement_split(3, "natural"))


def _fresh_state() -> None:
    make_natural_layout.cache_clear()
    make_layout.cache_clear()
    splits._calibration.cache_clear()
    splits._TEST_CACHE.clear()


def test_the_stress_suite_is_byte_identical_to_before():
    assert _stress_digest() == STRESS_PIN
    assert data_version() == data_version("stress") == STRESS == "synthvqa-v1"


def test_natural_v1_is_frozen():
    assert _digest(_natural_questions()) == NATURAL_PIN  # a change here is a new data version (natural-v2)
    assert (NATURAL_V1.dense_permille, NATURAL_V1.object_scale_permille) == (250, 1000)


def test_natural_scenes_and_questions_are_deterministic_byte_for_byte():
    first = _digest(_natural_questions())
    _fresh_state()
    assert _digest(_natural_questions()) == first
    code = ("from tests.test_natural_suite import _digest, _natural_questions; "
            "print(_digest(_natural_questions()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == first  # a fresh interpreter draws the same bytes


def test_natural_splits_are_disjoint_and_in_their_own_namespace():
    calib, refine = calibration_split("natural"), refinement_split(64, "natural")
    test = test_split(None, 20, "natural")
    density = density_questions(10, NATURAL_V1)
    seeds = {name: {q.scene_seed for q in qs} for name, qs in
             (("calibration", calib), ("refinement", refine), ("test", test), ("density", density))}
    names = list(seeds)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not seeds[a] & seeds[b], (a, b)
    ids = [q.qid for qs in (calib, refine, test, density) for q in qs]
    assert len(set(ids)) == len(ids) and all(i.startswith("natural/") for i in ids)
    assert {split_of(s) for s in seeds["test"]} == {"test"}
    assert {split_of(s) for s in seeds["calibration"] | seeds["refinement"] | seeds["density"]} == {"calibration"}
    assert {version_of(s) for v in seeds.values() for s in v} == {NATURAL}
    stress = {q.scene_seed for q in calibration_split() + test_split(None, 20)}
    assert not stress & set().union(*seeds.values())  # no scene seed shared with the stress suite
    assert {version_of(s) for s in stress} == {STRESS}
    assert {q.meta["density"]["dense_permille"] for q in density} == {NATURAL_V1.dense_permille}
    assert DENSITY_STREAM > splits.REFINEMENT_STREAM


def test_natural_questions_keep_the_five_families_and_their_answers():
    qs = test_split(None, 12, "natural")
    assert [q.task for q in qs[::12]] == list(TASKS)
    for q in qs:
        assert q.answer and q.question.endswith("?")
    assert any(not is_dense(q.scene_seed) for q in qs) and any(is_dense(q.scene_seed) for q in qs)


def test_sparse_scenes_are_sparser_than_the_stress_suite():
    from quota.testbed.natural_scenes import content_share

    seeds = [splits.scene_seed("test", 0, i, 0, "natural") for i in range(40)]
    sparse = [s for s in seeds if not is_dense(s)]
    assert sparse
    for s in sparse:
        layout = make_natural_layout(s)
        assert NATURAL_V1.objects_min <= len(layout.objects) <= NATURAL_V1.objects_max
        assert NATURAL_V1.texts_min <= len(layout.texts) <= NATURAL_V1.texts_max
    share = lambda scene: content_share((scene.patch_shape, scene.patch_char))  # noqa: E731
    natural = sum(share(load_scene(q)) for q in test_split("existence", 8, "natural")) / 8
    stress = sum(share(load_scene(q)) for q in test_split("existence", 8)) / 8
    assert natural < stress


def test_density_parameters_are_named_validated_and_versioned():
    assert NaturalParams.from_dict(NATURAL_V1.to_dict()) == NATURAL_V1
    assert density_family(NATURAL_V1.dense_permille) == NATURAL_V1
    with pytest.raises(ValueError, match="dense_permille"):
        NaturalParams(dense_permille=-1)
    with pytest.raises(ValueError, match="objects_min"):
        NaturalParams(objects_min=5, objects_max=3)
    with pytest.raises(ValueError, match="unknown NaturalParams fields"):
        NaturalParams.from_dict({"clutter": 3})
    with pytest.raises(ValueError, match="unknown data version 'nat'"):
        data_version("nat")
    assert data_version("natural") == data_version("natural-v1") == NATURAL
    every_dense, no_dense = density_family(1000), NaturalParams(dense_permille=0, dense_after=64)
    seeds = [splits.scene_seed("calibration", 8, i, 0, "natural") for i in range(20)]
    assert all(is_dense(s, every_dense) for s in seeds) and not any(is_dense(s, no_dense) for s in seeds)
    q = density_questions(1, every_dense)[0]
    assert q.meta["density"] == every_dense.to_dict() and load_scene(q).layout == make_natural_layout(
        q.scene_seed, every_dense)  # a question's scene is drawn under the parameters it was posed with
