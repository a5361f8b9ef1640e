"""Pruning a contiguous visual span: select ``k`` visual tokens, optionally merge the dropped ones into
contextual tokens, and compact the sequence.

:func:`score_gather` dispatches between the fused top-k Triton kernel and its PyTorch reference, both in
:mod:`quota.kernels.score_gather`. :func:`prune` is what a pruning point runs: top-k without merging is exactly
:func:`score_gather`; another selection rule (:func:`select`, :mod:`quota.runtime.diversity`) or merging
(:mod:`quota.kernels.token_merge`) picks the kept indices first and compacts through the same gather.

Layout: every sample has the same length ``S`` (left padding), and its alive visual tokens are the
contiguous span ``[span_start[b], span_start[b] + n)``. Keeping ``k`` of them gives ``S' = S - n + k``
tokens: the ``span_start[b]`` tokens before the span, the kept visual tokens in original order, then
the tokens after the span. Text (and padding) tokens are never dropped, and ``span_start`` does not
change, so the layout stays left-padded. Position ids travel with their tokens (true positions for
RoPE and M-RoPE after compaction), and so does the key-validity mask.
"""

from __future__ import annotations

import torch

from quota.kernels.score_gather import Compacted, score_gather_reference, score_gather_triton, select_topk
from quota.kernels.token_merge import Merged, token_merge_reference, token_merge_triton
from quota.runtime.diversity import cdpruner_select, divprune_select
from quota.runtime.recycle import recycle, recycle_count
from quota.signals import MERGE_RULES, SELECTIONS

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


def visual_span(hidden: torch.Tensor, span_start: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` visual tokens' hidden states ``[B, n, d]`` of ``hidden`` ``[B, S, d]`` from ``span_start`` ``[B]``."""
    cols = span_start[:, None] + torch.arange(n, device=hidden.device)[None, :]  # [B, n]
    return hidden.gather(1, cols[..., None].expand(-1, -1, hidden.shape[-1]))


def select(rule: str, scores: torch.Tensor, features: torch.Tensor, k: int, check_values: bool = True) -> torch.Tensor:
    """Kept indices ``[B, k]`` (long, ascending) of the ``n`` alive visual tokens by selection ``rule``
    (:data:`quota.signals.SELECTIONS`) from their combined ``scores`` ``[B, n]`` (finite; checked on the host
    unless ``check_values`` is off) and ``features`` ``[B, n, d]`` (read by the diversity rules only)."""
    if rule not in SELECTIONS:
        raise ValueError(f"unknown selection {rule!r}; known: {list(SELECTIONS)}")
    if check_values and not bool(torch.isfinite(scores).all()):
        raise ValueError("token scores must be finite")
    if rule == "topk":
        return select_topk(scores, k, check_values=False)
    if rule == "divprune":
        return divprune_select(features, scores, k)
    return cdpruner_select(features, scores, k)


def complement(kept: torch.Tensor, n: int) -> torch.Tensor:
    """The indices ``[B, n - k]`` (long, ascending) of ``0 .. n-1`` not in ``kept`` ``[B, k]`` (distinct)."""
    index = torch.arange(n, device=kept.device).expand(kept.shape[0], n)  # [B, n]
    is_kept = torch.zeros_like(index).scatter_(1, kept, 1)
    return (index + n * is_kept).sort(-1).values[:, : n - kept.shape[1]]


def merge_count(merge: int, k: int, n: int, rule: str = "context") -> int:
    """Contextual tokens at a pruning point keeping ``k`` of ``n`` by merge ``rule``: ``min(merge, k)`` when it
    prunes (``"context"``), ``min(merge, recycle_count(n, k))`` (``"recycle"``); 0 where it prunes nothing."""
    if rule not in MERGE_RULES:
        raise ValueError(f"unknown merge rule {rule!r}; known: {list(MERGE_RULES)}")
    if rule == "recycle":
        return min(merge, recycle_count(n, k))
    return min(merge, k) if k < n else 0


def token_merge(hidden, span_start, dropped, c: int, impl: str = "auto", check_values: bool = True) -> Merged:
    """:func:`~quota.kernels.token_merge.token_merge_reference` or its Triton kernel (``impl`` as in
    :func:`score_gather`)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "triton" or (impl == "auto" and hidden.is_cuda):
        return token_merge_triton(hidden, span_start, dropped, c, check_values)
    return token_merge_reference(hidden, span_start, dropped, c)


def prune(
    hidden: torch.Tensor,
    positions: torch.Tensor,
    valid: torch.Tensor,
    scores: torch.Tensor,
    span_start: torch.Tensor,
    k: int,
    selection: str = "topk",
    merge: int = 0,
    impl: str = "auto",
    check_values: bool = True,
    merge_rule: str = "context",
) -> Compacted:
    """Keep ``k`` of the ``n`` visual tokens of each sample's span and compact (:func:`score_gather`'s layout and
    contract: ``k`` tokens in original order, text never dropped, positions and validity travel along).

    - ``hidden`` ``[B, S, d]``, ``positions`` long ``[R, B, S]``, ``valid`` bool ``[B, S]``, ``scores`` ``[B, n]``,
      ``span_start`` long ``[B]``, ``0 <= k <= n``;
    - ``selection``: the rule (:func:`select`) that picks ``k - c`` dominant tokens, reading the span's hidden
      states as features;
    - ``merge``: with ``c = merge_count(merge, k, n, merge_rule) > 0``, the ``n - k + c`` tokens the rule left are
      merged into ``c`` contextual tokens, each in its target token's place: its position, its validity, its index
      in ``kept``/``src``. The count stays ``k``. ``merge_rule``: ``"context"`` (VisionZip's,
      :mod:`quota.kernels.token_merge`) or ``"recycle"`` (SparseVLM's, :mod:`quota.runtime.recycle`).

    Top-k without merging is :func:`score_gather` itself (bit for bit); otherwise the kept indices are chosen
    first and gathered by the same kernel (scores 1 on the kept tokens, 0 elsewhere).
    """
    n = scores.shape[1]
    if not 0 <= k <= n:
        raise ValueError(f"cannot keep k={k} of n={n} tokens")
    c = merge_count(merge, k, n, merge_rule)
    if selection == "topk" and c == 0:
        return score_gather(hidden, positions, valid, scores, span_start, k, impl, check_values)
    kept = select(selection, scores, visual_span(hidden, span_start, n), k - c, check_values)  # [B, k - c]
    merged = None
    if c:
        dropped = complement(kept, n)  # [B, n - k + c]
        merged = (token_merge(hidden, span_start, dropped, c, impl, check_values) if merge_rule == "context"
                  else recycle(hidden, span_start, scores, dropped, c, impl, check_values))
        kept = torch.cat([kept, merged.targets], dim=1).sort(-1).values  # [B, k]
    keep = torch.zeros_like(scores, dtype=torch.float32).scatter_(1, kept, 1.0)  # [B, n]
    out = score_gather(hidden, positions, valid, keep, span_start, k, impl, check_values)
    if merged is not None:
        rows = span_start[:, None] + torch.searchsorted(out.kept.contiguous(), merged.targets.contiguous())  # [B, c]
        out.hidden.scatter_(1, rows[..., None].expand(-1, -1, hidden.shape[-1]), merged.hidden.to(out.hidden.dtype))
    return out
