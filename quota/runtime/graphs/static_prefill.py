"""``StaticPrefill``: prefills of one input shape recorded as CUDA graphs and replayed after host-side checks of
each request (see :mod:`quota.runtime.graphs`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from quota.runtime.vision import image_span, image_token_id

if TYPE_CHECKING:  # annotations only: generate imports this package to decode statically
    from quota.runtime.generate import PrunedRunner


def _snapshot(obj) -> dict:
    """An object's attributes, lists copied (the objects they hold are shared)."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in vars(obj).items()}


def _restore(obj, snapshot: dict) -> None:
    for k, v in snapshot.items():
        setattr(obj, k, list(v) if isinstance(v, list) else v)


def _signature(*tensors_and_values) -> tuple:
    return tuple((tuple(x.shape), x.dtype, x.device) if isinstance(x, torch.Tensor) else x for x in tensors_and_values)


class StaticPrefill:
    """Prefills of ``runner`` for one input shape, recorded as CUDA graphs and replayed (``reserve``: cache slots
    for decode steps, as in :meth:`PrunedRunner.prefill`).

    The first call of a shape runs eagerly (checked, compiling and autotuning the kernels) and returns its own
    result, then records the graphs; later calls of that shape check the request on the host (left padding,
    the image span, the M-RoPE grid), copy it into the recorded inputs and replay. A new shape records anew.
    The returned logits and :class:`PrefillState` are the recorded ones: the next call overwrites them (the
    state's host-side bookkeeping is reset at each replay). ``graph=False`` (or no CUDA) runs every call
    eagerly. :attr:`vision_recorded` tells whether the image encoder is in a graph too.
    """

    def __init__(self, runner: PrunedRunner, reserve: int = 0, graph: bool | None = None) -> None:
        self.runner, self.reserve = runner, int(reserve)
        self.graph_wanted = torch.cuda.is_available() if graph is None else bool(graph)
        self._signature: tuple | None = None
        self._lm_graph: torch.cuda.CUDAGraph | None = None
        self._vision_graph: torch.cuda.CUDAGraph | None = None
        self.vision_recorded = False

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 pixel_values: torch.Tensor | None = None, **vision_inputs):  # fmt: skip
        """As :meth:`PrunedRunner.prefill`: ``(logits [B, V], PrefillState)``."""
        r = self.runner
        mask = r.check_inputs(input_ids, attention_mask, pixel_values)
        grid_hw = r.mrope_grid(vision_inputs)
        b = input_ids.shape[0]
        if not self.graph_wanted or input_ids.device.type != "cuda":
            feats = r.encode_images(pixel_values, b, vision_inputs)
            return r.prefill_language(input_ids, mask, feats, pixel_values, self.reserve, grid_hw, checks=True)
        extra = [x for key in sorted(vision_inputs) for x in (key, vision_inputs[key])]
        sig = _signature(input_ids, mask, pixel_values, grid_hw, *extra)
        if sig != self._signature:
            feats = r.encode_images(pixel_values, b, vision_inputs)
            out = r.prefill_language(input_ids, mask, feats, pixel_values, self.reserve, grid_hw, checks=True)
            kept = r.kept_indices
            self._record(input_ids, mask, pixel_values, vision_inputs, grid_hw, feats)
            self._signature, r.kept_indices = sig, kept
            return out
        if self._state.cache.static:
            raise RuntimeError("a StaticDecoder still holds the last request's cache: close it before the next prefill")
        image_span(input_ids, image_token_id(r.model, r.spec), self._n_visual)  # checked on the host
        self._ids.copy_(input_ids)
        self._mask.copy_(mask)
        self._pixels.copy_(pixel_values)
        for k, v in vision_inputs.items():
            if isinstance(v, torch.Tensor):
                self._vision_inputs[k].copy_(v)
        if self._vision_graph is not None:
            self._vision_graph.replay()
        else:
            self._feats.copy_(r.encode_images(self._pixels, b, self._vision_inputs))
        self._lm_graph.replay()
        _restore(self._state, self._state_snapshot)
        _restore(self._state.cache, self._cache_snapshot)
        r.kept_indices = list(self._state.kept)
        return self._logits, self._state

    def _record(self, input_ids, mask, pixel_values, vision_inputs, grid_hw, feats) -> None:
        r, b = self.runner, input_ids.shape[0]
        self._signature = self._lm_graph = self._vision_graph = None  # nothing half-recorded is ever replayed
        self._ids, self._mask, self._pixels = input_ids.clone(), mask.clone(), pixel_values.clone()
        self._vision_inputs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in vision_inputs.items()}
        self._n_visual = feats.shape[1]
        self._vision_graph, self.vision_recorded = None, False
        if r.spec.static_vision:
            r.encode_images(self._pixels, b, self._vision_inputs)  # warm-up on the recorded buffers
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._feats = r.encode_images(self._pixels, b, self._vision_inputs)
            self._vision_graph, self.vision_recorded = graph, True
            graph.replay()  # the features the language model's warm-up below reads
        else:
            self._feats = feats.clone()
        args = (self._ids, self._mask, self._feats, self._pixels, self.reserve, grid_hw)
        r.prefill_language(*args, checks=False)  # warm-up of the unchecked path (its own shapes)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._logits, self._state = r.prefill_language(*args, checks=False)
        self._lm_graph = graph
        self._state_snapshot = _snapshot(self._state)
        self._cache_snapshot = _snapshot(self._state.cache)
