"""CUDA graphs for the runtime: ``StaticDecoder`` (decode steps) and ``StaticPrefill`` (prefills of one input
shape), each recorded once and replayed.

An eager decode step of a 7B model issues a few thousand kernel launches; at batch 1 the host cannot issue
them as fast as the GPU runs them (a W4A4 step measured the GPU busy 5% of the time). Replaying a CUDA graph
issues the whole step at once. A graph replays fixed launches, so every launch of the step must read what
changes from one step to the next from device memory:

- the token ids: a static ``[B]`` buffer, copied into before each replay;
- the position: the prefill's ``base_position`` plus a device step counter advanced inside the step;
- each layer's cache length: the cache's static mode (``device_lengths``, see
  :class:`~quota.runtime.cache.LayerwiseKVCache` and :class:`~quota.runtime.kv_store.QuantizedKVStore`), with
  which the KV write lands at the stored length and attention reads it (the full-precision cache masks the
  slots past it; the quantized cache's kernels read it);
- no step may synchronize with the host (tested on the CPU by :func:`forbid_host_sync`).

The first step runs eagerly (it compiles and autotunes the kernels for these shapes), the second is captured
and replayed, and so is every later one. Without CUDA (or with ``graph=False``) every step runs the same
static code eagerly, which is how the CPU tests check it against :meth:`PrunedRunner.decode_step`.

A prefill is static once its input shapes are fixed: :class:`StaticPrefill` records
:meth:`PrunedRunner.prefill_language` (and the image encoder, where the architecture allows it,
``ArchSpec.static_vision``) with every host-side check left out, and checks each request on the host before
it replays. Pruning keeps exactly ``k_l`` tokens per layer, so every shape is known in advance.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from quota.models.spec import get_submodule
from quota.runtime.generate import PrefillState, PrunedRunner, quota_attention_of
from quota.runtime.kv_store import QuantizedKVStore


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
        from quota.runtime.vision import image_span, image_token_id

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


class HostSyncError(RuntimeError):
    """An operation that reads a tensor back to the host (or sizes its output by data) ran where none may."""


_SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "_unique", "unique_consecutive",
            "unique_dim", "item", "is_nonzero", "equal", "repeat_interleave", "nonzero_static"}


def _crosses_host(func, args, kwargs) -> bool:
    """A copy between the host and a device (``.to(device)``, ``copy_``): a recorded graph may not hold one."""
    name = func._schema.name.split("::")[-1]
    if name == "_to_copy" and args and isinstance(args[0], torch.Tensor):
        target = kwargs.get("device")
        return target is not None and (torch.device(target).type == "cpu") != (args[0].device.type == "cpu")
    if name == "copy_" and len(args) >= 2 and all(isinstance(a, torch.Tensor) for a in args[:2]):
        return (args[0].device.type == "cpu") != (args[1].device.type == "cpu")
    return False


def _masks_by_bool(func, args) -> bool:
    """Indexing by a boolean mask sizes its output by the data (it runs ``nonzero`` inside)."""
    if func._schema.name.split("::")[-1] not in ("index", "index_put", "index_put_"):
        return False
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


class _ForbidSync(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name.split("::")[-1]
        if name in _SYNCING or _masks_by_bool(func, args) or _crosses_host(func, args, kwargs):
            raise HostSyncError(f"{func} synchronizes with the host (or copies across it)")
        return func(*args, **kwargs)


@contextmanager
def forbid_host_sync():
    """Raise :class:`HostSyncError` on any operator that would read device data back to the host (``.item()``,
    ``bool(t)``, ``nonzero``, ``torch.equal``, indexing by a boolean mask...) or copy between the host and a
    device: what a CUDA graph capture forbids, checkable on the CPU. ``Tensor.tolist()`` does not pass through
    the operator dispatcher and is not caught; on the CPU a host-to-device copy is no copy and is not seen
    either (on CUDA it is)."""
    with _ForbidSync():
        yield
