"""``StaticDecoder``: decode steps with fixed shapes and device-held positions, recorded once as a CUDA graph
and replayed (see :mod:`quota.runtime.graphs`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from quota.models.spec import get_submodule
from quota.quantize.attention import quota_attention_of
from quota.runtime.kv.quantized import QuantizedKVStore

if TYPE_CHECKING:  # annotations only: generate imports this package to decode statically
    from quota.runtime.generate import PrefillState, PrunedRunner


class StaticDecoder:
    """Decode steps of ``runner`` after a prefill that gave ``state``, for up to ``steps`` tokens.

    The prefill must have reserved the slots (``reserve >= steps``): static steps cannot grow the cache.
    ``graph``: capture and replay a CUDA graph (default: when the model is on CUDA). While the decoder is
    open, decode only through it; :meth:`close` (or leaving its ``with`` block) hands the state back to
    :meth:`PrunedRunner.decode_step`. The returned logits ``[B, V]`` live in a static buffer that the next
    step overwrites: copy them to keep them.
    """

    def __init__(self, runner: PrunedRunner, state: PrefillState, steps: int, graph: bool | None = None) -> None:
        cache = state.cache
        short = [l for l in range(len(runner.layers)) if cache.get_seq_length(l) + steps > cache.capacity(l)]
        if short:
            l = short[0]
            raise ValueError(
                f"{steps} static decode steps need {cache.get_seq_length(l) + steps} slots in layer {l}, which has "
                f"{cache.capacity(l)}: prefill with reserve >= {steps}"
            )
        device = state.base_position.device
        self.runner, self.state, self.steps_left = runner, state, steps
        self.graph_wanted = device.type == "cuda" if graph is None else bool(graph)
        if self.graph_wanted and device.type != "cuda":
            raise ValueError("a CUDA graph needs the model on a CUDA device")
        if cache.static:
            raise RuntimeError("the cache is already in static mode: close the StaticDecoder that holds it first")
        state.settle()
        cache.begin_static(state.key_valid)
        self._lengths_buffer = cache.device_lengths  # static mode is this decoder's while the cache holds it
        self.tokens = torch.zeros(state.base_position.shape[0], dtype=torch.long, device=device)  # [B]
        self.step = torch.full((1,), state.steps, dtype=torch.long, device=device)
        self.logits: torch.Tensor | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._eager_steps = 0
        self.closed = False

    # ------------------------------------------------------------------------------------------ the step
    def _body(self) -> torch.Tensor:
        """One decode step from the static buffers; every shape fixed, nothing read back to the host."""
        r, state = self.runner, self.state
        spec, cache = r.spec, state.cache
        with quota_attention_of(spec.text_config_of(r.model)):
            hidden = spec.embeddings_of(r.model)(self.tokens[:, None])  # [B, 1, d]
            pos = (state.base_position + self.step)[None, :, None].expand(state.position_rows, -1, 1)  # [R, B, 1]
            rope = r._rope(hidden, pos)
            for l in range(len(r.layers)):
                attn = get_submodule(r.layers[l], spec.layer.attention)
                if isinstance(cache, QuantizedKVStore):
                    attn.quota_kv_store = cache
                try:
                    hidden = r._run_layer(l, hidden, cache.static_mask(l), pos, cache, rope)
                finally:
                    if isinstance(cache, QuantizedKVStore):
                        del attn.quota_kv_store
            logits = r._logits(hidden)  # [B, V]
        self.step.add_(1)
        return logits

    def _count_step(self) -> None:
        self.state.steps += 1
        self.state.valid_owed += 1
        self.steps_left -= 1

    @torch.no_grad()
    def __call__(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Feed one token per sample (long ``[B]``); the next logits ``[B, V]`` (a static buffer)."""
        if self.closed:
            raise RuntimeError("this StaticDecoder is closed")
        if self.steps_left <= 0:
            raise RuntimeError("the StaticDecoder's steps are used up (the cache has no reserved slot left)")
        self.tokens.copy_(token_ids)
        if self._graph is not None:
            self._graph.replay()
            self.state.cache.advance(1)
        elif self.graph_wanted and self._eager_steps > 0:
            self._capture()
            self._graph.replay()
            self.state.cache.advance(1)
        else:
            self.logits = self._body()
            self._eager_steps += 1
        self._count_step()
        return self.logits

    def _capture(self) -> None:
        """Record one step into a CUDA graph without running it; the host-side lengths the recording advanced
        are put back (the replay that follows advances them)."""
        cache = self.state.cache
        lengths = cache.lengths
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.logits = self._body()
        finally:  # recorded or not, no token was written
            cache._lengths = lengths
        self._graph = graph

    def close(self) -> None:
        """Leave static mode; :meth:`PrunedRunner.decode_step` may continue from here."""
        if not self.closed:
            if self.state.cache.device_lengths is self._lengths_buffer:  # not a later decoder's static mode
                self.state.cache.end_static()
            self._graph = None
            self.closed = True

    def __enter__(self) -> "StaticDecoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
