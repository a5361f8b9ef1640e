"""Score-and-gather: keep the top-k visual tokens of a contiguous visual span and compact the sequence.

The PyTorch reference of the fused op (the Triton version is :mod:`quota.kernels.score_gather`).

Layout: every sample has the same length ``S`` (left padding), and its alive visual tokens are the
contiguous span ``[span_start[b], span_start[b] + n)``. Keeping ``k`` of them gives ``S' = S - n + k``
tokens: the ``span_start[b]`` tokens before the span, the kept visual tokens in original order, then
the tokens after the span. Text (and padding) tokens are never dropped, and ``span_start`` does not
change, so the layout stays left-padded. Position ids travel with their tokens (true positions for
RoPE and M-RoPE after compaction), and so does the key-validity mask.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from quota.runtime.scoring import select_topk

IMPLS = ("reference", "triton", "auto")


class Compacted(NamedTuple):
    """Result of a score-and-gather.

    - ``hidden``: ``[B, S', d]``; ``positions``: long ``[R, B, S']`` (``R = 1`` RoPE, ``3`` M-RoPE);
    - ``valid``: bool ``[B, S']`` key validity (False on padding);
    - ``kept``: long ``[B, k]`` kept indices relative to the span, ascending;
    - ``src``: long ``[B, S']`` source index in the input sequence of every output token.
    """

    hidden: torch.Tensor
    positions: torch.Tensor
    valid: torch.Tensor
    kept: torch.Tensor
    src: torch.Tensor


def gather_map(span_start: torch.Tensor, n: int, kept: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Source indices ``[B, S - n + k]`` (long) for ``kept`` ``[B, k]`` span-relative indices."""
    k = kept.shape[1]
    r = torch.arange(seq_len - n + k, device=span_start.device)[None, :]  # [1, S']
    start = span_start[:, None]  # [B, 1]
    inside = (r >= start) & (r < start + k)
    if k:
        rel = (r - start).clamp(0, k - 1)
        visual = start + kept.gather(1, rel.expand(kept.shape[0], -1))
    else:
        visual = torch.zeros_like(r + start)
    return torch.where(r < start, r.expand_as(inside), torch.where(inside, visual, r + (n - k)))


def compact(
    hidden: torch.Tensor,
    positions: torch.Tensor,
    valid: torch.Tensor,
    span_start: torch.Tensor,
    n: int,
    kept: torch.Tensor,
) -> Compacted:
    """Gather ``hidden`` ``[B, S, d]``, ``positions`` ``[R, B, S]`` and ``valid`` ``[B, S]`` to the tokens kept
    by ``kept`` ``[B, k]`` (span-relative, ascending)."""
    src = gather_map(span_start, n, kept, hidden.shape[1])  # [B, S']
    h = hidden.gather(1, src[..., None].expand(-1, -1, hidden.shape[-1]))
    p = positions.gather(2, src[None].expand(positions.shape[0], -1, -1))
    v = valid.gather(1, src)
    return Compacted(h, p, v, kept, src)


def score_gather_reference(
    hidden: torch.Tensor,
    positions: torch.Tensor,
    valid: torch.Tensor,
    scores: torch.Tensor,
    span_start: torch.Tensor,
    k: int,
    check_values: bool = True,
) -> Compacted:
    """Keep the ``k`` best-scored visual tokens of the span and compact (the reference of the fused op).

    - ``hidden``: ``[B, S, d]`` any float dtype; ``positions``: long ``[R, B, S]``; ``valid``: bool ``[B, S]``;
    - ``scores``: ``[B, n]`` finite, one per alive visual token of the span, in span order;
    - ``span_start``: long ``[B]``; ``k``: ``0 <= k <= n``.

    Selection follows :func:`quota.runtime.scoring.select_topk` (exactly ``k``, ties to the lower index).
    """
    kept = select_topk(scores, k, check_values)  # [B, k]
    return compact(hidden, positions, valid, span_start, scores.shape[1], kept)


def score_gather(
    hidden: torch.Tensor,
    positions: torch.Tensor,
    valid: torch.Tensor,
    scores: torch.Tensor,
    span_start: torch.Tensor,
    k: int,
    impl: str = "auto",
    check_values: bool = True,
) -> Compacted:
    """:func:`score_gather_reference` or its Triton kernel: ``impl="auto"`` uses the kernel on CUDA tensors.
    ``check_values=False``: no check reads the scores or spans back to the host."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "triton" or (impl == "auto" and hidden.is_cuda):
        from quota.kernels.score_gather import score_gather_triton

        return score_gather_triton(hidden, positions, valid, scores, span_start, k, check_values)
    return score_gather_reference(hidden, positions, valid, scores, span_start, k, check_values)
