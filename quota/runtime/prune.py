"""Score-and-gather: keep the top-k visual tokens of a contiguous visual span and compact the sequence.

Dispatch between the fused Triton kernel and its PyTorch reference, both in :mod:`quota.kernels.score_gather`.

Layout: every sample has the same length ``S`` (left padding), and its alive visual tokens are the
contiguous span ``[span_start[b], span_start[b] + n)``. Keeping ``k`` of them gives ``S' = S - n + k``
tokens: the ``span_start[b]`` tokens before the span, the kept visual tokens in original order, then
the tokens after the span. Text (and padding) tokens are never dropped, and ``span_start`` does not
change, so the layout stays left-padded. Position ids travel with their tokens (true positions for
RoPE and M-RoPE after compaction), and so does the key-validity mask.
"""

from __future__ import annotations

import torch

from quota.kernels.score_gather import Compacted, score_gather_reference, score_gather_triton

IMPLS = ("reference", "triton", "auto")


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
        return score_gather_triton(hidden, positions, valid, scores, span_start, k, check_values)
    return score_gather_reference(hidden, positions, valid, scores, span_start, k, check_values)
