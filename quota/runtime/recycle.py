"""Token recycling (SparseVLM's rule): the most relevant of the dropped tokens are clustered and each cluster
is folded into one recycled token, instead of being lost.

At a pruning point that keeps ``k`` of ``n`` visual tokens:

1. count: ``c = recycle_count(n, k)`` recycled tokens, SparseVLM's released counts (recycle the top 30% of the
   ``n - k`` tokens the point drops, one cluster per 10 of them: ``c = (int(0.3 (n - k)) + 1) // 10 + 1``, at most
   ``k``). Unlike SparseVLM, which adds them on top of the kept tokens, they count in ``k``: the selection rule
   keeps ``k - c`` tokens, so a budget stays a budget;
2. candidates: of the ``D = n - k + c`` tokens the rule left, the ``R = min(D, max(c, int(0.3 D) + 1))`` of highest
   score (ties to the lower index);
3. centres: density-peak clustering with k nearest neighbours (DPC-KNN) on the candidates' hidden states, distances
   ``||x_i - x_j|| / sqrt(d)``: density ``rho_i = exp(-mean of the squared distances to its c nearest candidates,
   itself included)``; ``delta_i`` = the distance to the nearest candidate denser than ``i`` (density ties go to the
   lower index), the largest distance of the sample for the densest; the ``c`` candidates of largest
   ``rho_i * delta_i`` are the centres (ties to the lower index). SparseVLM breaks density ties with random noise;
   here they break by index, so a run is deterministic;
4. clusters: every candidate joins its nearest centre (ties to the lower centre; a centre joins itself), and the
   recycled token is the mean of its cluster's hidden states (float32, returned in ``hidden``'s dtype), placed at
   its centre's position.

Steps 2-3 run in batched PyTorch (:func:`recycle_split`; the candidate set is small, at most ``0.3 n`` tokens, so
its ``[B, R, R]`` distance matrix costs less than one attention layer's scores); step 4 is the token-merge kernel's
cluster mode (:func:`quota.kernels.token_merge.cluster_merge_triton`) on CUDA, its PyTorch reference elsewhere
(:func:`recycle`). :func:`recycle_reference` is the whole rule in PyTorch.
"""

from __future__ import annotations

import math

import torch

from quota.kernels.token_merge import Merged, cluster_merge_reference, cluster_merge_triton

__all__ = ["RECYCLE_SHARE", "RECYCLE_CLUSTER", "recycle_count", "candidate_count", "dpc_knn_centres",
           "recycle_split", "recycle_reference", "recycle"]

RECYCLE_SHARE = 0.3  # share of the dropped tokens SparseVLM recycles
RECYCLE_CLUSTER = 10  # recycled candidates per cluster


