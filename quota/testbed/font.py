"""A 5 x 7 bitmap font for the synthetic scenes: digits 0-9, uppercase A-Z and a little punctuation.

Contract:
- ``SCENE_CHARS`` (the 36 characters that appear inside scenes) map to ids ``1..36`` in ``CHAR_IDS``;
  id 0 is reserved for "no character" in the per-patch labels.
- Every glyph is a boolean ``[7, 5]`` array; ``render_text`` draws a string at an integer scale,
  each character taking ``5 * scale`` columns followed by ``spacing * scale`` blank columns
  (no trailing gap after the last character). Pure integer work: identical on every platform.
- Lowercase input is drawn in uppercase; a character without a glyph raises ``ValueError``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

GLYPH_H, GLYPH_W = 7, 5

DIGITS = "0123456789"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SCENE_CHARS = DIGITS + LETTERS
CHAR_IDS: dict[str, int] = {c: i + 1 for i, c in enumerate(SCENE_CHARS)}  # 0 = no character

# Each glyph: 7 rows of 5 columns, '#' = ink.
_ROWS: dict[str, tuple[str, ...]] = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    # Punctuation for captions (previews); never drawn inside scenes.
    " ": (".....", ".....", ".....", ".....", ".....", ".....", "....."),
    "?": (".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."),
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    ",": (".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."),
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
    "'": ("..#..", "..#..", ".#...", ".....", ".....", ".....", "....."),
    '"': (".#.#.", ".#.#.", ".#.#.", ".....", ".....", ".....", "....."),
    "/": (".....", "....#", "...#.", "..#..", ".#...", "#....", "....."),
}

ALL_CHARS = "".join(_ROWS)


def _parse(rows: tuple[str, ...]) -> np.ndarray:
    assert len(rows) == GLYPH_H and all(len(r) == GLYPH_W for r in rows), rows
    return np.array([[c == "#" for c in r] for r in rows], dtype=bool)  # [7, 5]


GLYPHS: dict[str, np.ndarray] = {c: _parse(r) for c, r in _ROWS.items()}
for _g in GLYPHS.values():
    _g.setflags(write=False)


def glyph(ch: str, scale: int = 1) -> np.ndarray:
    """The glyph of one character, ``bool [7 * scale, 5 * scale]`` (read-only)."""
    return _scaled(_key(ch), int(scale))


def _key(ch: str) -> str:
    c = ch.upper()
    if c not in GLYPHS:
        raise ValueError(f"no glyph for {ch!r}; the font covers {ALL_CHARS!r}")
    return c


@lru_cache(maxsize=None)
def _scaled(c: str, scale: int) -> np.ndarray:
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    g = np.repeat(np.repeat(GLYPHS[c], scale, axis=0), scale, axis=1)  # [7s, 5s]
    g.setflags(write=False)
    return g


def text_size(text: str, scale: int = 1, spacing: int = 1) -> tuple[int, int]:
    """``(height, width)`` in pixels of ``render_text(text, scale, spacing)``."""
    n = len(text)
    width = 0 if n == 0 else (GLYPH_W * n + spacing * (n - 1)) * scale
    return GLYPH_H * scale, width


def char_offsets(text: str, scale: int = 1, spacing: int = 1) -> list[int]:
    """Column offset of each character's left edge inside ``render_text(text, scale, spacing)``."""
    return [i * (GLYPH_W + spacing) * scale for i in range(len(text))]


def render_text(text: str, scale: int = 1, spacing: int = 1) -> np.ndarray:
    """Ink mask of ``text``: ``bool [7 * scale, text_size(...)[1]]``, True where a glyph has ink."""
    h, w = text_size(text, scale, spacing)
    out = np.zeros((h, w), dtype=bool)  # [7s, W]
    gw = GLYPH_W * scale
    for ch, x in zip(text, char_offsets(text, scale, spacing)):
        out[:, x : x + gw] = glyph(ch, scale)
    return out
