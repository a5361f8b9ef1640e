"""Quantized KV: keys (after RoPE) and values pass through the KV quantizer before attention.

:class:`KVQuantizer` holds one attention module's KV settings. :func:`install_kv_quantizer` attaches it
to an attention module instance (no class is patched) and switches the language model to the ``quota``
attention implementation, registered with transformers' ``AttentionInterface``: it applies the module's
quantizer, then runs the model's SDPA attention. This is the simulated path (the reference for the
kernel path, whose cache holds the codes and whose attention dequantizes inside the kernel).

With ``hadamard`` on, keys are quantized in a Hadamard-rotated head basis, ``k' = k H``; the query is
rotated by the same ``H`` so ``q' . k' = q . k`` and attention is unchanged in full precision.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from quota.quant.config import FULL_PRECISION
from quota.quant.hadamard import apply_block_hadamard, is_power_of_two
from quota.quant.quantizers import fake_quantize_kv

ATTENTION_NAME = "quota"


@dataclass(frozen=True)
class KVQuantizer:
    """Asymmetric per-token, per-head quantization of K and V in groups of ``group_size`` along head_dim."""

    bits: int = 4
    group_size: int = 64
    clip_ratio: float = 1.0
    hadamard: bool = True

    def __call__(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``query`` ``[B, Hq, T, D]``, ``key``/``value`` ``[B, Hkv, S, D]`` -> the same, quantized."""
        if self.bits == FULL_PRECISION:
            return query, key, value
        if self.hadamard:
            query, key = apply_block_hadamard(query), apply_block_hadamard(key)
        group = min(self.group_size, key.shape[-1])
        key = fake_quantize_kv(key, self.bits, group, self.clip_ratio)
        value = fake_quantize_kv(value, self.bits, group, self.clip_ratio)
        return query, key, value


# Decode steps leave cuDNN attention out: it builds (and caches) an execution graph per key length, so a step,
# whose key length grows by one, paid about 1.8 ms of CPU time per layer for it on the H100 (torch 2.11), 60%
# of a 7B model's bf16 decode step (examples/profile_step.py). Flash and memory-efficient attention have no
# per-shape set-up. Prefill, whose shapes repeat from one request to the next, keeps the default choice.
_DECODE_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def quota_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    """Attention function registered as ``"quota"``: KV quantization, then the model's SDPA.

    When the module instance has a ``quota_probe`` attribute (a callable, set by the pruning runtime
    for one forward), it is called as ``probe(module, query, key, attention_mask, scaling)`` with the
    query and key after KV quantization, before attention; it must not modify them. When it has a
    ``quota_kv_store`` (set by the runtime's kernel path: an object with
    ``attend(module, query, scaling, probe) -> [B, T, H_q, D]``, such as
    :class:`quota.runtime.kv.quantized.QuantizedKVStore`), attention is the store's: it runs the Triton kernels
    over the stored int4/int8 codes instead.
    """
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    store = getattr(module, "quota_kv_store", None)  # the kernel path: codes in a QuantizedKVStore
    if store is not None:
        return store.attend(module, query, kwargs.get("scaling"), getattr(module, "quota_probe", None)), None
    quantizer: KVQuantizer | None = getattr(module, "quota_kv", None)
    if quantizer is not None:
        query, key, value = quantizer(query, key, value)
    probe = getattr(module, "quota_probe", None)  # set by the pruning runtime for one forward
    if probe is not None:
        probe(module, query, key, attention_mask, kwargs.get("scaling"))
    if query.shape[-2] == 1:  # a decode step
        with sdpa_kernel(_DECODE_SDPA_BACKENDS):
            return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, **kwargs)
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, **kwargs)


def register_attention() -> None:
    """Register the ``quota`` attention and its (SDPA-style) mask with transformers. Idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, quota_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, sdpa_mask)


def install_kv_quantizer(attention: nn.Module, quantizer: KVQuantizer, head_dim: int) -> None:
    """Attach ``quantizer`` to one attention module instance, checking it fits ``head_dim``."""
    if quantizer.bits != FULL_PRECISION:
        group = min(quantizer.group_size, head_dim)
        if head_dim % group != 0:
            raise ValueError(f"kv_group_size {quantizer.group_size} does not divide head_dim {head_dim}")
        if quantizer.hadamard and not is_power_of_two(head_dim):
            raise ValueError(f"kv_hadamard needs a power-of-two head_dim, got {head_dim}")
    attention.quota_kv = quantizer


def use_quota_attention(config) -> None:
    """Point a (text) config at the ``quota`` attention implementation."""
    register_attention()
    config._attn_implementation = ATTENTION_NAME


@contextmanager
def quota_attention_of(config):
    """Select the ``quota`` attention function on ``config`` for the duration; restore it afterwards."""
    register_attention()
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
