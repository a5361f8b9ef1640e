"""Position ids of the prompt and of decode steps, by the ArchSpec's ``positions`` kind.

Positions are always held as long ``[R, B, S]``: ``R = 1`` for ``"rope"`` and ``R = 3`` (temporal,
height, width) for ``"mrope"`` (Qwen2-VL). They are gathered with their tokens when the sequence is
compacted, so every kept token keeps its true position.

- ``rope``: ``cumsum(attention_mask) - 1`` (0 on padding), the convention of ``model.generate``: a
  left-padded sample gets the positions it would get alone.
- ``mrope``: text tokens count up by one; the image span of grid ``(1, h, w)`` (after the spatial
  merge) takes ``(start, start + row, start + col)``; text after the image resumes at
  ``start + max(h, w)``. One image per sample.
- decode step ``t`` (0-based) of a sample: every row is ``max(prompt positions) + 1 + t``; for RoPE that
  is the sample's prompt length + ``t``.
"""

from __future__ import annotations

import torch

POSITION_KINDS = ("rope", "mrope")


class NotSupportedError(NotImplementedError):
    """The runtime does not handle this model, input layout or option (the message says what)."""


class InputError(ValueError):
    """A runtime input is malformed: the message names the argument, what it got and the expected shape."""


class PaddingError(InputError, NotSupportedError):
    """A prompt batch is padded on the right (or padded without an attention mask): the runtime needs
    left padding, the last column a real token in every row."""


def rope_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[1, B, S]`` long: ``cumsum(mask) - 1``, 0 on padding."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 0)[None]


def mrope_positions(
    attention_mask: torch.Tensor, span_start: torch.Tensor, n: int, grid_hw: tuple[int, int]
) -> torch.Tensor:
    """``[3, B, S]`` long M-RoPE positions for one image of ``grid_hw = (h, w)`` merged patches (``h * w == n``)
    per sample, at ``[span_start[b], span_start[b] + n)``; padding gets 0."""
    h, w = grid_hw
    if h * w != n:
        raise ValueError(f"M-RoPE grid {h}x{w} does not match {n} visual tokens")
    b, s = attention_mask.shape
    text = rope_positions(attention_mask)[0]  # [B, S]
    idx = torch.arange(s, device=attention_mask.device)[None, :]  # [1, S]
    start = span_start[:, None]
    t0 = text.gather(1, span_start[:, None])  # [B, 1] text position of the first image token
    rel = (idx - start).clamp(0, n - 1)
    in_span = (idx >= start) & (idx < start + n)
    after = idx >= start + n
    rows = []
    for coord in (torch.zeros_like(rel), rel // w, rel % w):
        p = torch.where(in_span, t0 + coord, text)
        p = torch.where(after, text - n + max(h, w), p)
        rows.append(p)
    pos = torch.stack(rows)  # [3, B, S]
    return pos.masked_fill((attention_mask == 0)[None], 0)


def next_position(prompt_positions: torch.Tensor) -> torch.Tensor:
    """``[B]`` position of the first decode token: ``max(prompt positions) + 1`` over all rows."""
    return prompt_positions.amax(dim=(0, 2)) + 1


def decode_positions(base: torch.Tensor, step: int, rows: int) -> torch.Tensor:
    """``[R, B, 1]`` positions of decode step ``step`` (0-based) from :func:`next_position`'s ``base``."""
    return (base + step)[None, :, None].expand(rows, -1, 1).contiguous()


def layer_position_ids(kind: str, positions: torch.Tensor) -> torch.Tensor | None:
    """What a decoder layer receives as ``position_ids``: ``[B, S]`` for RoPE; ``None`` for M-RoPE (its
    rotary embedding is passed precomputed, and Qwen2-VL's text model passes ``None`` too)."""
    return positions[0] if kind == "rope" else None


def rotary_input(kind: str, positions: torch.Tensor) -> torch.Tensor:
    """What the language model's ``rotary_emb`` takes: ``[B, S]`` for RoPE, ``[3, B, S]`` for M-RoPE."""
    return positions[0] if kind == "rope" else positions
