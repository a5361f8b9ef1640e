"""Diversity selection rules of a pruning point: max-min diversity (DivPrune-style) and the conditional DPP
(CDPruner-style), batched over samples in PyTorch.

Both follow :func:`~quota.runtime.scoring.select_topk`'s contract: from ``features`` ``[B, n, d]`` (the alive
visual tokens' hidden states at the pruning point; before layer 0 the projected image features) and their
combined ``scores`` ``[B, n]`` they return exactly ``k`` indices per sample, long ``[B, k]``, ascending.

Determinism: each step of a sample reads only that sample's rows (no reduction across the batch). Every
quantity an argmax compares is snapped to :data:`~quota.runtime.scoring.SCORE_GRID` first, so floating-point
noise below it (another batch size, another matmul kernel) cannot reorder near-equal candidates; candidates in
one grid cell tie, and ties go to the lower index. Features are compared by cosine: a zero feature vector
counts as orthogonal to every other.

- :func:`divprune_select`: greedy farthest-point selection in cosine distance ``1 - cos(f_i, f_j)``. The first
  token is the best-scored one (ties to the lower index); each next token is the unselected one whose distance
  to its nearest selected token is largest. (DivPrune, arXiv 2503.02175, seeds with the most isolated token,
  the one whose nearest neighbour is farthest; seeding with the score ties the rule to the recipe's scoring.)
- :func:`cdpruner_select`: greedy MAP inference of the DPP with kernel ``L = diag(q) S diag(q)``, ``S`` the
  cosine similarity of the features and ``q`` the scores min-max normalized per sample to ``[0, 1]`` (all ones
  for a constant row), standing in for CDPruner's (arXiv 2506.10967) instruction relevance. Each step adds
  the token of largest gain ``det(L_{Y+j}) / det(L_Y)``, updated incrementally by the fast greedy algorithm of
  Chen et al. 2018 (an incremental Cholesky factor, ``O(k n d)`` per sample, no ``n x n`` matrix). Once every
  remaining gain rounds to 0 on the grid (the features span no new direction), the rest are taken by score.
"""

from __future__ import annotations

import torch

from quota.runtime.scoring import SCORE_GRID

EPS = 1e-12


def _snap(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x / SCORE_GRID) * SCORE_GRID


def _check(features: torch.Tensor, scores: torch.Tensor, k: int, name: str) -> tuple[int, int]:
    if scores.dim() != 2 or features.dim() != 3 or tuple(features.shape[:2]) != tuple(scores.shape):
        raise ValueError(
            f"{name}: features must be [B, n, d] and scores [B, n], "
            f"got {tuple(features.shape)} and {tuple(scores.shape)}"
        )
    b, n = scores.shape
    if not 0 <= k <= n:
        raise ValueError(f"cannot keep k={k} of n={n} tokens")
    return b, n


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """``[B, n, d]`` -> float32 rows of norm 1 (zero rows stay zero)."""
    f = features.float()
    return f / f.norm(dim=-1, keepdim=True).clamp_min(EPS)


def _row(f: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """``f[b, j[b]]``: ``[B, n, d]``, long ``[B]`` -> ``[B, d]``."""
    return f.gather(1, j[:, None, None].expand(-1, 1, f.shape[-1]))[:, 0]


def _all(b: int, n: int, device) -> torch.Tensor:
    return torch.arange(n, device=device).expand(b, n).clone()


def divprune_select(features: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """Max-min diversity: ``k`` indices ``[B, k]`` (long, ascending) of ``features`` ``[B, n, d]``, seeded with the
    best of ``scores`` ``[B, n]`` (see the module docstring for the exact rule)."""
    b, n = _check(features, scores, k, "divprune_select")
    device = scores.device
    if k == 0 or k == n:
        return _all(b, n, device)[:, :k]
    f = unit_rows(features)  # [B, n, d]
    chosen = torch.empty(b, k, dtype=torch.long, device=device)
    taken = torch.zeros(b, n, dtype=torch.bool, device=device)
    nearest = torch.full((b, n), float("inf"), device=device)  # [B, n] distance to the nearest chosen token
    j = scores.float().argmax(-1)  # [B], the first of the best
    for t in range(k):
        chosen[:, t] = j
        taken.scatter_(1, j[:, None], True)
        if t == k - 1:
            break
        distance = _snap(1.0 - torch.einsum("bnd,bd->bn", f, _row(f, j)))  # [B, n]
        nearest = torch.minimum(nearest, distance)
        j = nearest.masked_fill(taken, float("-inf")).argmax(-1)
    return chosen.sort(-1).values


def relevance(scores: torch.Tensor) -> torch.Tensor:
    """``q``: ``scores`` ``[B, n]`` min-max normalized per sample to ``[0, 1]``; a constant row gives ones."""
    s = scores.float()
    lo, hi = s.amin(-1, keepdim=True), s.amax(-1, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (s - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.ones_like(s))


def cdpruner_select(features: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """Conditional-DPP greedy MAP: ``k`` indices ``[B, k]`` (long, ascending) of ``features`` ``[B, n, d]`` with
    relevance from ``scores`` ``[B, n]`` (see the module docstring for the exact rule)."""
    b, n = _check(features, scores, k, "cdpruner_select")
    device = scores.device
    if k == 0 or k == n:
        return _all(b, n, device)[:, :k]
    f = unit_rows(features)  # [B, n, d]
    q = relevance(scores)  # [B, n]
    fallback = _snap(scores.float())  # [B, n] order once the DPP is exhausted
    gain = q * q * (f * f).sum(-1)  # [B, n] diag(L): q_i^2 S_ii
    factor = torch.zeros(b, k, n, device=device)  # [B, k, n] rows of the incremental Cholesky factor
    chosen = torch.empty(b, k, dtype=torch.long, device=device)
    taken = torch.zeros(b, n, dtype=torch.bool, device=device)
    for t in range(k):
        key = _snap(gain).masked_fill(taken, float("-inf"))
        exhausted = key.amax(-1, keepdim=True) <= 0  # [B, 1]
        key = torch.where(exhausted, fallback.masked_fill(taken, float("-inf")), key)
        j = key.argmax(-1)  # [B]
        chosen[:, t] = j
        taken.scatter_(1, j[:, None], True)
        if t == k - 1:
            break
        q_j = q.gather(1, j[:, None])  # [B, 1]
        l_row = q_j * q * torch.einsum("bnd,bd->bn", f, _row(f, j))  # [B, n] row j of L
        c_j = factor[:, :t].gather(2, j[:, None, None].expand(-1, t, 1))  # [B, t, 1]
        d_j = gain.gather(1, j[:, None]).clamp_min(SCORE_GRID).sqrt()  # [B, 1]
        e = (l_row - (c_j * factor[:, :t]).sum(1)) / d_j  # [B, n]
        e = torch.where(exhausted, torch.zeros_like(e), e)
        factor[:, t] = e
        gain = gain - e * e
    return chosen.sort(-1).values
