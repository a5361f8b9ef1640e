"""``StaticLengths``: the length bookkeeping that both per-layer caches share in static mode.

A cache in static mode holds each layer's length twice: on the host (``_lengths``, for checks and byte counts)
and in device memory (``device_lengths`` ``[L]``, which the recorded launches read and advance). A CUDA graph
replay advances only the device copy; :meth:`StaticLengths.advance` brings the host copy along.
"""

from __future__ import annotations

import torch


class StaticLengths:
    """Mixin of :class:`~quota.runtime.kv.layerwise.LayerwiseKVCache` and :class:`~quota.runtime.kv.quantized.QuantizedKVStore`:
    they provide ``num_layers``, ``_lengths``, ``device_lengths`` and :meth:`capacity`."""

    num_layers: int
    _lengths: list[int]
    device_lengths: torch.Tensor | None

    @property
    def static(self) -> bool:
        return self.device_lengths is not None

    def capacity(self, layer_idx: int) -> int:
        """Slots allocated for layer ``layer_idx``."""
        raise NotImplementedError

    def advance(self, steps: int = 1) -> None:
        """Count ``steps`` one-token updates done on the device alone (CUDA graph replays) in the host lengths."""
        self._lengths = [n + steps for n in self._lengths]

    def _start_device_lengths(self, filled: bool, dtype: torch.dtype, device: torch.device) -> None:
        """Copy every layer's length to a new ``device_lengths`` by launches only (no host copy, so that it may
        itself be recorded). ``filled``: whether every layer holds the prompt already."""
        if not filled:
            raise RuntimeError("static mode needs a cache whose every layer holds the prompt (run a prefill first)")
        self.device_lengths = torch.empty(self.num_layers, dtype=dtype, device=device)
        for i, n in enumerate(self._lengths):
            self.device_lengths[i].fill_(n)

    def _check_static_append(self, tokens: int, layer_idx: int) -> None:
        """A static step appends one token, into a slot reserved at prefill."""
        if tokens != 1:
            raise ValueError(f"static mode appends one token per step, got {tokens}")
        if self._lengths[layer_idx] + 1 > self.capacity(layer_idx):
            raise RuntimeError(
                f"layer {layer_idx}: static mode cannot grow the cache past its {self.capacity(layer_idx)} slots; "
                "reserve more at prefill"
            )
