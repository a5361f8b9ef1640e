"""Token signals from the deployed (possibly quantized) forward, their combination, and the budgeted top-k.

Conventions:

- Signals are computed for the ``n`` visual tokens alive at a pruning point, per sample: float32
  ``[B, n]``, column ``j`` is the ``j``-th alive visual token in original order.
- Pruning before layer ``l`` uses layer ``l - 1``'s forward: the hidden states entering layer ``l``
  (``magnitude``), the attention layer ``l - 1`` paid to them (``attn_last``, ``attn_text``), and how they
  fare under layer ``l``'s activation quantizer (``risk``, ``outlier``). Before layer 0 only
  embedding-level signals exist (:data:`EMBEDDING_SIGNALS`). The vision tower's attention
  (``vision_attn``, VisionZip's signal) is computed once per image and exists at every layer: the alive
  tokens keep the values of their original indices.
- Attention signals are computed only for the queries that need them (``q_sel @ K^T`` with the softmax
  over all keys of each selected query); the full attention matrix is never formed. They are recorded
  through the ``quota`` attention function (:mod:`quota.quantize.attention`), which calls the attention module's
  ``quota_probe`` attribute, an :class:`AttentionRecorder` the runner sets for one forward.
- :func:`combine` normalizes each signal per sample over the visual tokens, takes the weighted sum and
  snaps it to a grid of :data:`SCORE_GRID`: floating-point noise below that (a batched kernel summing
  in another order) cannot reorder near-equal tokens; tokens in one grid cell tie.
- :func:`select_topk`: exactly ``k`` tokens survive; ties break toward the lower index (a stable sort
  on ``-score``, never ``torch.topk``'s tie order); kept indices are returned in ascending order.
"""

from __future__ import annotations

import functools
from typing import Mapping

import torch
import torch.nn as nn

from quota.quant.config import FULL_PRECISION
from quota.quant.hadamard import apply_block_hadamard
from quota.quant.quantizers import fake_quantize_activation
from quota.kernels.score_gather import select_topk  # noqa: F401  (re-exported: the runtime's top-k rule)
from quota.quantize.linear import QuantLinear
from quota.signals import (  # noqa: F401  (re-exported for the runner)
    ATTENTION_SIGNALS, EMBEDDING_SIGNALS, LAYER_SIGNALS, SIGNALS, available_signals,
)

SCORE_GRID = 2.0**-16


# ----------------------------------------------------------------------------------- activation signals


def activation_magnitude(hidden: torch.Tensor) -> torch.Tensor:
    """``||h_i||_2``: ``[B, n, d]`` -> float32 ``[B, n]``."""
    return hidden.float().norm(dim=-1)


def activation_quantizer_of(linear: nn.Module) -> tuple[int, float, int | None]:
    """``(bits, clip_ratio, hadamard_block)`` of ``linear``'s per-token activation quantizer: the deployed
    one of a :class:`~quota.quantize.linear.QuantLinear` that quantizes activations, else int4 absmax."""
    if isinstance(linear, QuantLinear) and linear.a_bits != FULL_PRECISION:
        return linear.a_bits, linear.a_clip_ratio, linear.hadamard_block
    return 4, 1.0, None


def quantization_risk(
    x: torch.Tensor, bits: int = 4, clip_ratio: float = 1.0, hadamard_block: int | None = None
) -> torch.Tensor:
    """``||Q(x_i) - x_i|| / ||x_i||`` per token under per-token symmetric quantization: ``[B, n, K]`` -> ``[B, n]``."""
    x = x.float()
    if hadamard_block:
        x = apply_block_hadamard(x, hadamard_block)
    err = (fake_quantize_activation(x, bits, clip_ratio) - x).norm(dim=-1)
    return err / x.norm(dim=-1).clamp_min(1e-30)


