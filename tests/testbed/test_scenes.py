"""Scenes: determinism (pinned bytes), geometry of the annotation, pixels and per-patch labels that agree with it."""

import hashlib
import struct
import zlib

import numpy as np
import pytest

from quota.testbed import font
from quota.testbed.scenes import (
    CELL, COLOURS, GRID, IMAGE_SIZE, MIN_PATCH_PIXELS, PATCH, SHAPE_IDS, SHAPES, SIZE_IDS, SIZES, COLOUR_IDS,
    TEXTURE_IDS, TEXTURES, dark_shade, encode_png, make_layout, make_scene, render_scene, shape_mask, texture_mask,
)
from quota.testbed.splits import DATA_VERSION, scene_seed

SEEDS = list(range(24)) + [scene_seed("test", 3, 11, 0), 2**61 - 1]

# sha256 over image + patch labels of four scenes, per DATA_VERSION. A generator change that alters any
# byte must bump DATA_VERSION and add its hash here.
GOLDEN_SCENES = {"synthvqa-v1": "83cb6744e584b0194440eab79921dd92a4ec8bed3f9af70e4edae084de879abb"}


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(s) for s in SEEDS]


def _digest(seeds):
    h = hashlib.sha256()
    for s in seeds:
        sc = make_scene(s)
        for a in (sc.image, sc.patch_shape, sc.patch_colour, sc.patch_char):
            h.update(a.tobytes())
    return h.hexdigest()


def test_pinned_bytes_for_this_data_version():
    assert _digest([0, 12345, scene_seed("test", 2, 7, 0), 2**61 - 1]) == GOLDEN_SCENES[DATA_VERSION]


def test_same_seed_same_scene_and_different_seeds_differ():
    a, b, c = make_scene(77), make_scene(77), make_scene(78)
    assert a.image.tobytes() == b.image.tobytes() and a.layout == b.layout
    assert np.array_equal(a.patch_char, b.patch_char)
    assert a.image.tobytes() != c.image.tobytes() and a.layout != c.layout
    assert render_scene(make_layout(77)).image.tobytes() == a.image.tobytes()


def test_rejects_negative_or_non_integer_seed():
    for bad in (-1, 1.5, "3"):
        with pytest.raises(ValueError, match="non-negative integer"):
            make_layout(bad)


def test_image_and_label_shapes(scenes):
    for sc in scenes:
        assert sc.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and sc.image.dtype == np.uint8
        for lab in (sc.patch_shape, sc.patch_colour, sc.patch_char, sc.patch_size, sc.patch_texture):
            assert lab.shape == (GRID, GRID) == (24, 24) and lab.dtype == np.int64


def test_scenes_are_dense(scenes):
    n_obj = [len(sc.objects) for sc in scenes]
    n_txt = [len(sc.texts) for sc in scenes]
    assert min(n_obj) >= 14 and np.mean(n_obj) >= 18
    assert min(n_txt) >= 4 and max(n_txt) <= 6
    assert all(len(sc.layout.clutter) > 0 for sc in scenes)
    covered = [int(((sc.patch_shape > 0) | (sc.patch_char > 0)).sum()) for sc in scenes]
    assert np.mean(covered) > 64, "objects and text should cover more patches than a 64-token budget"


def _gap(a, b):
    return max(a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3])


