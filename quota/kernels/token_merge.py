"""Token merge: fold the dropped visual tokens of a span into ``c`` contextual tokens (VisionZip's rule).

Given the span-relative indices of the ``D`` tokens a pruning point drops (``dropped``, ascending):

1. targets: ``c`` of them at uniform stride over the dropped list, slots ``0, s, 2s, ...`` with
   ``s = max(1, D // c)`` (the first ``c`` such slots: :func:`merge_slots`); the other ``M = D - c`` are merged;
2. assignment: each merged token joins the target of highest cosine similarity of hidden states (ties to the
   lower target); a zero target vector has similarity 0 to everything;
3. contextual token ``j`` = ``h[target_j] + mean(h[i] for i assigned to j)`` (``h[target_j]`` alone when none is),
   computed in float32 and returned in ``hidden``'s dtype. This is the released VisionZip code's formula (the
   target plus the average of its group, not the average of target and group).

Two kernels behind one launcher, :func:`token_merge_triton`:

- ``_assign_kernel``, one program per (block of merged tokens, sample): ``[BM, CP]`` dot products with the
  targets accumulated over blocks of ``d`` (``tl.dot`` in IEEE float32), divided by the targets' norms, and an
  argmax over the targets with ties to the left;
- ``_merge_kernel``, one program per (block of ``d``, sample): sums each target's group as a one-hot
  ``[CP, BM] @ [BM, BD]`` product over blocks of merged tokens, counts the group, adds the target's row.

The reference is :func:`token_merge_reference` (below). Assignments equal it except where two targets' similarities
agree to float32 rounding; contextual states agree to float32 rounding (sums in another order).

With ``NEAREST`` the same two kernels fold clusters around given centres instead (:func:`cluster_merge_triton`,
SparseVLM's recycling in :mod:`quota.runtime.recycle`): each token joins the nearest centre in L2 distance, and
each output is its cluster's mean, the centre included.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from quota.kernels._env import check_device, next_power_of_2

__all__ = ["Merged", "cluster_merge_reference", "cluster_merge_triton", "merge_slots", "token_merge_reference",
           "token_merge_triton"]

EPS = 1e-12
_EPS_TL = tl.constexpr(EPS)  # a Triton kernel reads only constexpr globals


@triton.jit
def _assign_kernel(
    h_ptr, span_ptr, rest_ptr, tgt_ptr, assign_ptr,
    M, C, D, stride_hb, stride_hs,
    BM: tl.constexpr, CP: tl.constexpr, BD: tl.constexpr, NEAREST: tl.constexpr,
):  # fmt: skip
    mb = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    i = mb * BM + tl.arange(0, BM)  # [BM] merged tokens
    iok = i < M
    jj = tl.arange(0, CP)  # [CP] targets
    jok = jj < C
    start = tl.load(span_ptr + b)
    rows_i = start + tl.load(rest_ptr + b * M + i, mask=iok, other=0)  # [BM]
    rows_j = start + tl.load(tgt_ptr + b * C + jj, mask=jok, other=0)  # [CP]
    base = h_ptr + b * stride_hb
    dots = tl.zeros((BM, CP), dtype=tl.float32)
    norm2 = tl.zeros((CP,), dtype=tl.float32)
    for d0 in range(0, D, BD):
        dd = d0 + tl.arange(0, BD)
        dok = dd < D
        hi = tl.load(base + rows_i[:, None] * stride_hs + dd[None, :], mask=iok[:, None] & dok[None, :], other=0.0)
        ht = tl.load(base + rows_j[None, :] * stride_hs + dd[:, None], mask=dok[:, None] & jok[None, :], other=0.0)
        ht = ht.to(tl.float32)  # [BD, CP]
        dots += tl.dot(hi.to(tl.float32), ht, input_precision="ieee")  # [BM, CP]
        norm2 += tl.sum(ht * ht, axis=0)
    if NEAREST:  # the nearest target in L2: argmax of 2 x.t - |t|^2 (|x|^2 is the same for every target)
        sim = 2.0 * dots - norm2[None, :]
    else:  # the most similar target in cosine
        sim = dots / tl.maximum(tl.sqrt(norm2), _EPS_TL)[None, :]
    sim = tl.where(jok[None, :], sim, float("-inf"))
    best = tl.argmax(sim, axis=1, tie_break_left=True)  # [BM]
    tl.store(assign_ptr + b * M + i, best.to(tl.int64), mask=iok)


@triton.jit
def _merge_kernel(
    h_ptr, span_ptr, rest_ptr, tgt_ptr, assign_ptr, out_ptr,
    M, C, D, stride_hb, stride_hs,
    BM: tl.constexpr, CP: tl.constexpr, BD: tl.constexpr, NEAREST: tl.constexpr,
):  # fmt: skip
    db = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    dd = db * BD + tl.arange(0, BD)  # [BD]
    dok = dd < D
    jj = tl.arange(0, CP)  # [CP]
    jok = jj < C
    start = tl.load(span_ptr + b)
    base = h_ptr + b * stride_hb
    acc = tl.zeros((CP, BD), dtype=tl.float32)
    count = tl.zeros((CP,), dtype=tl.float32)
    for m0 in range(0, M, BM):
        i = m0 + tl.arange(0, BM)
        iok = i < M
        rows_i = start + tl.load(rest_ptr + b * M + i, mask=iok, other=0)  # [BM]
        a = tl.load(assign_ptr + b * M + i, mask=iok, other=-1)  # [BM]
        onehot = (jj[:, None] == a[None, :]).to(tl.float32)  # [CP, BM]
        hi = tl.load(base + rows_i[:, None] * stride_hs + dd[None, :], mask=iok[:, None] & dok[None, :], other=0.0)
        acc += tl.dot(onehot, hi.to(tl.float32), input_precision="ieee")  # [CP, BD]
        count += tl.sum(onehot, axis=1)
    rows_j = start + tl.load(tgt_ptr + b * C + jj, mask=jok, other=0)  # [CP]
    m2 = jok[:, None] & dok[None, :]
    ht = tl.load(base + rows_j[:, None] * stride_hs + dd[None, :], mask=m2, other=0.0).to(tl.float32)
    if NEAREST:  # the cluster's mean, its centre included
        out = (ht + acc) / (count + 1.0)[:, None]
    else:  # the target plus its group's mean
        out = ht + acc / tl.maximum(count, 1.0)[:, None]
    tl.store(out_ptr + (b * C + jj[:, None]) * D + dd[None, :], out.to(out_ptr.dtype.element_ty), mask=m2)


class Merged(NamedTuple):
    """Result of a token merge.

    - ``targets``: long ``[B, c]`` span-relative indices of the target tokens, ascending (each contextual
      token takes its target's place);
    - ``assign``: long ``[B, M]`` target slot ``0 .. c-1`` each merged token joined, ``M = D - c``, in the order
      of the non-target dropped tokens;
    - ``hidden``: ``[B, c, d]`` the contextual tokens' hidden states (``hidden``'s dtype).
    """

    targets: torch.Tensor
    assign: torch.Tensor
    hidden: torch.Tensor


def merge_slots(dropped: int, c: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target_slots [c], merged_slots [dropped - c])``: positions in the dropped list of the targets, at
    uniform stride ``max(1, dropped // c)`` from slot 0, and of the others, both ascending (``0 <= c <= dropped``).
    Device arithmetic only (no mask indexing, no copy from the host), so a CUDA graph can record it."""
    if not 0 <= c <= dropped:
        raise ValueError(f"cannot merge {dropped} dropped tokens into c={c} contextual tokens")
    slots = torch.arange(dropped, device=device)
    if c == 0:
        return slots[:0], slots
    step = max(1, dropped // c)  # step * c <= dropped
    is_target = (slots % step == 0) & (slots < step * c)
    merged = (slots + dropped * is_target.long()).sort().values[: dropped - c]
    return slots[: step * c : step], merged


def _split(dropped: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    target_slots, merged_slots = merge_slots(dropped.shape[1], c, dropped.device)
    return dropped[:, target_slots], dropped[:, merged_slots]  # [B, c], [B, M]


def _rows(hidden: torch.Tensor, span_start: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """``hidden[b, span_start[b] + rel[b, i]]`` as float32 ``[B, len, d]``."""
    idx = (span_start[:, None] + rel)[..., None].expand(-1, -1, hidden.shape[-1])
    return hidden.gather(1, idx).float()


def token_merge_reference(hidden: torch.Tensor, span_start: torch.Tensor, dropped: torch.Tensor, c: int) -> Merged:
    """Merge the ``dropped`` tokens of each sample's span into ``c`` contextual tokens (the module's rule).

    - ``hidden``: ``[B, S, d]`` any float dtype; ``span_start``: long ``[B]`` first visual token of each row;
    - ``dropped``: long ``[B, D]`` span-relative indices of the dropped tokens, ascending; ``0 <= c <= D``.
    """
    targets, rest = _split(dropped, c)
    b, d = hidden.shape[0], hidden.shape[-1]
    if c == 0:
        return Merged(targets, rest[:, :0], hidden.new_zeros(b, 0, d))
    ht = _rows(hidden, span_start, targets)  # [B, c, d]
    hr = _rows(hidden, span_start, rest)  # [B, M, d]
    sim = (hr @ ht.transpose(1, 2)) / ht.norm(dim=-1).clamp_min(EPS)[:, None, :]  # [B, M, c]
    assign = sim.argmax(-1) if rest.shape[1] else rest.clone()  # [B, M], ties to the first target
    onehot = (assign[..., None] == torch.arange(c, device=assign.device)).float()  # [B, M, c]
    sums = onehot.transpose(1, 2) @ hr  # [B, c, d]
    count = onehot.sum(1).clamp_min(1.0)  # [B, c]
    return Merged(targets, assign, (ht + sums / count[..., None]).to(hidden.dtype))


def cluster_merge_reference(hidden: torch.Tensor, span_start: torch.Tensor, targets: torch.Tensor,
                            rest: torch.Tensor) -> Merged:
    """:func:`cluster_merge_triton`'s rule in PyTorch: each of ``rest`` [B, M] joins the nearest of ``targets``
    [B, c] (L2 distance of hidden states, float32, ties to the lower target); output ``j`` is the mean of target
    ``j`` and the tokens that joined it."""
    b, d = hidden.shape[0], hidden.shape[-1]
    c = targets.shape[1]
    if c == 0:
        return Merged(targets, rest[:, :0], hidden.new_zeros(b, 0, d))
    ht = _rows(hidden, span_start, targets)  # [B, c, d]
    hr = _rows(hidden, span_start, rest)  # [B, M, d]
    assign = torch.cdist(hr, ht).argmin(-1) if rest.shape[1] else rest.clone()  # [B, M], ties to the first target
    onehot = (assign[..., None] == torch.arange(c, device=assign.device)).float()  # [B, M, c]
    sums = ht + onehot.transpose(1, 2) @ hr  # [B, c, d]
    return Merged(targets, assign, (sums / (onehot.sum(1) + 1.0)[..., None]).to(hidden.dtype))


def _check_hidden_and_span(name: str, hidden: torch.Tensor, span_start: torch.Tensor) -> tuple[int, int]:
    """``(B, S)`` of ``hidden`` [B, S, d] (bf16/fp16/fp32) after checking it and ``span_start`` (long [B])."""
    if hidden.dim() != 3 or hidden.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"{name}: hidden must be [B, S, d] bf16/fp16/fp32, got {hidden.dtype} {tuple(hidden.shape)}")
    b, s = hidden.shape[:2]
    if span_start.dtype != torch.long or tuple(span_start.shape) != (b,):
        raise ValueError(f"{name}: span_start must be long [{b}], got {span_start.dtype} {tuple(span_start.shape)}")
    return b, s


def token_merge_triton(
    hidden: torch.Tensor, span_start: torch.Tensor, dropped: torch.Tensor, c: int, check_values: bool = True
) -> Merged:
    """:func:`token_merge_reference` on the GPU (or the Triton interpreter).

    - ``hidden``: ``[B, S, d]`` bf16/fp16/fp32, last dim contiguous;
    - ``span_start``: long ``[B]``; ``dropped``: long ``[B, D]`` span-relative, ascending; ``0 <= c <= D``.

    ``check_values=False`` skips the checks that read indices back to the host (a CUDA graph records none).
    Returns :class:`Merged`: ``targets`` and ``merged`` slots exactly as the reference; ``assign`` equal to it but
    at float32 near-ties; ``hidden`` ``[B, c, d]`` within float32 rounding of it.
    """
    name = "token_merge_triton"
    b, s = _check_hidden_and_span(name, hidden, span_start)
    if dropped.dtype != torch.long or dropped.dim() != 2 or dropped.shape[0] != b:
        raise ValueError(f"{name}: dropped must be long [{b}, D], got {dropped.dtype} {tuple(dropped.shape)}")
    if not 0 <= c <= dropped.shape[1]:
        raise ValueError(f"{name}: cannot merge {dropped.shape[1]} dropped tokens into c={c} contextual tokens")
    check_device(name, hidden, span_start, dropped)
    if check_values and dropped.numel():
        rows = span_start[:, None] + dropped
        if bool((dropped < 0).any()) or bool((rows >= s).any()):
            raise ValueError(f"{name}: span_start + dropped must index the {s} tokens of each row")

    targets, rest = _split(dropped, c)
    return _launch(hidden, span_start, targets, rest, nearest=False)


def cluster_merge_triton(hidden: torch.Tensor, span_start: torch.Tensor, targets: torch.Tensor, rest: torch.Tensor,
                         check_values: bool = True) -> Merged:
    """Fold clusters around given centres (the assignment and means of :mod:`quota.runtime.recycle`): each token
    of ``rest`` joins the nearest of ``targets`` in L2 distance of hidden states (ties to the lower target), and
    each output is the mean of its cluster, its centre included (float32 sums, ``hidden``'s dtype).

    - ``hidden``: ``[B, S, d]`` bf16/fp16/fp32, last dim contiguous; ``span_start``: long ``[B]``;
    - ``targets``: long ``[B, c]`` and ``rest``: long ``[B, M]``, span-relative, disjoint.

    Returns :class:`Merged` with ``targets`` as given, ``assign`` ``[B, M]`` (equal to an exact-arithmetic argmin
    but at float32 near-ties) and ``hidden`` ``[B, c, d]``."""
    name = "cluster_merge_triton"
    b, s = _check_hidden_and_span(name, hidden, span_start)
    for what, t in (("targets", targets), ("rest", rest)):
        if t.dtype != torch.long or t.dim() != 2 or t.shape[0] != b:
            raise ValueError(f"{name}: {what} must be long [{b}, n], got {t.dtype} {tuple(t.shape)}")
    check_device(name, hidden, span_start, targets, rest)
    if check_values and (targets.numel() or rest.numel()):
        rows = span_start[:, None] + torch.cat([targets, rest], 1)
        if bool((rows < span_start[:, None]).any()) or bool((rows >= s).any()):
            raise ValueError(f"{name}: span_start + targets/rest must index the {s} tokens of each row")
    return _launch(hidden, span_start, targets, rest, nearest=True)


def _launch(hidden, span_start, targets, rest, nearest: bool) -> Merged:
    """Both kernels over ``targets`` [B, c] and ``rest`` [B, M]: the contextual rule, or (``nearest``) the clusters'."""
    b, _, d = hidden.shape
    c = targets.shape[1]
    hidden = hidden if hidden.stride(-1) == 1 else hidden.contiguous()
    targets, rest, span_start = targets.contiguous(), rest.contiguous(), span_start.contiguous()
    m = rest.shape[1]
    assign = torch.empty((b, m if c else 0), dtype=torch.long, device=hidden.device)
    out = torch.empty((b, c, d), dtype=hidden.dtype, device=hidden.device)
    if c == 0 or b == 0:
        return Merged(targets, assign, out)
    cp = max(16, next_power_of_2(c))
    bd = max(16, min(next_power_of_2(d), 64))
    bm = 16 if cp > 64 else 32
    strides = (hidden.stride(0), hidden.stride(1))
    if m:
        _assign_kernel[(triton.cdiv(m, bm), b)](
            hidden, span_start, rest, targets, assign, m, c, d, *strides, BM=bm, CP=cp, BD=bd, NEAREST=nearest,
            num_warps=4,
        )
    _merge_kernel[(triton.cdiv(d, bd), b)](
        hidden, span_start, rest, targets, assign, out, m, c, d, *strides, BM=bm, CP=cp, BD=bd, NEAREST=nearest,
        num_warps=4,
    )
    return Merged(targets, assign, out)
