"""Measured per-layer latency of each precision option, prefill and decode separately, on the device profiled.

For option ``p`` the timed module is the middle decoder layer of ``models[p]`` (the model quantized uniformly at
``p``, so the layer runs that option's kernels, or their references on a CPU):

- ``prefill[p, g]``: one forward of the layer over ``seq_lens[g]`` tokens (batch 1, no cache);
- ``decode[p, g]``: one forward of one new token against a KV cache already holding ``seq_lens[g]`` tokens
  (filled by a prefill of the same layer; the cache is cropped back after each timed step).

On CUDA the time is the median over ``repeats`` of CUDA-event timings (``method = "cuda_events"``); on a CPU the
median of ``time.perf_counter`` (``method = "cpu_perf_counter"``): a CPU figure, not a prediction for a GPU.
Each row is made non-decreasing in the keep count (a running maximum), as the solver's cost model requires.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from quota.models.registry import spec_for


def _timer(device: torch.device) -> tuple[str, Callable[[Callable[[], None]], float]]:
    """``(method, time_one(fn) -> seconds)`` for ``device``."""
    if device.type == "cuda":
        def time_cuda(fn: Callable[[], None]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        return "cuda_events", time_cuda

    def time_cpu(fn: Callable[[], None]) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    return "cpu_perf_counter", time_cpu


def _median(fn: Callable[[], None], time_one, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    return float(np.median([time_one(fn) for _ in range(repeats)]))


@torch.no_grad()
def layer_phase_latency(model: nn.Module, seq_lens: Sequence[int], repeats: int | None = None,
                        warmup: int = 2) -> tuple[np.ndarray, np.ndarray, str]:
    """``(prefill [S], decode [S], method)``: seconds of ``model``'s middle decoder layer at each of ``seq_lens``
    (module docstring). ``repeats`` defaults to 20 on CUDA and 3 on a CPU."""
    from transformers.cache_utils import DynamicCache

    spec = spec_for(model)
    layers = spec.layers_of(model)
    index = len(layers) // 2
    layer, lm = layers[index], spec.language_model_of(model)
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    config = spec.text_config_of(model)
    method, time_one = _timer(device)
    repeats = repeats or (20 if device.type == "cuda" else 3)
    prefill, decode = [], []
    for s in seq_lens:
        h = torch.randn(1, s, config.hidden_size, device=device, dtype=dtype)
        pos = torch.arange(s, device=device)[None]
        rope = lm.rotary_emb(h, pos)
        prefill.append(_median(lambda: layer(h, attention_mask=None, position_ids=pos, position_embeddings=rope),
                               time_one, repeats, warmup))
        cache = DynamicCache(config=config)
        layer(h, attention_mask=None, position_ids=pos, position_embeddings=rope, cache=cache, use_cache=True)
        one = torch.randn(1, 1, config.hidden_size, device=device, dtype=dtype)
        one_pos = torch.full((1, 1), s, device=device, dtype=torch.long)
        one_rope = lm.rotary_emb(one, one_pos)

        def step() -> None:
            layer(one, attention_mask=None, position_ids=one_pos, position_embeddings=one_rope, cache=cache,
                  use_cache=True)
            cache.crop(-1)  # drop the token just written: every timed step sees s cached tokens

        decode.append(_median(step, time_one, repeats, warmup))
    return np.maximum.accumulate(np.asarray(prefill)), np.maximum.accumulate(np.asarray(decode)), method


def precision_latency(models: Mapping[str, nn.Module], precisions: Sequence[str], seq_lens: Sequence[int],
                      repeats: int | None = None) -> dict:
    """``{"prefill": [P, S], "decode": [P, S], "method", "device"}`` (seconds per layer) of each option's model
    (:func:`layer_phase_latency`), in the order of ``precisions``."""
    prefill, decode, method = [], [], ""
    for name in precisions:
        pre, dec, method = layer_phase_latency(models[name], seq_lens, repeats)
        prefill.append(pre)
        decode.append(dec)
    device = next(models[precisions[0]].parameters()).device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"prefill": np.stack(prefill), "decode": np.stack(decode), "method": method, "device": name,
            "decode_context": "KV cache of text + k tokens, one new token"}
