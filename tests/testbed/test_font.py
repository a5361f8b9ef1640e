"""The bitmap font: every glyph well formed and distinct, text rendered at integer scales."""

import itertools

import numpy as np
import pytest

from quota.testbed import font


def test_covers_digits_and_uppercase_letters():
    assert font.SCENE_CHARS == "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert all(c in font.GLYPHS for c in font.SCENE_CHARS)
    assert sorted(font.CHAR_IDS.values()) == list(range(1, 37))


def test_every_glyph_is_distinct():
    for a, b in itertools.combinations(font.GLYPHS, 2):
        diff = int((font.GLYPHS[a] != font.GLYPHS[b]).sum())
        assert diff >= 3, f"{a!r} and {b!r} differ in only {diff} pixels"


def test_glyphs_have_ink_and_shape():
    for c, g in font.GLYPHS.items():
        assert g.shape == (7, 5) and g.dtype == bool
        assert g.any() or c == " "


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_render_text_layout(scale):
    text = "A7Z"
    ink = font.render_text(text, scale)
    h, w = font.text_size(text, scale)
    assert ink.shape == (h, w) == (7 * scale, (3 * 5 + 2) * scale)
    for ch, x in zip(text, font.char_offsets(text, scale)):
        glyph = ink[:, x : x + 5 * scale]
        assert np.array_equal(glyph, np.kron(font.GLYPHS[ch], np.ones((scale, scale), dtype=bool)))
    gaps = [x + 5 * scale for x in font.char_offsets(text, scale)[:-1]]
    assert all(not ink[:, g : g + scale].any() for g in gaps)


def test_rendered_characters_are_distinct_at_scale_two():
    seen = {font.render_text(c, 2).tobytes() for c in font.SCENE_CHARS}
    assert len(seen) == len(font.SCENE_CHARS)


def test_lowercase_draws_as_uppercase_and_unknown_raises():
    assert np.array_equal(font.render_text("abc"), font.render_text("ABC"))
    with pytest.raises(ValueError, match="no glyph"):
        font.render_text("A#")
    assert font.render_text("").shape == (7, 0)
