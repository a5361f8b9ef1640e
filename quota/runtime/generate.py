"""``PrunedRunner``: prefill with visual-token pruning per a schedule, then greedy decoding over each
layer's own compacted KV cache.

The runner drives the model's own modules through its :class:`~quota.models.spec.ArchSpec`: the token
embeddings, ``get_image_features`` (vision tower + projector), the language model's ``rotary_emb``, each
decoder layer called as ``layer(hidden, attention_mask=<bool 4D mask>, position_ids=..., cache=<cache>,
use_cache=True, position_embeddings=(cos, sin))`` (``past_key_values=`` where the installed transformers
names it so), the final norm and ``lm_head``. Nothing is patched: while the runner runs, the language
model's config selects the ``quota`` attention function (KV quantizer if installed, then SDPA; the
previous setting is restored afterwards), and the attention module of a layer whose successor prunes
gets a ``quota_probe`` attribute for that one forward.

Conventions (see also :mod:`quota.schedule` and :mod:`quota.runtime.scoring`):

- inputs are left-padded (the last column is a real token in every row), one image per sample whose
  ``N`` placeholder tokens are contiguous; every sample of a batch has the same ``N`` and keeps the same ``k_l``
  (batch images of one size together: :func:`quota.data.prompts.batches` does);
- with ``reference_tokens`` (a recipe's ``n_visual_tokens``), a batch whose images have another ``N`` (dynamic
  resolution) runs the schedule resolved to its ``N`` (:func:`quota.schedule.resolve_schedule`);
  :meth:`PrunedRunner.check_inputs` refuses what it can detect otherwise (right padding, a mask of the wrong
  shape, empty ``input_ids``; see :func:`~quota.runtime.masks.check_prompt`) with a ``ValueError``;
- layer ``l`` sees ``k_l`` visual tokens; pruning before layer ``l`` scores the alive visual tokens with
  the signals of layer ``l - 1`` (embedding-level signals before layer 0) weighted as the scoring's stage of
  that point says (``pre_llm`` before layer 0, ``in_llm`` after), keeps exactly ``k_l`` in original
  order by the scoring's selection rule (top-k with ties to the lower index by default), and never drops text;
  with merging, ``min(merge, k_l)`` of the ``k_l`` are contextual tokens that take their target token's place
  and original index (:func:`quota.runtime.prune.prune`);
- each kept token keeps its true position (RoPE or M-RoPE, :mod:`quota.runtime.positions`); decode
  tokens get position ``max(prompt positions) + 1 + step``;
- every layer has its own key-validity mask ``[B, S_l]`` (False on padding) and its own cache length;
  decode appends one token to every layer;
- a sample gives the same kept indices and greedy tokens whatever else is in its batch (logits equal
  within floating-point tolerance).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from quota.models.registry import spec_for
from quota.models.spec import get_submodule
from quota.quantize.attention import KVQuantizer, quota_attention_of
from quota.runtime.graphs.static_decode import StaticDecoder
from quota.runtime.kv.layerwise import LayerwiseKVCache
from quota.runtime.kv.quantized import KV_BITS, QuantizedKVStore
from quota.runtime.masks import check_prompt, decode_mask, prefill_mask
from quota.recipe import PruningPlan, ScoringSpec
from quota.schedule import check_schedule, resolve_schedule
from quota.runtime.positions import (
    POSITION_KINDS,
    InputError,
    NotSupportedError,
    decode_positions,
    layer_position_ids,
    mrope_positions,
    next_position,
    rope_positions,
    rotary_input,
)
from quota.runtime.prune import prune
from quota.runtime.scoring import (
    ATTENTION_SIGNALS,
    AttentionRecorder,
    activation_magnitude,
    activation_quantizer_of,
    available_signals,
    combine,
    last_query,
    outlier_intensity,
    quantization_risk,
    random_signal,
    text_queries,
)
from quota.runtime.vision import (
    image_features, image_span, image_token_id, vision_attention, vision_attention_unsupported,
)


@dataclass
class PrefillState:
    """What decoding needs after a prefill.

    - ``cache``: per-layer K/V (layer ``l`` holds ``S_l`` prompt tokens, then the decode tokens);
    - ``key_valid``: per layer, bool ``[B, S_l + steps]``;
    - ``base_position``: long ``[B]`` position of the first decode token;
    - ``kept``: per layer, long ``[B, k_l]`` original visual indices (``0 .. N-1``) alive in that layer;
    - ``n_visual``: ``N``; ``steps``: decode steps taken;
    - ``valid_owed``: decode steps taken outside :meth:`PrunedRunner.decode_step` (by a
      :class:`~quota.runtime.graphs.StaticDecoder`) whose columns ``key_valid`` does not hold yet.
    """

    cache: LayerwiseKVCache
    key_valid: list[torch.Tensor]
    base_position: torch.Tensor
    kept: list[torch.Tensor]
    n_visual: int
    position_rows: int
    steps: int = 0
    valid_owed: int = 0

    def settle(self) -> None:
        """Append the ``valid_owed`` decode columns (all valid) to every layer's ``key_valid``."""
        if self.valid_owed:
            self.key_valid = [torch.cat([v, v.new_ones(v.shape[0], self.valid_owed)], dim=1) for v in self.key_valid]
            self.valid_owed = 0


