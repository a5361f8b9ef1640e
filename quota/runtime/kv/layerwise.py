"""A KV cache whose layers hold different lengths (each layer keeps its own compacted visual tokens).

Duck-typed for the decoder layers of transformers 5.17 (``past_key_values.update(k, v, idx, cache_kwargs)``)
and 5.24 (``cache.update(k, v, idx, kwargs=...)``): :meth:`LayerwiseKVCache.update` accepts and ignores
any extra arguments. Keys are stored after RoPE, in full precision: the KV quantizer of
:mod:`quota.quantize.attention` simulates KV4 inside attention (per-token quantization, so quantizing the whole
cache at every step equals quantizing each token once).

Storage per layer: one buffer ``[B, H_kv, capacity, D]`` for K and one for V, grown by doubling; the
views returned by :meth:`update` cover the ``length`` tokens written so far.

Static mode (:meth:`LayerwiseKVCache.begin_static`, for decode steps replayed from a CUDA graph): each layer's
length is also held in device memory (``device_lengths``, int64 ``[L]``); a one-token update writes at the
position held there, advances it on the device and returns the whole buffers (fixed shapes): the caller
masks the slots at and past the length (:meth:`static_mask`).
"""

from __future__ import annotations

import torch

from quota.runtime.kv.static_lengths import StaticLengths


class LayerwiseKVCache(StaticLengths):
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
        self.device_lengths: torch.Tensor | None = None  # int64 [L], in static mode
        self._static_valid: list[torch.Tensor] = []  # per layer bool [B, cap], in static mode
        self._slots: list[torch.Tensor] = []  # per layer long [cap], in static mode

    # -- static mode ----------------------------------------------------------------------------------
    def capacity(self, layer_idx: int) -> int:
        """Slots allocated for layer ``layer_idx``."""
        if self._keys[layer_idx] is None:
            raise IndexError(f"layer {layer_idx} of the cache is empty")
        return self._keys[layer_idx].shape[-2]

    def begin_static(self, key_valid: list[torch.Tensor]) -> None:
        """Enter static mode: copy every layer's length to ``device_lengths`` (launches only, no host copy) and
        keep each layer's key validity so far (``key_valid[l]`` bool ``[B, length_l]``, False on padding),
        widened to the capacity, for :meth:`static_mask`."""
        if len(key_valid) != self.num_layers:
            raise ValueError(f"key_valid has {len(key_valid)} layers, the cache {self.num_layers}")
        filled = all(k is not None for k in self._keys)
        device = self._keys[0].device if filled else None
        self._start_device_lengths(filled, torch.long, device)
        self._static_valid, self._slots = [], []
        for i, n in enumerate(self._lengths):
            self._keys[i][..., n:, :].zero_()  # masked slots are still multiplied by 0: no NaN left in them
            self._values[i][..., n:, :].zero_()
            valid = torch.ones(key_valid[i].shape[0], self.capacity(i), dtype=torch.bool, device=device)
            valid[:, : key_valid[i].shape[1]] = key_valid[i]
            self._static_valid.append(valid)  # [B, cap]
            self._slots.append(torch.arange(self.capacity(i), device=device))  # [cap]

    def end_static(self) -> None:
        """Leave static mode (the host-side lengths are kept current by the caller, see ``advance``)."""
        self.device_lengths = None
        self._static_valid, self._slots = [], []

    def static_mask(self, layer_idx: int) -> torch.Tensor:
        """``[B, 1, 1, capacity]`` bool for the next one-token step of layer ``layer_idx`` in static mode: the
        slots up to and including the one the step writes, less the prompt's padding."""
        within = self._slots[layer_idx] <= self.device_lengths[layer_idx]  # [cap]
        return (self._static_valid[layer_idx] & within[None, :])[:, None, None, :]

    def _update_static(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int):
        self._check_static_append(key.shape[-2], layer_idx)
        index = self.device_lengths[layer_idx : layer_idx + 1]
        buf_k, buf_v = self._keys[layer_idx], self._values[layer_idx]
        buf_k.index_copy_(2, index, key)
        buf_v.index_copy_(2, index, value)
        index.add_(1)
        self._lengths[layer_idx] += 1
        return buf_k, buf_v

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Append ``key``/``value`` ``[B, H_kv, T, D]`` to layer ``layer_idx``; return all of its K, V
        ``[B, H_kv, length, D]`` (in static mode: the whole buffers, see the module docstring)."""
        if self.static:
            return self._update_static(key, value, layer_idx)
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