def recycle_count(n: int, k: int) -> int:
    """Recycled tokens at a point keeping ``k`` of ``n``: SparseVLM's ``(int(0.3 (n - k)) + 1) // 10 + 1``, at most
    ``k``; 0 where the point prunes nothing or keeps nothing."""
    if not 0 <= k <= n:
        raise ValueError(f"cannot keep k={k} of n={n} tokens")
    if k == n or k == 0:
        return 0
    return min(k, (int(RECYCLE_SHARE * (n - k)) + 1) // RECYCLE_CLUSTER + 1)


def candidate_count(dropped: int, c: int) -> int:
    """Candidates recycled from ``dropped`` tokens into ``c`` clusters: the top 30% (``int(0.3 D) + 1``), at least
    ``c`` and at most ``D``."""
    if not 0 <= c <= dropped:
        raise ValueError(f"cannot recycle {dropped} dropped tokens into c={c} clusters")
    return min(dropped, max(c, int(RECYCLE_SHARE * dropped) + 1)) if c else 0


def _first_max(values: torch.Tensor, count: int) -> torch.Tensor:
    """Indices ``[B, count]`` of the ``count`` largest of ``values`` ``[B, R]`` (float), ties to the lower index
    (a stable sort of the negated values)."""
    return torch.sort(-values, dim=-1, stable=True).indices[:, :count]


def dpc_knn_centres(features: torch.Tensor, c: int) -> torch.Tensor:
    """The ``c`` DPC-KNN centres (module rule, step 3) of ``features`` ``[B, R, d]`` (float32) as long ``[B, c]``
    indices into ``R``, in order of decreasing centre score; ``1 <= c <= R``."""
    b, r, d = features.shape
    if not 1 <= c <= r:
        raise ValueError(f"need 1 <= c <= R, got c={c}, R={r}")
    dist = torch.cdist(features, features) / math.sqrt(d)  # [B, R, R]
    nearest = torch.sort(dist, dim=-1).values[..., :c]  # [B, R, c] (itself first, at 0)
    density = torch.exp(-(nearest**2).mean(-1))  # [B, R]
    index = torch.arange(r, device=features.device)
    # j is denser than i: a larger density, or an equal one at a lower index
    denser = (density[:, None, :] > density[:, :, None]) | (
        (density[:, None, :] == density[:, :, None]) & (index[None, :] < index[:, None])[None])  # [B, R, R] (i, j)
    far = dist.flatten(1).max(-1).values[:, None, None].expand_as(dist)  # [B, R, R]
    delta = torch.where(denser, dist, far).min(-1).values  # [B, R]
    return _first_max(delta * density, c)


def recycle_split(hidden: torch.Tensor, span_start: torch.Tensor, scores: torch.Tensor, dropped: torch.Tensor,
                  c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2-3 of the module's rule: ``(centres [B, c], others [B, R - c])``, span-relative and ascending, of the
    ``R`` candidates recycled from the ``dropped`` tokens.

    - ``hidden``: ``[B, S, d]`` any float dtype; ``span_start``: long ``[B]`` first visual token of each row;
    - ``scores``: ``[B, n]`` the pruning point's combined scores of the span's tokens (finite);
    - ``dropped``: long ``[B, D]`` span-relative indices of the tokens the selection rule left, ascending;
      ``1 <= c <= D``."""
    b, d = hidden.shape[0], hidden.shape[-1]
    r = candidate_count(dropped.shape[1], c)
    top = _first_max(scores.gather(1, dropped).float(), r)  # [B, R] positions in dropped
    cand = dropped.gather(1, top.sort(-1).values)  # [B, R] span-relative, ascending
    rows = span_start[:, None] + cand  # [B, R]
    x = hidden.gather(1, rows[..., None].expand(-1, -1, d)).float()  # [B, R, d]
    centres = dpc_knn_centres(x, c).sort(-1).values  # [B, c] positions in cand, ascending
    is_centre = torch.zeros(b, r, dtype=torch.long, device=cand.device).scatter_(1, centres, 1)  # [B, R]
    others = torch.sort(is_centre, dim=-1, stable=True).indices[:, : r - c]  # [B, R - c] ascending
    return cand.gather(1, centres), cand.gather(1, others)


def recycle_reference(hidden: torch.Tensor, span_start: torch.Tensor, scores: torch.Tensor, dropped: torch.Tensor,
                      c: int) -> Merged:
    """Recycle the ``dropped`` tokens of each sample's span into ``c`` tokens (the module's rule, steps 2-4), all
    in PyTorch; arguments as :func:`recycle_split`, ``0 <= c <= D``.

    Returns :class:`~quota.kernels.token_merge.Merged`: ``targets`` ``[B, c]`` the centres (span-relative,
    ascending), ``assign`` ``[B, R - c]`` the centre slot (index into ``targets``) each other candidate joined, in
    ascending order of those candidates, and ``hidden`` ``[B, c, d]`` the cluster means in ``targets``' order.
    """
    if c == 0:
        return Merged(dropped[:, :0], dropped[:, :0], hidden.new_zeros(hidden.shape[0], 0, hidden.shape[-1]))
    return cluster_merge_reference(hidden, span_start, *recycle_split(hidden, span_start, scores, dropped, c))


def recycle(hidden: torch.Tensor, span_start: torch.Tensor, scores: torch.Tensor, dropped: torch.Tensor, c: int,
            impl: str = "auto", check_values: bool = True) -> Merged:
    """:func:`recycle_reference` with its last step on the token-merge kernel where ``impl`` says so (``"triton"``,
    or ``"auto"`` on CUDA tensors): centres and candidates equal, ``assign`` equal but at float32 near-ties,
    ``hidden`` within float32 rounding. ``check_values=False``: nothing is read back to the host."""
    if c == 0 or not (impl == "triton" or (impl == "auto" and hidden.is_cuda)):
        return recycle_reference(hidden, span_start, scores, dropped, c)
    centres, others = recycle_split(hidden, span_start, scores, dropped, c)
    return cluster_merge_triton(hidden, span_start, centres, others, check_values)
