"""An independent reference for pruning: the unpruned model where, from layer ``l`` on, the visual
tokens dropped by layer ``l`` are masked out of every query's attention (``module.ref_alive``), run
through the model's own forward / ``generate`` with a test-only attention function."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from quota.quantize.attention import quota_attention

REF_ATTENTION = "quota_test_masked"


def masked_attention(module, query, key, value, attention_mask, **kwargs):
    b, t, k_len = query.shape[0], query.shape[-2], key.shape[-2]
    if attention_mask is None:
        i = torch.arange(t)[:, None] + (k_len - t)
        allowed = (torch.arange(k_len)[None, :] <= i)[None, None].expand(b, 1, t, k_len)
    else:
        allowed = attention_mask[..., :k_len].expand(b, 1, t, k_len)
        if allowed.dtype != torch.bool:  # additive: 0 where allowed, a large negative value elsewhere
            allowed = allowed > torch.finfo(allowed.dtype).min / 2
    alive = getattr(module, "ref_alive", None)  # [B, S_prompt] bool
    if alive is not None:
        keys = torch.cat([alive, torch.ones(b, k_len - alive.shape[1], dtype=torch.bool)], dim=1)
        allowed = allowed & keys[:, None, None, :]
    record = getattr(module, "ref_record", None)
    if record is not None:  # full attention probabilities (test only), after the KV quantizer
        q, k = query, key
        quantizer = getattr(module, "quota_kv", None)
        if quantizer is not None:
            q, k, _ = quantizer(query, key, value)
        groups = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(groups, dim=1)
        logits = (q.float() @ k.float().transpose(-1, -2)) * kwargs["scaling"]
        record.append(torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1))
    return quota_attention(module, query, key, value, allowed, **kwargs)


@contextmanager
def reference_attention(model, alive_per_layer=None, record_layer=None):
    """Run ``model`` with :func:`masked_attention`; ``alive_per_layer[l]``: bool ``[B, S]`` keys alive in
    layer ``l``; ``record_layer``: a layer whose attention probabilities are appended to the yielded list."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(REF_ATTENTION, masked_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(REF_ATTENTION, sdpa_mask)
    config = model.config.text_config
    previous = config._attn_implementation
    config._attn_implementation = REF_ATTENTION
    layers = model.model.language_model.layers
    records: list[torch.Tensor] = []
    try:
        for l, layer in enumerate(layers):
            if alive_per_layer is not None:
                layer.self_attn.ref_alive = alive_per_layer[l]
            if record_layer == l:
                layer.self_attn.ref_record = records
        yield records
    finally:
        config._attn_implementation = previous
        for layer in layers:
            for name in ("ref_alive", "ref_record"):
                if name in layer.self_attn.__dict__:
                    delattr(layer.self_attn, name)


def alive_masks(kept: list[torch.Tensor], span_start: torch.Tensor, n_visual: int, seq_len: int) -> list[torch.Tensor]:
    """Per layer, bool ``[B, S]``: every token except the visual ones not in ``kept[l]``."""
    out = []
    for k in kept:
        alive = torch.ones(k.shape[0], seq_len, dtype=torch.bool)
        for b in range(k.shape[0]):
            s = int(span_start[b])
            alive[b, s : s + n_visual] = False
            alive[b, s + k[b]] = True
        out.append(alive)
    return out


def positions_of(attention_mask: torch.Tensor) -> torch.Tensor:
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 0)