def outlier_intensity(x: torch.Tensor) -> torch.Tensor:
    """``max|x_i| / rms(x_i)`` per token: ``[B, n, K]`` -> ``[B, n]``."""
    x = x.float()
    return x.abs().amax(-1) / x.pow(2).mean(-1).sqrt().clamp_min(1e-30)


@functools.lru_cache(maxsize=256)
def _random_table(seed: int, layer: int, n_visual: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(layer))
    return torch.rand(n_visual, generator=gen).to(device)  # [N]


def random_signal(seed: int, layer: int, visual_index: torch.Tensor, n_visual: int) -> torch.Tensor:
    """Seeded uniform numbers indexed by original visual index (``[B, n]`` long): identical for a sample
    whatever else is in the batch. The table is drawn on the host once per ``(seed, layer, N, device)`` and
    kept, so that a recorded prefill (which may not copy from the host) reads it from device memory."""
    return _random_table(int(seed), int(layer), int(n_visual), visual_index.device)[visual_index]


# ----------------------------------------------------------------------------------- attention signals


def attention_received(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    query_index: torch.Tensor,
    query_weight: torch.Tensor,
    span_start: torch.Tensor,
    n: int,
    scaling: float,
) -> torch.Tensor:
    """Attention the visual keys receive from selected queries, averaged over heads and queries.

    - ``query``: ``[B, Hq, T, D]``; ``key``: ``[B, Hkv, K, D]`` (``Hq`` a multiple of ``Hkv``, grouped as in
      ``repeat_kv``: query head ``h`` reads kv head ``h // (Hq / Hkv)``);
    - ``attention_mask``: ``None`` (causal, queries aligned to the last keys), or bool (True = attend) /
      additive float ``[B or 1, 1, T, K' >= K]``;
    - ``query_index``: long ``[B, Q]`` rows of ``query`` to use; ``query_weight``: ``[B, Q]`` weights of
      those rows (zero for padding entries; they are renormalized to sum to 1 per sample);
    - ``span_start``: long ``[B]`` index of the first visual key; the visual keys are ``[start, start + n)``.

    Returns float32 ``[B, n]``. Only ``Q x K`` scores per head are formed, in float32.
    """
    b, hq, t, d = query.shape
    hkv, k_len = key.shape[1], key.shape[2]
    q_n = query_index.shape[1]
    groups = hq // hkv
    q = query.gather(2, query_index[:, None, :, None].expand(b, hq, q_n, d)).float()  # [B, Hq, Q, D]
    q = q.view(b, hkv, groups * q_n, d)  # [B, Hkv, G*Q, D]
    logits = (q @ key.float().transpose(-1, -2)).view(b, hq, q_n, k_len) * scaling  # [B, Hq, Q, K]
    if attention_mask is None:
        allowed = torch.arange(k_len, device=key.device)[None, :] <= (query_index + (k_len - t))[..., None]  # [B, Q, K]
        logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    else:
        rows = attention_mask[..., :k_len]  # [B|1, 1, T, K]
        rows = rows.expand(b, 1, t, k_len).gather(2, query_index[:, None, :, None].expand(b, 1, q_n, k_len))
        if rows.dtype == torch.bool:
            logits = logits.masked_fill(~rows, float("-inf"))
        else:
            logits = logits + rows.float()
    probs = torch.softmax(logits, dim=-1)  # [B, Hq, Q, K]
    cols = (span_start[:, None] + torch.arange(n, device=key.device)[None, :])  # [B, n]
    vis = probs.gather(-1, cols[:, None, None, :].expand(b, hq, q_n, n)).mean(1)  # [B, Q, n]
    w = query_weight.float()
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-30)
    return (vis * w[..., None]).sum(1)  # [B, n]