def test_geometry_of_the_annotation(scenes):
    for sc in scenes:
        boxes = [o.bbox for o in sc.objects] + [t.plate_bbox or t.bbox for t in sc.texts]
        for i, a in enumerate(boxes):
            assert 0 <= a[0] < a[2] <= IMAGE_SIZE and 0 <= a[1] < a[3] <= IMAGE_SIZE
            for b in boxes[i + 1 :]:
                assert _gap(a, b) >= 1, "objects and text never touch"
        for o in sc.objects:
            s = SIZES[o.size]
            assert o.bbox[2] - o.bbox[0] == s == o.bbox[3] - o.bbox[1]
            assert o.centre == ((o.bbox[0] + o.bbox[2]) // 2, (o.bbox[1] + o.bbox[3]) // 2)
            assert o.shape in SHAPES and o.colour in COLOURS and o.texture in TEXTURES
        texts = [t.text for t in sc.texts]
        assert len(set(texts)) == len(texts)
        assert len({t.cell for t in sc.texts}) == len(sc.texts)
        for t in sc.texts:
            cx0, cy0 = (t.cell % 3) * CELL, (t.cell // 3) * CELL
            x0, y0, x1, y1 = t.plate_bbox or t.bbox
            assert cx0 <= x0 and x1 <= cx0 + CELL and cy0 <= y0 and y1 <= cy0 + CELL, "text stays inside its cell"
            assert t.text.isdigit() == (t.kind == "number") and t.text.isalpha() == (t.kind == "word")
            assert len(t.char_boxes) == len(t.text)


def test_objects_are_drawn_whole_with_their_colour_and_texture(scenes):
    for sc in scenes:
        for o in sc.objects:
            x0, y0, x1, y1 = o.bbox
            mask = shape_mask(o.shape, x1 - x0)
            dark = mask & texture_mask(o.texture, x1 - x0)
            box = sc.image[y0:y1, x0:x1].astype(int)
            assert (box[mask & ~dark] == o.rgb).all()
            assert (box[dark] == dark_shade(o.rgb)).all()
            assert all(abs(a - b) <= 10 for a, b in zip(o.rgb, COLOURS[o.colour]))


def test_text_ink_is_drawn(scenes):
    for sc in scenes:
        for t in sc.texts:
            x0, y0, x1, y1 = t.bbox
            ink = font.render_text(t.text, t.scale)
            region = sc.image[y0:y1, x0:x1]
            assert (region[ink] == t.rgb).all()
            if t.plate is not None:
                assert (region[~ink] == t.plate).all()


def _patch_counts(mask_map: np.ndarray, n: int) -> np.ndarray:
    """[24, 24, n + 1] pixel counts of each id of a [192, 192] id map."""
    patches = mask_map.reshape(GRID, PATCH, GRID, PATCH).transpose(0, 2, 1, 3).reshape(GRID, GRID, PATCH * PATCH)
    return np.stack([(patches == k).sum(-1) for k in range(n + 1)], axis=-1)


def _expected_labels(ids: np.ndarray, values: list[int]) -> np.ndarray:
    counts = _patch_counts(ids, len(values))[..., 1:]  # [24, 24, n]
    best = counts.argmax(-1)  # first maximum: the earlier item wins ties
    top = np.take_along_axis(counts, best[..., None], -1)[..., 0]
    return np.where(top >= MIN_PATCH_PIXELS, np.array(values)[best], 0)


def test_patch_labels_match_an_independent_recount(scenes):
    for sc in scenes:
        obj_ids = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.int32)  # [192, 192]
        for k, o in enumerate(sc.objects, start=1):
            x0, y0, x1, y1 = o.bbox
            obj_ids[y0:y1, x0:x1][shape_mask(o.shape, x1 - x0)] = k
        assert np.array_equal(sc.patch_shape, _expected_labels(obj_ids, [SHAPE_IDS[o.shape] for o in sc.objects]))
        assert np.array_equal(sc.patch_colour, _expected_labels(obj_ids, [COLOUR_IDS[o.colour] for o in sc.objects]))
        assert np.array_equal(sc.patch_size, _expected_labels(obj_ids, [SIZE_IDS[o.size] for o in sc.objects]))
        assert np.array_equal(sc.patch_texture, _expected_labels(obj_ids, [TEXTURE_IDS[o.texture] for o in sc.objects]))
        char_ids = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.int32)
        chars = [(ch, box) for t in sc.texts for ch, box in zip(t.text, t.char_boxes)]
        for k, (_, (x0, y0, x1, y1)) in enumerate(chars, start=1):
            char_ids[y0:y1, x0:x1] = k
        assert np.array_equal(sc.patch_char, _expected_labels(char_ids, [font.CHAR_IDS[c] for c, _ in chars]))


def test_labelled_patches_show_the_object_in_their_pixels(scenes):
    colour_of = {v: k for k, v in COLOUR_IDS.items()}
    for sc in scenes:
        for py, px in zip(*np.nonzero(sc.patch_colour)):
            patch = sc.image[py * PATCH : (py + 1) * PATCH, px * PATCH : (px + 1) * PATCH].reshape(-1, 3)
            shades = {tuple(o.rgb) for o in sc.objects if o.colour == colour_of[sc.patch_colour[py, px]]}
            shades |= {dark_shade(s) for s in shades}
            hits = sum(tuple(p) in shades for p in patch.tolist())
            assert hits >= MIN_PATCH_PIXELS
        # every object gets at least one patch of its own
        for o in sc.objects:
            x0, y0, x1, y1 = o.bbox
            window = sc.patch_shape[y0 // PATCH : (y1 - 1) // PATCH + 1, x0 // PATCH : (x1 - 1) // PATCH + 1]
            assert (window == SHAPE_IDS[o.shape]).any()


def test_every_shape_and_size_can_claim_a_patch_at_any_offset():
    for shape in SHAPES:
        for s in SIZES.values():
            mask = shape_mask(shape, s)
            for oy in range(PATCH):
                for ox in range(PATCH):
                    canvas = np.zeros((4 * PATCH, 4 * PATCH), dtype=int)
                    canvas[oy : oy + s, ox : ox + s] = mask
                    per_patch = canvas.reshape(4, PATCH, 4, PATCH).sum(axis=(1, 3))
                    assert per_patch.max() >= MIN_PATCH_PIXELS, (shape, s, ox, oy)


def test_shapes_are_distinct_silhouettes():
    for s in SIZES.values():
        masks = {sh: shape_mask(sh, s).tobytes() for sh in SHAPES}
        assert len(set(masks.values())) == len(SHAPES)
        for sh in SHAPES:
            m = shape_mask(sh, s)
            assert np.array_equal(m, m[:, ::-1]), f"{sh} is left-right symmetric"


def test_encode_png_round_trip():
    img = make_scene(5).image
    data = encode_png(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        assert zlib.crc32(tag + body) & 0xFFFFFFFF == struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])[0]
        header = body if tag == b"IHDR" else header
        idat += body if tag == b"IDAT" else b""
        pos += 12 + n
    assert struct.unpack(">II", header[:8]) == (IMAGE_SIZE, IMAGE_SIZE)
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(IMAGE_SIZE, 1 + IMAGE_SIZE * 3)
    assert (rows[:, 0] == 0).all()
    assert np.array_equal(rows[:, 1:].reshape(img.shape), img)