class PrunedRunner:
    """Run ``model`` with visual-token pruning per ``schedule`` (``L`` non-increasing keep counts).

    ``score_weights``: signal name -> weight (see :data:`quota.runtime.scoring.SIGNALS`); signals not
    available at a pruning point are left out of that point's sum (e.g. attention before layer 0).
    ``normalize``: per-sample normalization of each signal (``"minmax"`` or ``"rank"``); ``seed``: for the
    ``random`` signal; ``impl``: score-and-gather implementation (``"reference"``, ``"triton"``, ``"auto"``).
    ``selection``: the rule that picks the kept tokens (:data:`quota.signals.SELECTIONS`); ``merge``: contextual
    tokens per pruning point, folded by ``merge_rule`` (:data:`quota.signals.MERGE_RULES`); ``stage_weights``:
    per pruning stage (``"pre_llm"``: before layer 0, ``"in_llm"``: before any later layer), signal -> weight
    overriding ``score_weights`` at that stage's points (see :class:`~quota.recipe.ScoringSpec`;
    :meth:`from_scoring` takes a whole one).
    ``reference_tokens``: the ``N`` the schedule's counts refer to; images of another ``N`` run it resolved to
    theirs (:meth:`schedule_for`); ``None``: the schedule applies as written (its counts must fit every image).
    After :meth:`prefill`, :attr:`kept_indices` holds the kept visual indices of every layer.
    """

    def __init__(
        self,
        model: nn.Module,
        schedule: Sequence[int],
        score_weights: Mapping[str, float] | None = None,
        *,
        normalize: str = "minmax",
        seed: int = 0,
        impl: str = "auto",
        reference_tokens: int | None = None,
        selection: str = "topk",
        merge: int = 0,
        stage_weights: Mapping[str, Mapping[str, float]] | None = None,
        merge_rule: str = "context",
    ) -> None:
        self.model = model
        self.spec = spec_for(model)
        if self.spec.positions not in POSITION_KINDS:
            raise NotSupportedError(f"positions {self.spec.positions!r} are not supported; known: {POSITION_KINDS}")
        self.layers = self.spec.layers_of(model)
        self.schedule = check_schedule(schedule, len(self.layers))
        self.reference_tokens = reference_tokens
        if reference_tokens is not None:
            resolve_schedule(self.schedule, reference_tokens, reference_tokens)  # checks k_0 <= reference
        weights = dict(score_weights) if score_weights is not None else {"attn_last": 1.0}
        self.scoring = ScoringSpec(weights, normalize, seed, selection, merge, stage_weights, merge_rule)
        self.impl = impl
        self.kept_indices: list[torch.Tensor] | None = None
        self._vision_attn: torch.Tensor | None = None  # the vision tower's attention of the current prefill
        if "vision_attn" in self.scoring.signals_used and (why := vision_attention_unsupported(model, self.spec)):
            raise NotSupportedError(f"the vision_attn signal cannot run here: {why}")
        for l in range(1, len(self.schedule)):
            if self.schedule[l] < self.schedule[l - 1] and not self._signals_at(l):
                raise ValueError(
                    f"the schedule prunes before layer {l} but none of the weighted signals "
                    f"{sorted(self.scoring.weights_at(l))} exists there (available: {available_signals(l)})"
                )
        lm = self.spec.language_model_of(model)
        self.rotary = getattr(lm, "rotary_emb", None)
        if self.rotary is None:
            raise NotSupportedError(f"{type(lm).__name__} has no rotary_emb")
        params = inspect.signature(self.layers[0].forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def from_scoring(cls, model: nn.Module, schedule: Sequence[int], scoring: ScoringSpec, impl: str = "auto",
                     reference_tokens: int | None = None) -> "PrunedRunner":
        """A runner of ``schedule`` scored as ``scoring`` says (every field: weights, per-stage weights,
        normalization, seed, selection, merging)."""
        s = scoring
        return cls(model, schedule, s.weights, normalize=s.normalize, seed=s.seed, impl=impl,
                   reference_tokens=reference_tokens, selection=s.selection, merge=s.merge,
                   stage_weights=s.stage_weights, merge_rule=s.merge_rule)

    @classmethod
    def from_plan(cls, model: nn.Module, plan: PruningPlan, impl: str = "auto",
                  reference_tokens: int | None = None) -> "PrunedRunner":
        """A runner of ``plan``'s schedule and scoring (:meth:`from_scoring`)."""
        return cls.from_scoring(model, plan.schedule, plan.scoring, impl, reference_tokens)

    def schedule_for(self, n_visual: int) -> tuple[int, ...]:
        """The keep counts for images of ``n_visual`` tokens: the schedule resolved from ``reference_tokens``
        (as written when there is none, or when ``n_visual`` is the reference)."""
        if self.reference_tokens is None:
            return self.schedule
        return resolve_schedule(self.schedule, self.reference_tokens, n_visual)

    # ------------------------------------------------------------------------------------------ helpers
    def kv_quantizers(self) -> list[KVQuantizer | None]:
        return [getattr(get_submodule(layer, self.spec.layer.attention), "quota_kv", None) for layer in self.layers]

    def uses_kv_kernels(self, device: torch.device) -> bool:
        """Whether the KV cache holds codes read by the attention kernels: every layer's attention has a KV
        quantizer, at least one of 4 or 8 bits (the others may keep 16: a mixed recipe's full-precision layers, read
        by SDPA inside the same store), and ``impl`` is ``"triton"`` (or ``"auto"`` on CUDA)."""
        quantizers = self.kv_quantizers()
        if not all(q is not None and q.bits in KV_BITS for q in quantizers) or not any(
                q.bits in (4, 8) for q in quantizers):
            return False
        return self.impl == "triton" or (self.impl == "auto" and device.type == "cuda")

    def _new_cache(self, reserve: int, device: torch.device):
        if self.uses_kv_kernels(device):
            return QuantizedKVStore(len(self.layers), self.kv_quantizers(), reserve)
        return LayerwiseKVCache(len(self.layers), reserve)

    def _signals_at(self, layer: int) -> list[str]:
        """The weighted signals of the pruning point before ``layer`` (its stage's weights) that exist there."""
        return [s for s in self.scoring.weights_at(layer) if s in available_signals(layer)]

    def _run_layer(self, l: int, hidden, mask, positions, cache, rope) -> torch.Tensor:
        kwargs = {self._cache_arg: cache}
        out = self.layers[l](
            hidden, attention_mask=mask, position_ids=layer_position_ids(self.spec.positions, positions),
            use_cache=True, position_embeddings=rope, **kwargs,
        )
        return out[0] if isinstance(out, tuple) else out

    def _rope(self, hidden, positions):
        return self.rotary(hidden, rotary_input(self.spec.positions, positions))

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.spec.final_norm_of(self.model)(hidden[:, -1:])
        return self.spec.lm_head_of(self.model)(h)[:, -1]  # [B, V]

    def mrope_grid(self, vision_inputs: Mapping) -> tuple[int, int] | None:
        """The merged ``(height, width)`` patch grid of the images (read back to the host) for M-RoPE, ``None``
        for plain RoPE."""
        if self.spec.positions == "rope":
            return None
        grid = vision_inputs.get("image_grid_thw")
        if grid is None:
            raise NotSupportedError("M-RoPE needs image_grid_thw")
        grid = torch.as_tensor(grid)
        if not bool((grid == grid[0]).all()) or int(grid[0, 0]) != 1:
            raise NotSupportedError("M-RoPE: one still image per sample, all of one grid size")
        merge = int(getattr(self.model.config.vision_config, "spatial_merge_size", 1))
        return int(grid[0, 1]) // merge, int(grid[0, 2]) // merge

    def _prompt_positions(self, attention_mask, span_start, n, grid_hw) -> torch.Tensor:
        if self.spec.positions == "rope":
            return rope_positions(attention_mask)
        return mrope_positions(attention_mask, span_start, n, grid_hw)

    def _recorder(self, schedule, l_next: int, seq_len: int, span_start, n, batch, device,
                  host_reads: bool = True) -> AttentionRecorder | None:  # fmt: skip
        """A recorder for the layer before ``l_next`` when ``l_next`` prunes (per ``schedule``) and attention is
        weighted; ``host_reads``: whether it may read device data back to the host (see :func:`text_queries`)."""
        wanted = [s for s in self._signals_at(l_next) if s in ATTENTION_SIGNALS]
        if not wanted or l_next >= len(schedule) or schedule[l_next] >= n:
            return None
        queries = {}
        if "attn_last" in wanted:
            queries["attn_last"] = last_query(batch, seq_len, device)
        if "attn_text" in wanted:
            queries["attn_text"] = text_queries(seq_len, span_start, n, static=not host_reads)
        return AttentionRecorder(queries, span_start, n)

    def _scores(self, l, hidden, span_start, n, visual_index, recorder, pixel_values, n_visual) -> torch.Tensor:
        """Combined scores ``[B, n]`` of the alive visual tokens before layer ``l``."""
        names = self._signals_at(l)
        if not names:
            raise ValueError(
                f"pruning before layer {l} needs a weighted signal among {available_signals(l)}; "
                f"the weights there are {self.scoring.weights_at(l)}"
            )
        cols = span_start[:, None] + torch.arange(n, device=hidden.device)[None, :]  # [B, n]
        h_vis = hidden.gather(1, cols[..., None].expand(-1, -1, hidden.shape[-1]))  # [B, n, d]
        signals: dict[str, torch.Tensor] = {}
        if "magnitude" in names:
            signals["magnitude"] = activation_magnitude(h_vis)
        if "risk" in names or "outlier" in names:
            layer = self.layers[l]
            x = get_submodule(layer, self.spec.layer.input_norm)(h_vis)  # [B, n, d]
            if "risk" in names:
                q_proj = get_submodule(layer, f"{self.spec.layer.attention}.{self.spec.layer.q_proj}")
                signals["risk"] = quantization_risk(x, *activation_quantizer_of(q_proj))
            if "outlier" in names:
                signals["outlier"] = outlier_intensity(x)
        for name in ATTENTION_SIGNALS:
            if name in names:
                if recorder is None or name not in recorder.scores:
                    raise RuntimeError(
                        f"{name} was not recorded in layer {l - 1}: does the model call its attention module?"
                    )
                signals[name] = recorder.scores[name]
        if "vision_attn" in names:
            if self._vision_attn is None:  # once per prefill: [B, N] over the original visual indices
                self._vision_attn = vision_attention(self.model, self.spec, pixel_values)
            signals["vision_attn"] = self._vision_attn.gather(1, visual_index)
        if "random" in names:
            signals["random"] = random_signal(self.scoring.seed, l, visual_index, n_visual).expand_as(visual_index)
        weights = self.scoring.weights_at(l)
        return combine(signals, {s: weights[s] for s in names}, self.scoring.normalize)

    # ------------------------------------------------------------------------------------------ prefill
    @torch.no_grad()
    def prefill(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        reserve: int = 0,
        **vision_inputs,
    ) -> tuple[torch.Tensor, PrefillState]:
        """Run the prompt with pruning. ``input_ids``/``attention_mask``: ``[B, S]`` left-padded;
        ``pixel_values``: the model's image input (one image per sample); ``vision_inputs``: extra inputs
        of ``get_image_features`` (e.g. ``image_grid_thw``); ``reserve``: cache slots for decode steps.
        Returns the logits of the last position ``[B, V]`` and the :class:`PrefillState`."""
        attention_mask = self.check_inputs(input_ids, attention_mask, pixel_values)
        grid_hw = self.mrope_grid(vision_inputs)
        feats = self.encode_images(pixel_values, input_ids.shape[0], vision_inputs)
        return self.prefill_language(input_ids, attention_mask, feats, pixel_values, reserve, grid_hw, checks=True)

    def pad_token_id(self) -> int | None:
        """The model's pad token id (its config's, else its text config's), ``None`` when it has none."""
        for config in (self.model.config, self.spec.text_config_of(self.model)):
            pad = getattr(config, "pad_token_id", None)
            if isinstance(pad, int) and not isinstance(pad, bool):
                return pad
        return None

    def check_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pixel_values,
                     pad_token_id: int | None = None) -> torch.Tensor:  # fmt: skip
        """The prefill's checks that read the inputs back to the host; returns the attention mask ``[B, S]``
        (all ones when none is given). ``input_ids``/``attention_mask`` are checked by
        :func:`~quota.runtime.masks.check_prompt` (``pad_token_id``: default :meth:`pad_token_id`), so a bad
        shape, an empty batch or right padding is an :class:`~quota.runtime.positions.InputError` (a
        ``ValueError``); a 4-D ``pixel_values`` must hold ``B`` images."""
        pad = pad_token_id if pad_token_id is not None else self.pad_token_id()
        attention_mask = check_prompt(input_ids, attention_mask, pad)
        if pixel_values is None:
            raise NotSupportedError("the pruning runtime needs pixel_values (one image per sample)")
        if torch.is_tensor(pixel_values) and pixel_values.dim() == 4 and pixel_values.shape[0] != input_ids.shape[0]:
            raise InputError(
                f"pixel_values must hold one image per prompt, [B, C, H, W] with B = {input_ids.shape[0]}, "
                f"got shape {tuple(pixel_values.shape)}"
            )
        return attention_mask

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor, batch: int, vision_inputs: Mapping) -> torch.Tensor:
        """``[B, N, d]`` projected image features (vision tower + projector)."""
        return image_features(self.model, pixel_values, batch, **vision_inputs)

    @torch.no_grad()
    def prefill_language(self, input_ids, attention_mask, feats, pixel_values, reserve: int,
                         grid_hw: tuple[int, int] | None, checks: bool = True) -> tuple[torch.Tensor, PrefillState]:
        """The language model's part of :meth:`prefill`, from the image features ``feats`` ``[B, N, d]``, after
        :meth:`check_inputs`; ``grid_hw``: :meth:`mrope_grid`. Without ``checks`` nothing reads device data back
        to the host (what a CUDA graph records, :class:`~quota.runtime.graphs.StaticPrefill`; it checks each
        request first); ``pixel_values`` are only read for the ``vision_attn`` signal."""
        model, spec = self.model, self.spec
        b, s = input_ids.shape
        self._vision_attn = None
        with quota_attention_of(spec.text_config_of(model)):
            embeds = spec.embeddings_of(model)(input_ids)  # [B, S, d]
            n_visual = feats.shape[1]
            schedule = check_schedule(self.schedule_for(n_visual), len(self.layers), n_visual)
            token = image_token_id(model, spec)
            span = image_span(input_ids, token, n_visual, check=checks).to(input_ids.device)  # [B]
            hidden = embeds.masked_scatter((input_ids == token)[..., None], feats.to(embeds.dtype))
            positions = self._prompt_positions(attention_mask, span, n_visual, grid_hw)  # [R, B, S]
            base = next_position(positions)
            valid = attention_mask.bool()  # [B, S]
            orig = torch.arange(s, device=input_ids.device).expand(b, s)  # [B, S] original index of each token
            cache = self._new_cache(reserve, hidden.device)
            key_valid, kept = [], []
            n, rope, recorder = n_visual, None, None
            start, start_of = None, None
            for l, k in enumerate(schedule):
                cols = span[:, None] + torch.arange(n, device=span.device)[None, :]
                visual_index = orig.gather(1, cols) - span[:, None]  # [B, n]
                if k < n:
                    scores = self._scores(l, hidden, span, n, visual_index, recorder, pixel_values, n_visual)
                    out = prune(hidden, positions, valid, scores, span, k, self.scoring.selection, self.scoring.merge,
                                self.impl, check_values=checks, merge_rule=self.scoring.merge_rule)
                    hidden, positions, valid = out.hidden, out.positions, out.valid
                    orig = orig.gather(1, out.src)
                    visual_index = visual_index.gather(1, out.kept)
                    n, rope = k, None
                kept.append(visual_index)
                if rope is None:
                    rope = self._rope(hidden, positions)
                recorder = self._recorder(schedule, l + 1, hidden.shape[1], span, n, b, hidden.device,
                                          host_reads=checks)
                attn = get_submodule(self.layers[l], spec.layer.attention)
                if recorder is not None:
                    attn.quota_probe = recorder
                kernels = isinstance(cache, QuantizedKVStore)  # its kernels mask by kv_start, causally
                if kernels:
                    if start_of is not valid:  # left padding of this layer, recounted after each pruning
                        start, start_of = (~valid).sum(1).to(torch.int32), valid
                    cache.kv_start[l] = start
                    attn.quota_kv_store = cache
                try:
                    mask = None if kernels else prefill_mask(valid)
                    hidden = self._run_layer(l, hidden, mask, positions, cache, rope)
                finally:
                    if recorder is not None:
                        del attn.quota_probe
                    if isinstance(cache, QuantizedKVStore):
                        del attn.quota_kv_store
                key_valid.append(valid)
            logits = self._logits(hidden)
        self.kept_indices, self._vision_attn = kept, None
        state = PrefillState(cache, key_valid, base, kept, n_visual, positions.shape[0])
        return logits, state

    # ------------------------------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode_step(self, token_ids: torch.Tensor, state: PrefillState) -> torch.Tensor:
        """Feed one token per sample (long ``[B]``); returns the next logits ``[B, V]``. Each layer attends
        over its own cache (its kept prompt tokens and the decode tokens so far)."""
        model, spec = self.model, self.spec
        if getattr(state.cache, "static", False):
            raise RuntimeError("the cache is in static mode: decode through its StaticDecoder, or close it first")
        state.settle()
        with quota_attention_of(spec.text_config_of(model)):
            hidden = spec.embeddings_of(model)(token_ids[:, None])  # [B, 1, d]
            positions = decode_positions(state.base_position, state.steps, state.position_rows)  # [R, B, 1]
            rope = self._rope(hidden, positions)
            ones = torch.ones(token_ids.shape[0], 1, dtype=torch.bool, device=token_ids.device)
            for l in range(len(self.layers)):
                state.key_valid[l] = torch.cat([state.key_valid[l], ones], dim=1)
                attn = get_submodule(self.layers[l], spec.layer.attention)
                if isinstance(state.cache, QuantizedKVStore):
                    attn.quota_kv_store = state.cache
                try:
                    hidden = self._run_layer(l, hidden, decode_mask(state.key_valid[l]), positions, state.cache, rope)
                finally:
                    if isinstance(state.cache, QuantizedKVStore):
                        del attn.quota_kv_store
            logits = self._logits(hidden)
        state.steps += 1
        return logits

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 16,
        eos_token_id: int | Iterable[int] | None = None,
        pad_token_id: int | None = None,
        static: bool = False,
        **vision_inputs,
    ) -> torch.Tensor:
        """Greedy decoding: the new token ids ``[B, T]`` (``T <= max_new_tokens``; stops when every sample has
        emitted an EOS; after its EOS a sample gets ``pad_token_id``, default the first EOS id). ``static``:
        decode through a :class:`~quota.runtime.graphs.StaticDecoder`, which replays a CUDA graph on a GPU (the
        same tokens, many times faster for long answers; off by default: the full-precision cache then attends
        over its whole capacity under a mask, which can round differently from the eager path).

        Inputs are checked first (:meth:`check_inputs`, with ``pad_token_id`` as the pad id when given):
        ``max_new_tokens`` must be an integer >= 0, and 0 returns ``[B, 0]`` without running the model."""
        max_new_tokens = check_max_new_tokens(max_new_tokens)
        if max_new_tokens == 0:
            self.check_inputs(input_ids, attention_mask, pixel_values, pad_token_id)
            return input_ids.new_zeros((input_ids.shape[0], 0))
        if attention_mask is None:  # the model's generation pad id may differ from its config's
            attention_mask = self.check_inputs(input_ids, None, pixel_values, pad_token_id)
        logits, state = self.prefill(input_ids, attention_mask, pixel_values, reserve=max_new_tokens, **vision_inputs)
        if static and max_new_tokens > 1:
            decoder = StaticDecoder(self, state, max_new_tokens - 1)
            step = decoder
        else:
            decoder, step = None, lambda t: self.decode_step(t, state)  # noqa: E731
        try:
            return self._greedy(logits, step, input_ids, max_new_tokens, eos_token_id, pad_token_id)
        finally:
            if decoder is not None:
                decoder.close()

    @staticmethod
    def _greedy(logits, step, input_ids, max_new_tokens, eos_token_id, pad_token_id) -> torch.Tensor:
        """:meth:`generate`'s loop from the prompt's logits ``[B, V]``; ``step(token_ids [B]) -> logits [B, V]``."""
        if eos_token_id is None:
            eos = []
        else:
            eos = [int(eos_token_id)] if isinstance(eos_token_id, int) else [int(e) for e in eos_token_id]
        pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
        eos_t = torch.tensor(eos, dtype=torch.long, device=input_ids.device)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        tokens = []
        for t in range(max_new_tokens):
            nxt = torch.where(done, torch.full_like(done, pad, dtype=torch.long), logits.argmax(-1))
            tokens.append(nxt)
            if eos:
                done = done | torch.isin(nxt, eos_t)
            if t == max_new_tokens - 1 or bool(done.all()):
                break
            logits = step(nxt)
        if not tokens:
            return input_ids.new_zeros((input_ids.shape[0], 0))
        return torch.stack(tokens, dim=1)


def check_max_new_tokens(max_new_tokens) -> int:
    """``max_new_tokens`` as an int, or :class:`~quota.runtime.positions.InputError` unless it is an integer >= 0."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    return max_new_tokens