class AttentionRecorder:
    """Set as ``attention_module.quota_probe`` for one forward; the ``quota`` attention function calls it
    with the (KV-quantized) query and key of that module, and it stores :func:`attention_received` for
    each named query set in :attr:`scores` (name -> float32 ``[B, n]``).

    ``queries`` maps a signal name to ``(query_index [B, Q], query_weight [B, Q])``.
    """

    def __init__(self, queries: Mapping[str, tuple[torch.Tensor, torch.Tensor]], span_start: torch.Tensor, n: int):
        self.queries = dict(queries)
        self.span_start = span_start
        self.n = n
        self.scores: dict[str, torch.Tensor] = {}

    def __call__(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, attention_mask, scaling=None) -> None:
        if scaling is None:
            scaling = getattr(module, "scaling", query.shape[-1] ** -0.5)
        for name, (index, weight) in self.queries.items():
            self.scores[name] = attention_received(
                query, key, attention_mask, index, weight, self.span_start, self.n, scaling
            )


def text_queries(seq_len: int, span_start: torch.Tensor, n: int, static: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index [B, Q], weight [B, Q])`` of the text tokens after the visual span in a left-padded layout of
    length ``seq_len`` (every position after the span is a valid prompt token). ``Q`` is the longest such
    text, read back to the host; ``static``: ``Q = seq_len - n`` instead, its bound, with weight 0 on the
    extra queries (no read-back, and the same scores up to rounding: a GPU may pick another matmul kernel for
    the longer query block, so a near-tie at the top-k boundary may fall the other way)."""
    after = seq_len - (span_start + n)  # [B]
    q_max = max(seq_len - n, 1) if static else max(int(after.max().item()), 1)
    j = torch.arange(q_max, device=span_start.device)[None, :]  # [1, Q]
    index = (span_start[:, None] + n + j).clamp(max=seq_len - 1)
    weight = (j < after[:, None]).float()
    return index, weight


def last_query(batch: int, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index [B, 1], weight [B, 1])`` of the last position (the last prompt token under left padding)."""
    return torch.full((batch, 1), seq_len - 1, dtype=torch.long, device=device), torch.ones(batch, 1, device=device)


# ----------------------------------------------------------------------------------- combine and select


def normalize(signal: torch.Tensor, method: str = "minmax") -> torch.Tensor:
    """Per-sample normalization of ``[B, n]`` to ``[0, 1]``: ``minmax`` (a constant row gives 0) or ``rank``
    (average rank of ties, divided by ``n - 1``)."""
    s = signal.float()
    if s.shape[-1] == 0:
        return s
    if method == "minmax":
        lo = s.amin(-1, keepdim=True)
        span = s.amax(-1, keepdim=True) - lo
        return torch.where(span > 0, (s - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(s))
    if method == "rank":
        srt = s.sort(-1).values.contiguous()
        left = torch.searchsorted(srt, s.contiguous(), side="left").float()
        right = torch.searchsorted(srt, s.contiguous(), side="right").float()
        return (left + right - 1) / 2 / max(s.shape[-1] - 1, 1)
    raise ValueError(f"unknown normalization {method!r}; use 'minmax' or 'rank'")


def combine(signals: Mapping[str, torch.Tensor], weights: Mapping[str, float], method: str = "minmax") -> torch.Tensor:
    """``sum_s w_s * normalize(signal_s)`` over the signals with a non-zero weight, in :data:`SIGNALS`
    order, snapped to :data:`SCORE_GRID`. Every weighted signal must be present; returns float32 ``[B, n]``."""
    names = [s for s in SIGNALS if weights.get(s, 0.0) != 0.0]
    unknown = sorted(set(weights) - set(SIGNALS))
    if unknown:
        raise ValueError(f"unknown score signal(s) {unknown}; known: {list(SIGNALS)}")
    if not names:
        raise ValueError("combine needs at least one signal with a non-zero weight")
    missing = [s for s in names if s not in signals]
    if missing:
        raise ValueError(f"signals {missing} have weights but were not computed")
    acc = None
    for name in names:
        term = float(weights[name]) * normalize(signals[name], method)
        acc = term if acc is None else acc + term
    return torch.round(acc / SCORE_GRID) * SCORE_GRID
