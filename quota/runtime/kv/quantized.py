"""A layer-wise KV cache that stores int4/int8 codes, read inside the attention kernels.

The kernel path of the quantized KV cache: :meth:`QuantizedKVStore.update` quantizes each new key (after
RoPE, optionally after the head-dim Hadamard) and value with :func:`quota.kernels.kv_write.kv_cache_write`
into per-layer ``(codes, scale, zero)`` buffers (layout in :mod:`quota.kernels.kv_write`); each layer has
its own length. The ``quota`` attention function (:mod:`quota.quantize.attention`) finds the store on the attention
module (``quota_kv_store``, set by the runner for one forward) and hands attention to
:meth:`QuantizedKVStore.attend`, which runs :func:`~quota.kernels.kv_attention.kv_attention_prefill` or
``..._decode`` over the codes, so the cache
is never dequantized in memory. Left padding is masked by ``kv_start`` (per layer, per sample: the
number of padding slots at the left of that layer's sequence).

A layer whose quantizer keeps 16 bits (a mixed-precision recipe's full-precision KV layer) holds its keys and values
as they come, ``[B, H_kv, S_cap, D]`` in the model's dtype (zero-filled, so that masked slots hold no stale values),
and attends through PyTorch's SDPA with the same masking as the kernels: causal, ``kv_start`` padding, positions past
the length, and zeros for a query with no key left (a padding query). The other layers keep their codes and kernels.

Static mode (:meth:`QuantizedKVStore.begin_static`, for decode steps replayed from a CUDA graph): each layer's
length is also held in device memory (``device_lengths``, int32 ``[L]``); a one-token update writes at the
position held there and advances it on the device, and attention reads the length from there, so no launch
depends on a host-side length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from quota.kernels.kv_attention import dequantize_cache, kv_attention_decode, kv_attention_prefill
from quota.kernels.kv_write import allocate_kv_cache, kv_cache_write
from quota.quant.config import FULL_PRECISION
from quota.quant.hadamard import rotate_by_hadamard
from quota.quantize.attention import KVQuantizer
from quota.runtime.kv.static_lengths import StaticLengths


KV_BITS = (4, 8, FULL_PRECISION)
"""What a layer of the store may hold: 4- or 8-bit codes read by the kernels, or full-precision keys and values."""


class QuantizedKVStore(StaticLengths):
    """Per-layer quantized K/V buffers of independent lengths (duck-typed like the runtime's cache)."""

    def __init__(self, num_layers: int, quantizers: list[KVQuantizer], reserve: int = 0) -> None:
        if len(quantizers) != num_layers:
            raise ValueError(f"{len(quantizers)} KV quantizers for {num_layers} layers")
        for i, q in enumerate(quantizers):
            if q.bits not in KV_BITS:
                raise ValueError(f"layer {i}: the kernel KV cache stores 4 or 8 bits (or keeps 16), got {q.bits}")
        self.num_layers = num_layers
        self.quantizers = quantizers
        self.reserve = max(int(reserve), 0)
        self._k: list[tuple[torch.Tensor, ...] | None] = [None] * num_layers
        self._v: list[tuple[torch.Tensor, ...] | None] = [None] * num_layers
        self._lengths = [0] * num_layers
        self.kv_start: list[torch.Tensor | None] = [None] * num_layers  # int32 [B] per layer
        self.device_lengths: torch.Tensor | None = None  # int32 [L], in static mode

    def full_precision(self, layer: int) -> bool:
        """Whether ``layer`` keeps its keys and values unquantized (read by SDPA rather than by the kernels)."""
        return self.quantizers[layer].bits == FULL_PRECISION

    def _group(self, layer: int, head_dim: int) -> int:
        return min(self.quantizers[layer].group_size, head_dim)

    def _grow(self, layer: int, key: torch.Tensor, need: int) -> None:
        q = self.quantizers[layer]
        b, h, _, d = key.shape
        old_k, old_v, n = self._k[layer], self._v[layer], self._lengths[layer]
        cap = max(need + self.reserve, 2 * (old_k[0].shape[2] if old_k is not None else 0))
        if self.full_precision(layer):
            new_k = (torch.zeros(b, h, cap, d, dtype=key.dtype, device=key.device),)
            new_v = (torch.zeros(b, h, cap, d, dtype=key.dtype, device=key.device),)
        else:
            new_k = allocate_kv_cache(b, h, cap, d, q.bits, self._group(layer, d), key.device)
            new_v = allocate_kv_cache(b, h, cap, d, q.bits, self._group(layer, d), key.device)
        if old_k is not None and n:
            for new, old in zip(new_k + new_v, old_k + old_v):
                new[:, :, :n] = old[:, :, :n]
        self._k[layer], self._v[layer] = new_k, new_v

    # -- static mode ----------------------------------------------------------------------------------
    def capacity(self, layer_idx: int) -> int:
        """Slots allocated for layer ``layer_idx``."""
        if self._k[layer_idx] is None:
            raise IndexError(f"layer {layer_idx} of the cache is empty")
        return self._k[layer_idx][0].shape[2]

    def begin_static(self, key_valid: list[torch.Tensor] | None = None) -> None:
        """Enter static mode: copy every layer's length to ``device_lengths`` (launches only, no host copy, so
        that it may itself be captured). Every layer must hold tokens already. ``key_valid`` is not needed:
        padding is masked by ``kv_start``."""
        filled = all(k is not None for k in self._k)
        self._start_device_lengths(filled, torch.int32, self._k[0][0].device if filled else None)

    def end_static(self) -> None:
        """Leave static mode (the host-side lengths are kept current by the caller, see ``advance``)."""
        self.device_lengths = None

    def _update_static(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int):
        self._check_static_append(key.shape[2], layer_idx)
        q = self.quantizers[layer_idx]
        start = self.device_lengths[layer_idx : layer_idx + 1]
        if self.full_precision(layer_idx):
            index = start.long()  # [1], read on the device
            self._k[layer_idx][0].index_copy_(2, index, key.to(self._k[layer_idx][0].dtype))
            self._v[layer_idx][0].index_copy_(2, index, value.to(self._v[layer_idx][0].dtype))
            start.add_(1)
            self._lengths[layer_idx] += 1
            return key, value
        group = self._group(layer_idx, key.shape[-1])
        kv_cache_write(key, *self._k[layer_idx], start, q.bits, group, q.clip_ratio, hadamard=q.hadamard)
        kv_cache_write(value, *self._v[layer_idx], start, q.bits, group, q.clip_ratio, hadamard=False)
        start.add_(1)
        self._lengths[layer_idx] += 1
        return key, value

    def static_mask(self, layer_idx: int) -> None:
        """No mask: the kernels mask padding by ``kv_start`` and read the length from ``device_lengths``."""
        return None

    def attention_length(self, layer_idx: int) -> int | torch.Tensor:
        """What the attention kernels take as the length: the host int, or in static mode its device copy."""
        if self.static:
            return self.device_lengths[layer_idx : layer_idx + 1]
        return self._lengths[layer_idx]

    # -- updates ----------------------------------------------------------------------------------------
    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Quantize and append ``key``/``value`` ``[B, H_kv, T, D]``; returns them unchanged (the attention
        kernels read the codes, see the module docstring)."""
        if self.static:
            return self._update_static(key, value, layer_idx)
        q = self.quantizers[layer_idx]
        n, t, d = self._lengths[layer_idx], key.shape[2], key.shape[-1]
        if self._k[layer_idx] is None or n + t > self._k[layer_idx][0].shape[2]:
            self._grow(layer_idx, key, n + t)
        if self.full_precision(layer_idx):
            self._k[layer_idx][0][:, :, n : n + t] = key
            self._v[layer_idx][0][:, :, n : n + t] = value
            self._lengths[layer_idx] = n + t
            return key, value
        group = self._group(layer_idx, d)
        kv_cache_write(key, *self._k[layer_idx], n, q.bits, group, q.clip_ratio, hadamard=q.hadamard)
        kv_cache_write(value, *self._v[layer_idx], n, q.bits, group, q.clip_ratio, hadamard=False)
        self._lengths[layer_idx] = n + t
        return key, value

    def layer(self, layer_idx: int) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], int]:
        """``(k_cache, v_cache, length)`` of one layer; caches are ``(codes, scale, zero)``, or ``(values,)`` for a
        full-precision layer."""
        if self._k[layer_idx] is None:
            raise IndexError(f"layer {layer_idx} of the cache is empty")
        return self._k[layer_idx], self._v[layer_idx], self._lengths[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._lengths[layer_idx]

    @property
    def lengths(self) -> list[int]:
        return list(self._lengths)

    def nbytes(self) -> int:
        """Bytes of the stored tokens: codes plus float32 scales and zeros, K and V."""
        total = 0
        for k, n in zip(self._k, self._lengths):
            if k is not None:
                per_token = sum(x[:, :, :1].numel() * x.element_size() for x in k)
                total += 2 * per_token * n
        return total

    def __len__(self) -> int:
        return self.num_layers

    def attend(self, module, query: torch.Tensor, scaling: float | None, probe=None) -> torch.Tensor:
        """Attention of ``query`` ``[B, H_q, T, D]`` over ``module``'s layer of the store; returns ``[B, T, H_q, D]``.
        ``probe(module, query, keys, None, scaling)``, when given, sees the query and the dequantized keys."""
        layer = module.layer_idx
        if self.full_precision(layer):
            return self._attend_full_precision(module, query, scaling, probe)
        quantizer = self.quantizers[layer]
        k_cache, v_cache, length = self.layer(layer)
        group = self._group(layer, query.shape[-1])
        if quantizer.hadamard:
            query = rotate_by_hadamard(query)  # q H . k H = q . k
        if probe is not None:
            keys = dequantize_cache(k_cache, length, quantizer.bits).to(query.dtype)  # [B, H_kv, L, D]
            probe(module, query, keys, None, scaling)
        start = self.kv_start[layer]
        if query.shape[2] == 1:
            out = kv_attention_decode(query, k_cache, v_cache, self.attention_length(layer), quantizer.bits, group,
                                      sm_scale=scaling, kv_start=start)  # fmt: skip
        else:
            out = kv_attention_prefill(query, k_cache, v_cache, length, quantizer.bits, group, sm_scale=scaling,
                                       kv_start=start)  # fmt: skip
        return out.transpose(1, 2).contiguous()  # [B, T, H_q, D]

    def _attend_full_precision(self, module, query: torch.Tensor, scaling: float | None, probe) -> torch.Tensor:
        """:meth:`attend` for a full-precision layer: SDPA over its keys and values, masked as the kernels mask (the
        ``T`` queries sit at positions ``length - T .. length - 1``; a query with no key left gives zeros). In static
        mode the whole capacity is read and the length comes from device memory."""
        layer = module.layer_idx
        (keys,), (values,), length = self.layer(layer)
        b, hq, t, _ = query.shape
        if self.static:
            limit = self.device_lengths[layer].long()  # 0-d, on the device
        else:
            keys, values, limit = keys[:, :, :length], values[:, :, :length], length
        positions = torch.arange(keys.shape[2], device=query.device)  # [S]
        query_positions = limit - t + torch.arange(t, device=query.device)  # [T]
        allowed = (positions[None, :] <= query_positions[:, None])[None]  # [1, T, S]: causal, below the length
        start = self.kv_start[layer]
        if start is not None:
            allowed = allowed & (positions[None, None, :] >= start.long()[:, None, None])  # [B, T, S]
        mask = allowed[:, None]  # [B or 1, 1, T, S]
        keys, values = keys.to(query.dtype), values.to(query.dtype)
        if probe is not None:
            probe(module, query, keys, None, scaling)
        out = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scaling,
                                             enable_gqa=hq != keys.shape[1])  # [B, H_q, T, D]
        out = torch.where(mask.any(-1, keepdim=True), out, torch.zeros((), dtype=out.dtype, device=out.device))
        return out.transpose(1, 2).contiguous()  # [B, T, H_q, D]
