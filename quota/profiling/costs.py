"""Per-layer cost curves as a function of the visual tokens a layer keeps: token-layers, prefill FLOPs,
KV-cache bytes (analytic, from the model's config and the quantization config), and latency (measured
on the present GPU by timing one decoder layer at each sequence length)."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from quota.quant.config import FULL_PRECISION, QuantConfig


def _dims(text_config) -> tuple[int, int, int, int, int]:
    d = text_config.hidden_size
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", heads) or heads
    head_dim = getattr(text_config, "head_dim", None) or d // heads
    return d, heads, kv_heads, head_dim, text_config.intermediate_size


def layer_flops(text_config, seq_len: np.ndarray | float, prefix_len: np.ndarray | float | None = None) -> np.ndarray:
    """Prefill FLOPs of one decoder layer over ``seq_len`` tokens (linears + causal attention scores and
    values; ``prefix_len`` keys before them, default none). Multiply-adds count as 2 FLOPs."""
    d, h, hkv, hd, ffn = _dims(text_config)
    s = np.asarray(seq_len, dtype=np.float64)
    p = np.zeros_like(s) if prefix_len is None else np.asarray(prefix_len, dtype=np.float64)
    linear = 2 * s * (d * h * hd + 2 * d * hkv * hd + h * hd * d + 3 * d * ffn)
    keys = p + (s + 1) / 2  # mean causal key count per query
    attention = 2 * 2 * s * keys * h * hd
    return linear + attention


def kv_bytes_per_token(text_config, quant: QuantConfig) -> float:
    """Bytes of K and V for one token in one layer: codes plus per-group scale and zero (fp16 each)."""
    _, _, hkv, hd, _ = _dims(text_config)
    if quant.kv_bits == FULL_PRECISION:
        return 2 * hkv * hd * 2.0
    groups = hd // min(quant.kv_group_size, hd)
    return 2 * hkv * (hd * quant.kv_bits / 8 + groups * 2 * 2)


def analytic_costs(text_config, quant: QuantConfig, grid: Sequence[int], n_layers: int, text_tokens: float) -> dict[str, np.ndarray]:
    """``{"tokens", "flops", "kv"}`` curves ``[L, G]`` for a layer keeping ``grid[g]`` visual tokens plus
    ``text_tokens`` text tokens. Non-decreasing in the keep count by construction."""
    k = np.asarray(grid, dtype=np.float64)
    tokens = np.tile(k, (n_layers, 1))
    flops = np.tile(layer_flops(text_config, k + text_tokens), (n_layers, 1))
    kv = np.tile((k + text_tokens) * kv_bytes_per_token(text_config, quant), (n_layers, 1))
    return {"tokens": tokens, "flops": flops, "kv": kv}


def measure_latency(
    run_layer: Callable[[int], None], seq_lens: Sequence[int], repeats: int = 20, warmup: int = 3,
    synchronize: Callable[[], None] | None = None,
) -> np.ndarray:
    """Median seconds of ``run_layer(seq_len)`` for each length (CUDA: pass ``torch.cuda.synchronize``).

    The result is made non-decreasing (a running maximum), so a kernel tile that makes a few extra
    tokens free shows as a flat step rather than a dip that would break the solver's cost model."""
    sync = synchronize or (lambda: None)
    out = []
    for s in seq_lens:
        for _ in range(warmup):
            run_layer(s)
        sync()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            run_layer(s)
            sync()
            times.append(time.perf_counter() - t)
        out.append(float(np.median(times)))
    return np.maximum.accumulate(np.asarray(out))
