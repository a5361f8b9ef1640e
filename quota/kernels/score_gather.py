"""Score-and-gather: exact budgeted top-k of the visual tokens, then compaction of the sequence.

Two kernels behind one launcher, :func:`score_gather_triton`:

1. ``_topk_kernel``, one program per sample: packs each score with its index into one int64 key,
   ``(order-preserving int32 of the float32 score) << 32 | (NP - 1 - index)``, sorts the keys in
   descending order with ``tl.sort`` (higher score first, equal scores lower index first, exactly the
   reference's stable sort on ``-score``), then sorts the ``k`` winning indices ascending and writes them.
   The selection is exact: integer keys, no floating-point arithmetic on the scores besides
   ``-0.0 -> +0.0``.
2. ``_gather_kernel``, one program per (row block, sample): maps each output row to its source row
   (before the span: itself; inside: ``span_start + kept``; after: shifted by ``n - k``) and copies
   the hidden state, the position ids (``R`` rows) and the key-validity flag.

Combining the signals into one score per token stays in PyTorch (:func:`quota.runtime.scoring.combine`):
its floating-point sum is not fused, so kernel and reference select from bit-identical scores.
The reference is :func:`score_gather_reference` (below); outputs are bit-identical to it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from quota.kernels._env import check_device, next_power_of_2

MAX_SPAN = 16384  # visual tokens one program sorts at once

__all__ = ["score_gather_triton", "score_gather_reference", "MAX_SPAN"]


@triton.jit
def _topk_kernel(scores_ptr, kept_ptr, n, k, stride_sb, NP: tl.constexpr):
    b = tl.program_id(0)
    i = tl.arange(0, NP)  # [NP]
    ok = i < n
    s = tl.load(scores_ptr + b.to(tl.int64) * stride_sb + i, mask=ok, other=0.0).to(tl.float32)
    s = s + 0.0  # -0.0 -> +0.0: equal scores tie
    bits = s.to(tl.int32, bitcast=True)
    key = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # int32 order == float order
    key = tl.where(ok, key, -2147483648)  # padding sorts last
    low = tl.where(ok, (NP - 1) - i, 0)
    packed = (key.to(tl.int64) << 32) | low.to(tl.int64)  # [NP]
    ranked = tl.sort(packed, descending=True)
    index = (NP - 1) - (ranked & 0x7FFFFFFF).to(tl.int32)  # winners first, ties by lower index
    chosen = tl.sort(tl.where(i < k, index, NP))  # the k winners, ascending
    tl.store(kept_ptr + b.to(tl.int64) * k + i, chosen.to(tl.int64), mask=i < k)


@triton.jit
def _gather_kernel(
    h_ptr, pos_ptr, valid_ptr, kept_ptr, span_ptr,
    out_h_ptr, out_pos_ptr, out_valid_ptr, src_ptr,
    B, S, S_OUT, D, n, k, R,
    stride_hb, stride_hs, stride_ob, stride_os,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    rb = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    r = rb * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)  # [BR] output rows
    rok = r < S_OUT
    start = tl.load(span_ptr + b)
    inside = (r >= start) & (r < start + k)
    kv = tl.load(kept_ptr + b * k + (r - start), mask=inside & rok, other=0)
    src = tl.where(r < start, r, tl.where(inside, start + kv, r + (n - k)))  # [BR]
    tl.store(src_ptr + b * S_OUT + r, src, mask=rok)
    v = tl.load(valid_ptr + b * S + src, mask=rok, other=0)
    tl.store(out_valid_ptr + b * S_OUT + r, v, mask=rok)
    for p in range(R):
        pv = tl.load(pos_ptr + (p * B + b) * S + src, mask=rok, other=0)
        tl.store(out_pos_ptr + (p * B + b) * S_OUT + r, pv, mask=rok)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        m = rok[:, None] & (dd[None, :] < D)
        x = tl.load(h_ptr + b * stride_hb + src[:, None] * stride_hs + dd[None, :], mask=m, other=0.0)
        tl.store(out_h_ptr + b * stride_ob + r[:, None] * stride_os + dd[None, :], x, mask=m)


def score_gather_triton(
    hidden: torch.Tensor,
    positions: torch.Tensor,
    valid: torch.Tensor,
    scores: torch.Tensor,
    span_start: torch.Tensor,
    k: int,
    check_values: bool = True,
) -> Compacted:
    """Keep the ``k`` best-scored visual tokens of each sample's span and compact the sequence.

    ``check_values=False`` skips the checks that read the spans and scores back to the host (a CUDA graph
    records no such read); the caller then vouches for them.

    - ``hidden``: ``[B, S, d]`` bf16/fp16/fp32, last dim contiguous;
    - ``positions``: long ``[R, B, S]`` (``R = 1`` RoPE, ``3`` M-RoPE);
    - ``valid``: bool ``[B, S]`` key validity;
    - ``scores``: float ``[B, n]``, finite, one per alive visual token of the span, in span order
      (``n <= MAX_SPAN``);
    - ``span_start``: long ``[B]``, first visual token of each row (``span_start + n <= S``);
    - ``k``: ``0 <= k <= n``.

    Returns :class:`Compacted` (``hidden [B, S - n + k, d]``, ``positions``,
    ``valid``, ``kept [B, k]`` ascending span-relative indices, ``src [B, S - n + k]``), bit-identical to
    :func:`score_gather_reference`.
    """
    name = "score_gather_triton"
    if hidden.dim() != 3 or hidden.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"{name}: hidden must be [B, S, d] bf16/fp16/fp32, got {hidden.dtype} {tuple(hidden.shape)}")
    b, s, d = hidden.shape
    if positions.dim() != 3 or positions.dtype != torch.long or tuple(positions.shape[1:]) != (b, s):
        got = f"{positions.dtype} {tuple(positions.shape)}"
        raise ValueError(f"{name}: positions must be long [R, {b}, {s}], got {got}")
    if valid.dtype != torch.bool or tuple(valid.shape) != (b, s):
        raise ValueError(f"{name}: valid must be bool [{b}, {s}], got {valid.dtype} {tuple(valid.shape)}")
    if scores.dim() != 2 or scores.shape[0] != b or not scores.dtype.is_floating_point:
        raise ValueError(f"{name}: scores must be float [{b}, n], got {scores.dtype} {tuple(scores.shape)}")
    n = scores.shape[1]
    if n > MAX_SPAN:
        raise ValueError(f"{name}: at most {MAX_SPAN} visual tokens per span, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"{name}: cannot keep k={k} of n={n} tokens")
    if span_start.dtype != torch.long or tuple(span_start.shape) != (b,):
        raise ValueError(f"{name}: span_start must be long [{b}], got {span_start.dtype} {tuple(span_start.shape)}")
    check_device(name, hidden, positions, valid, scores, span_start)
    if check_values and (bool((span_start < 0).any()) or bool((span_start + n > s).any())):
        raise ValueError(f"{name}: the visual span [span_start, span_start + {n}) must lie inside the {s} tokens")
    if check_values and not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{name}: token scores must be finite")

    hidden = hidden if hidden.stride(-1) == 1 else hidden.contiguous()
    positions, span_start = positions.contiguous(), span_start.contiguous()
    scores = scores.float().contiguous()
    s_out = s - n + k
    kept = torch.empty((b, k), dtype=torch.long, device=hidden.device)
    out_h = torch.empty((b, s_out, d), dtype=hidden.dtype, device=hidden.device)
    out_pos = torch.empty((positions.shape[0], b, s_out), dtype=torch.long, device=hidden.device)
    out_valid = torch.empty((b, s_out), dtype=torch.uint8, device=hidden.device)
    src = torch.empty((b, s_out), dtype=torch.long, device=hidden.device)
    if b == 0:
        return Compacted(out_h, out_pos, out_valid.bool(), kept, src)
    _topk_kernel[(b,)](scores, kept, n, k, scores.stride(0), NP=next_power_of_2(max(n, 2)), num_warps=4)
    if s_out:
        block_r = min(next_power_of_2(s_out), 32)
        block_d = min(next_power_of_2(d), 128)
        _gather_kernel[(triton.cdiv(s_out, block_r), b)](
            hidden, positions, valid.contiguous().view(torch.uint8), kept, span_start,
            out_h, out_pos, out_valid, src,
            b, s, s_out, d, n, k, positions.shape[0],
            hidden.stride(0), hidden.stride(1), out_h.stride(0), out_h.stride(1),
            BLOCK_R=block_r, BLOCK_D=block_d, num_warps=4,
        )  # fmt: skip
    return Compacted(out_h, out_pos, out_valid.view(torch.bool), kept, src)


# ------------------------------------------------------------------------ PyTorch reference (the oracle)


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

    Selection follows :func:`select_topk` (exactly ``k``, ties to the lower index).
    """
    kept = select_topk(scores, k, check_values)  # [B, k]
    return compact(hidden, positions, valid, span_start, scores.shape[1], kept)


def select_topk(scores: torch.Tensor, k: int, check_values: bool = True) -> torch.Tensor:
    """Indices ``[B, k]`` (long, ascending) of the ``k`` highest scores of ``[B, n]`` per row; ties go to the
    lower index. Scores must be finite (checked on the host unless ``check_values`` is off)."""
    n = scores.shape[-1]
    if not 0 <= k <= n:
        raise ValueError(f"cannot keep k={k} of n={n} tokens")
    s = scores.float() + 0.0  # -0.0 -> +0.0
    if check_values and not torch.isfinite(s).all():
        raise ValueError("token scores must be finite")
    order = torch.sort(-s, dim=-1, stable=True).indices  # [B, n], ties in index order
    return order[:, :k].sort(dim=-1).values
