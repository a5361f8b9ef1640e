"""A KV cache whose layers hold different lengths (each layer keeps its own compacted visual tokens).

Duck-typed for the decoder layers of transformers 5.17 (``past_key_values.update(k, v, idx, cache_kwargs)``)
and 5.24 (``cache.update(k, v, idx, kwargs=...)``): :meth:`LayerwiseKVCache.update` accepts and ignores
any extra arguments. Keys are stored after RoPE, in full precision: the KV quantizer of
:mod:`quota.quant.kv` simulates KV4 inside attention (per-token quantization, so quantizing the whole
cache at every step equals quantizing each token once).

Storage per layer: one buffer ``[B, H_kv, capacity, D]`` for K and one for V, grown by doubling; the
views returned by :meth:`update` cover the ``length`` tokens written so far.
"""

from __future__ import annotations

import torch


class LayerwiseKVCache:
    """Per-layer K/V buffers of independent lengths.

    ``reserve``: extra slots allocated beyond a layer's first write (e.g. ``max_new_tokens``), so decode
    steps append without reallocating.
    """

    def __init__(self, num_layers: int, reserve: int = 0) -> None:
        self.num_layers = num_layers
        self.reserve = max(int(reserve), 0)
        self._keys: list[torch.Tensor | None] = [None] * num_layers  # [B, H_kv, cap, D]
        self._values: list[torch.Tensor | None] = [None] * num_layers
        self._lengths = [0] * num_layers

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Append ``key``/``value`` ``[B, H_kv, T, D]`` to layer ``layer_idx``; return all of its K, V
        ``[B, H_kv, length, D]``."""
        t = key.shape[-2]
        length = self._lengths[layer_idx]
        buf_k, buf_v = self._keys[layer_idx], self._values[layer_idx]
        if buf_k is None or length + t > buf_k.shape[-2]:
            cap = max(length + t + self.reserve, 2 * (buf_k.shape[-2] if buf_k is not None else 0))
            new_k = key.new_empty((*key.shape[:2], cap, key.shape[-1]))
            new_v = value.new_empty((*value.shape[:2], cap, value.shape[-1]))
            if length:
                new_k[..., :length, :] = buf_k[..., :length, :]
                new_v[..., :length, :] = buf_v[..., :length, :]
            self._keys[layer_idx], self._values[layer_idx] = buf_k, buf_v = new_k, new_v
        buf_k[..., length : length + t, :] = key
        buf_v[..., length : length + t, :] = value
        self._lengths[layer_idx] = length + t
        return buf_k[..., : length + t, :], buf_v[..., : length + t, :]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens stored in layer ``layer_idx``."""
        return self._lengths[layer_idx]

    @property
    def lengths(self) -> list[int]:
        """Tokens stored per layer."""
        return list(self._lengths)

    def layer(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(K, V)`` of one layer, ``[B, H_kv, length, D]`` each."""
        n = self._lengths[layer_idx]
        if self._keys[layer_idx] is None:
            raise IndexError(f"layer {layer_idx} of the cache is empty")
        return self._keys[layer_idx][..., :n, :], self._values[layer_idx][..., :n, :]

    def nbytes(self) -> int:
        """Bytes of the K and V tokens stored (not of the reserved capacity)."""
        total = 0
        for k, n in zip(self._keys, self._lengths):
            if k is not None:
                total += 2 * k.shape[0] * k.shape[1] * n * k.shape[-1] * k.element_size()
        return total

    def __len__(self) -> int:
        return self.num_layers
