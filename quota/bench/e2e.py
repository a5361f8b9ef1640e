"""End-to-end speed and memory of a VLM under the runtime: time to first token, decode tokens per second
and peak memory with the KV cache, for bf16 with all tokens, W4A4 + KV4 with all tokens, W4A4 + KV4
with a pruning schedule, and (on GPUs with FP8 tensor cores, or when asked) the FP8 W8A8 baseline with all tokens
(every decoder linear an :class:`~quota.quantize.linear_fp8.Fp8Linear`, bf16 KV cache), each row's TTFT and
decode rate also given as a ratio to the FP8 row of its batch. Weights are random (speed does not depend on trained weights); the architectures
are written from published configuration numbers (:data:`ARCHITECTURES`), so nothing is downloaded; a checkpoint
folder (LLaVA-1.5 or Qwen2-VL) gives its own ``config.json``, its weights left unread.

One image of ``N`` visual tokens plus a text prompt per sample; greedy decoding of ``new_tokens`` tokens
(EOS disabled so every run decodes the same count). Timings are medians over ``repeats`` after a warm-up,
synchronized around each region. With ``static`` (the default) prefills run through a
:class:`~quota.runtime.graphs.StaticPrefill` and decode steps through a
:class:`~quota.runtime.graphs.StaticDecoder`, which on CUDA replay CUDA graphs, for every variant alike (the
warm-up run records the prefill); without it, through :meth:`PrunedRunner.prefill` and ``decode_step``,
eagerly. The decode rate is the steady state: the first two steps of a run (an eager step, then the step that
records the graph) are left out of it, in both modes.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from quota.device import placement
from quota.models.registry import checkpoint_class
from quota.models.visual_tokens import visual_tokens_of
from quota.kernels.fp8_gemm import has_fp8
from quota.quant.config import QuantConfig
from quota.quantize.model import quantize_model
from quota.runtime.baselines import baseline_plan
from quota.runtime.generate import PrunedRunner
from quota.runtime.graphs import StaticDecoder, StaticPrefill
from quota.runtime.vision import image_features


def llava15_7b_config():
    """LLaVA-1.5-7B: CLIP ViT-L/14 at 336 px (576 tokens), 2-layer GELU projector, Llama-2-7B (32 x 4096)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, pad_token_id=0)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=32000, projector_hidden_act="gelu",
                       vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=576)


def tiny_llava_config():
    """A few-layer LLaVA-shaped config for tests (16 visual tokens)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8)
    text = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=8,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=0)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=255, vision_feature_select_strategy="default",
                       image_seq_length=16)


def qwen2_vl_7b_config():
    """Qwen2-VL-7B: 675M ViT (32 blocks x 1280, patch 14, 2 x 2 merge), Qwen2-7B text model (28 x 3584, GQA 28/4,
    M-RoPE sections 16/24/24)."""
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                         rms_norm_eps=1e-6, rope_theta=1e6, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
                         bos_token_id=151643, eos_token_id=151645),
        vision_config=dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        bos_token_id=151643, eos_token_id=151645,
    )


def tiny_qwen2_vl_config():
    """A few-layer Qwen2-VL-shaped config for tests (16 visual tokens: an 8 x 8 patch grid merged 2 x 2)."""
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, bos_token_id=1, eos_token_id=2),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=4,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=250, video_token_id=251, vision_start_token_id=252, vision_end_token_id=253,
        bos_token_id=1, eos_token_id=2,
    )


ARCHITECTURES: dict[str, Callable] = {
    "llava-1.5-7b": llava15_7b_config, "qwen2-vl-7b": qwen2_vl_7b_config,
    "tiny-llava": tiny_llava_config, "tiny-qwen2-vl": tiny_qwen2_vl_config,
}
VISUAL_TOKENS = {"llava-1.5-7b": 576, "qwen2-vl-7b": 576, "tiny-llava": 16, "tiny-qwen2-vl": 16}
"""Visual tokens of the one image per sample (Qwen2-VL: a 48 x 48 patch grid, 672 px, merged 2 x 2 to 576)."""


@dataclass
class SpeedRow:
    variant: str
    batch: int
    schedule_mean: float
    ttft_ms: float
    decode_tokens_per_s: float
    peak_memory_gib: float
    kv_cache_mib: float
    kv_prompt_mib: float = float("nan")
    """The KV cache right after the prefill (the prompt's tokens only); ``kv_cache_mib`` is after decoding."""
    ttft_vs_fp8: float = float("nan")
    """``ttft_ms`` / the FP8 W8A8 row's of the same batch (below 1: faster); NaN without an FP8 row."""
    decode_vs_fp8: float = float("nan")
    """``decode_tokens_per_s`` / the FP8 W8A8 row's of the same batch (above 1: faster)."""
    vision_ms: float = float("nan")
    """The image encoder and projector alone, run eagerly (:func:`vision_ms`): a part of ``ttft_ms``."""
    ttft_vs_bf16: float = float("nan")
    """``ttft_ms`` / the bf16 all-token row's of the same batch (below 1: faster)."""
    decode_vs_bf16: float = float("nan")
    """``decode_tokens_per_s`` / the bf16 all-token row's of the same batch (above 1: faster)."""

    def to_dict(self) -> dict:
        """The row as JSON-ready values: a measurement that does not exist (peak memory off CUDA) is ``None``."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


CPU_NOTE = ("CPU timings: the PyTorch reference path on this CPU, without the Triton kernels or CUDA graphs; "
            "they say nothing about speed on a GPU.")


def format_gib(value: float) -> str:
    """``1.23`` GiB, or ``n/a`` when it was not measured (peak memory off CUDA)."""
    return "n/a" if math.isnan(value) else f"{value:.2f}"


BENCH_MODEL_TYPES = ("llava", "qwen2_vl")
"""Checkpoint families the speed inputs (:func:`inputs`) can be built for."""


def folder_architecture(folder: str | Path) -> tuple[object, int]:
    """``(config, N)`` of a checkpoint folder's architecture, read from its ``config.json`` alone (no weight is
    read): N of a LLaVA-1.5 image, or 576 for Qwen2-VL (a 672 px image, as :data:`VISUAL_TOKENS`). Other
    families raise ``ValueError`` naming the ones the benchmark builds inputs for."""
    from transformers import AutoConfig

    name = checkpoint_class(folder)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    if config.model_type not in BENCH_MODEL_TYPES:
        raise ValueError(f"quota bench e2e builds speed inputs for {', '.join(BENCH_MODEL_TYPES)} checkpoints; "
                         f"{folder} holds a {name}")
    return config, (visual_tokens_of(config) if config.model_type == "llava" else 576)


def architecture(arch: str) -> tuple[object, int]:
    """``(config, N)`` of a named architecture of :data:`ARCHITECTURES` or of a checkpoint folder."""
    if Path(arch).is_dir():
        return folder_architecture(arch)
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r} (no such folder); known: {sorted(ARCHITECTURES)}, or a "
                         f"checkpoint folder")
    return ARCHITECTURES[arch](), VISUAL_TOKENS[arch]


def build_random(arch: str, device: str, dtype: torch.dtype):
    """A model of ``arch`` (a name of :data:`ARCHITECTURES`, or a checkpoint folder whose config is used and whose
    weights are not) with seeded random weights."""
    from transformers import LlavaForConditionalGeneration, Qwen2VLForConditionalGeneration

    config, _ = architecture(arch)
    cls = Qwen2VLForConditionalGeneration if config.model_type == "qwen2_vl" else LlavaForConditionalGeneration
    torch.manual_seed(0)
    with torch.device(device):
        model = cls(config)
    return model.to(dtype).eval()


def inputs(model, batch: int, prompt_tokens: int, n_visual: int, device: str, dtype: torch.dtype):
    """``(input_ids [B, S], attention_mask [B, S], pixel_values, vision_inputs)`` for one image of ``n_visual``
    tokens per sample followed by ``prompt_tokens`` random text tokens.

    LLaVA: the image span first, ``pixel_values`` ``[B, 3, H, W]``. Qwen2-VL: vision start, the image span,
    vision end, then the text; ``pixel_values`` are the flattened patches ``[B * g * g, 3 * 2 * p * p]`` of a
    ``g x g`` patch grid (``g = 2 sqrt(n_visual)``) and ``vision_inputs`` holds ``image_grid_thw`` ``[B, 3]``.
    """
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    low = 3
    high = min(cfg.image_token_id, getattr(cfg, "vision_start_token_id", cfg.image_token_id)) - 1
    if high <= low:  # special tokens first in the vocabulary (a checkpoint folder's): draw above them
        low, high = max(cfg.image_token_id, getattr(cfg, "vision_end_token_id", 0)) + 1, cfg.text_config.vocab_size
    text = torch.randint(low, high, (batch, prompt_tokens), generator=g)
    image = torch.full((batch, n_visual), cfg.image_token_id)
    if cfg.model_type == "qwen2_vl":
        grid = 2 * round(n_visual ** 0.5)
        if (grid // 2) ** 2 != n_visual:
            raise ValueError(f"Qwen2-VL speed inputs need a square number of visual tokens, got {n_visual}")
        start = torch.full((batch, 1), cfg.vision_start_token_id)
        end = torch.full((batch, 1), cfg.vision_end_token_id)
        ids = torch.cat([start, image, end, text], dim=1).to(device)
        v = cfg.vision_config
        pixels = torch.randn(batch * grid * grid, v.in_channels * v.temporal_patch_size * v.patch_size**2, generator=g)
        extra = {"image_grid_thw": torch.tensor([[1, grid, grid]] * batch, device=device)}
        return ids, torch.ones_like(ids), pixels.to(device, dtype), extra
    ids = torch.cat([image, text], dim=1).to(device)
    size = cfg.vision_config.image_size
    pixels = torch.randn(batch, 3, size, size, generator=g).to(device, dtype)
    return ids, torch.ones_like(ids), pixels, {}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


UNTIMED_DECODE_STEPS = 2
"""Decode steps of each run left out of the decode rate: an eager step, and the one that records the graph."""


def measure(runner, ids, mask, pixels, extra: dict, new_tokens: int, repeats: int, device: str,
            static: bool = True) -> tuple[float, float, float, float, float]:  # fmt: skip
    """(ttft seconds, decode tokens/s, peak GiB, KV MiB after decoding, KV MiB after the prefill) medians over
    ``repeats``; ``extra``: vision inputs.
    ``new_tokens`` counts the prefill's token: ``new_tokens - 1`` decode steps, the first
    :data:`UNTIMED_DECODE_STEPS` of them untimed."""
    if new_tokens < UNTIMED_DECODE_STEPS + 2:
        raise ValueError(f"new_tokens must be at least {UNTIMED_DECODE_STEPS + 2}, got {new_tokens}")
    ttfts, rates, kv = [], [], 0.0
    if static:
        prefill = StaticPrefill(runner, reserve=new_tokens)
    else:
        prefill = lambda *a, **kw: runner.prefill(*a, reserve=new_tokens, **kw)  # noqa: E731
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for run in range(repeats + 1):  # run 0 warms up (compilation, autotuning) with a few decode steps only
        steps = min(new_tokens, UNTIMED_DECODE_STEPS + 2) if run == 0 else new_tokens
        _sync(device)
        t0 = time.perf_counter()
        logits, state = prefill(ids, mask, pixels, **extra)
        token = logits.argmax(-1)
        _sync(device)
        t1 = time.perf_counter()
        kv_prompt = state.cache.nbytes() / 2**20
        if static:
            decoder = StaticDecoder(runner, state, steps - 1)
        else:
            decoder = functools.partial(runner.decode_step, state=state)
        for _ in range(UNTIMED_DECODE_STEPS):
            token = decoder(token).argmax(-1)
        _sync(device)
        t2 = time.perf_counter()
        for _ in range(steps - 1 - UNTIMED_DECODE_STEPS):
            token = decoder(token).argmax(-1)
        _sync(device)
        t3 = time.perf_counter()
        if static:
            decoder.close()
        ttfts.append(t1 - t0)
        rates.append(ids.shape[0] * (steps - 1 - UNTIMED_DECODE_STEPS) / max(t3 - t2, 1e-9))
        kv = state.cache.nbytes() / 2**20
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    med = lambda xs: sorted(xs[1:])[len(xs[1:]) // 2]  # noqa: E731
    return med(ttfts), med(rates), peak, kv, kv_prompt


def vision_ms(model, pixels: torch.Tensor, batch: int, extra: dict, repeats: int, device: str) -> float:
    """Median time in ms of the image encoder and projector alone (``get_image_features``, eager), over ``repeats``
    runs after a warm-up: the share of a prefill that pruning and low-bit layers do not touch."""
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            _sync(device)
            t0 = time.perf_counter()
            image_features(model, pixels, batch, **extra)
            _sync(device)
            times.append(time.perf_counter() - t0)
    rest = sorted(times[1:])
    return rest[len(rest) // 2] * 1e3


def resample_schedule(schedule: Sequence[int], layers: int, n_visual: int, source_visual: int) -> list[int]:
    """A per-layer keep schedule carried to a model of ``layers`` layers and ``n_visual`` visual tokens: layer
    ``i`` takes the keep ratio of the source layer at the same relative depth (``floor(i * L_src / layers)``),
    rounded to tokens. Non-increasing schedules stay non-increasing."""
    if not schedule:
        raise ValueError("the schedule to resample is empty")
    if any(not 0 <= k <= source_visual for k in schedule):
        raise ValueError(f"schedule entries must lie in [0, {source_visual}], got {list(schedule)}")
    src = len(schedule)
    return [round(schedule[i * src // layers] / source_visual * n_visual) for i in range(layers)]


BF16_VARIANT = "bf16, all tokens"
FP8_VARIANT = "FP8 W8A8, all tokens"
MIXED_VARIANT = "recipe precision + schedule"


def resample_layers(values: Sequence, layers: int) -> list:
    """Per-layer values of another depth (a testbed recipe's 30 layers) for ``layers`` layers, by relative depth:
    layer ``i`` takes source layer ``i * len(values) // layers``."""
    return [values[i * len(values) // layers] for i in range(layers)]


def mixed_config(layer_precision: Sequence[str], layer_kv_bits: Sequence[int] | None, layers: int,
                 impl: str) -> QuantConfig:
    """The recipe's per-layer precision (and KV bits) resampled to ``layers`` decoder layers, weights rounded to
    nearest (random weights: nothing to calibrate), the rotation as in the default W4A4 config."""
    return QuantConfig(layer_precision=tuple(resample_layers(list(layer_precision), layers)),
                       layer_kv_bits=tuple(resample_layers(list(layer_kv_bits), layers)) if layer_kv_bits else None,
                       weight_method="rtn", w_clip_search=False, a_clip_search=False, impl=impl)


def fp8_config(layers: int, impl: str) -> QuantConfig:
    """The FP8 W8A8 baseline: every decoder layer ``fp8`` (per-channel e4m3 weights, per-token e4m3 activations,
    ``torch._scaled_mm``), bf16 KV cache, no rotation (FP8 needs none), nothing calibrated."""
    return QuantConfig(layer_precision=("fp8",) * layers, kv_bits=16, rotate=False, online_hadamard=False,
                       kv_hadamard=False, weight_method="rtn", w_clip_search=False, a_clip_search=False, impl=impl)


def add_bf16_ratios(rows: list[SpeedRow]) -> None:
    """Set each row's ``ttft_vs_bf16`` and ``decode_vs_bf16`` against the bf16 all-token row of its batch."""
    _add_ratios(rows, BF16_VARIANT, "ttft_vs_bf16", "decode_vs_bf16")


def add_fp8_ratios(rows: list[SpeedRow]) -> None:
    """Set each row's ``ttft_vs_fp8`` and ``decode_vs_fp8`` against the FP8 row of its batch, where there is one."""
    _add_ratios(rows, FP8_VARIANT, "ttft_vs_fp8", "decode_vs_fp8")


def _add_ratios(rows: list[SpeedRow], variant: str, ttft_field: str, decode_field: str) -> None:
    """Each row's TTFT and decode rate over those of the ``variant`` row of its batch, where there is one."""
    base_of = {r.batch: r for r in rows if r.variant == variant}
    for r in rows:
        base = base_of.get(r.batch)
        if base is not None:
            setattr(r, ttft_field, r.ttft_ms / base.ttft_ms)
            setattr(r, decode_field, r.decode_tokens_per_s / base.decode_tokens_per_s)


def run_speed(arch: str = "llava-1.5-7b", batches: Sequence[int] = (1, 16), prompt_tokens: int = 64,
              new_tokens: int = 512, budget: float = 0.3, repeats: int = 3, device: str | None = None,
              schedule: Sequence[int] | None = None, source_visual: int | None = None,
              static: bool = True, fp8: bool | None = None, layer_precision: Sequence[str] | None = None,
              layer_kv_bits: Sequence[int] | None = None) -> list[SpeedRow]:
    """bf16 all tokens, W4A4 + KV4 all tokens, W4A4 + KV4 with ``schedule`` (default: the PyramidDrop-shaped
    schedule at ``budget`` of the visual tokens), then the FP8 W8A8 baseline with all tokens, each at every batch
    size, in one process. A ``schedule`` of another layer count (a recipe solved for the testbed) is resampled by
    relative depth (:func:`resample_schedule`; ``source_visual``: its visual-token count, default this model's).
    ``static``: prefill and decode through :class:`~quota.runtime.graphs.StaticPrefill` and
    :class:`~quota.runtime.graphs.StaticDecoder` (CUDA graphs on CUDA). ``fp8``: measure the FP8 row (``None``: on a
    GPU with FP8 tensor cores only; elsewhere its timings would say nothing). The FP8 model is built afresh (same
    seed) after the W4A4 rows, so that no other model's weights sit in memory during its peak-memory reading.
    ``layer_precision`` (a version 3 recipe's, with its ``layer_kv_bits``): also measure the mixed-precision model
    it describes (:func:`mixed_config`, resampled by relative depth) with the pruned schedule, built afresh the
    same way, before the FP8 row."""
    device, dtype = placement(device)
    impl = "triton" if device.startswith("cuda") else "reference"
    model = build_random(arch, device, dtype)
    n, layers = architecture(arch)[1], model.config.text_config.num_hidden_layers
    source_visual = source_visual or n
    full = [n] * layers
    if schedule is not None:
        pruned = list(schedule) if len(schedule) == layers else resample_schedule(schedule, layers, n, source_visual)
    else:
        pruned = list(baseline_plan("pyramiddrop", budget * n, n, layers).schedule)
    weights = {"attn_last": 1.0, "magnitude": 0.1}
    rows = []

    def add_row(variant: str, runner: PrunedRunner, sched: Sequence[int], ids, mask, pixels, extra) -> None:
        """Measure ``runner`` on one batch, then its image encoder alone, and report the row."""
        b = ids.shape[0]
        rows.append(SpeedRow(variant, b, sum(sched) / layers,
                             *_scaled(measure(runner, ids, mask, pixels, extra, new_tokens, repeats, device, static))))
        rows[-1].vision_ms = vision_ms(runner.model, pixels, b, extra, repeats, device)
        _report(rows[-1])

    for b in batches:  # bf16 first: the model is then quantized in place
        ids, mask, pixels, extra = inputs(model, b, prompt_tokens, n, device, dtype)
        add_row(BF16_VARIANT, PrunedRunner(model, full, weights, impl="reference"), full, ids, mask, pixels, extra)
    quant = QuantConfig(weight_method="rtn", w_clip_search=False, a_clip_search=False, impl=impl)
    qmodel = quantize_model(model, quant, None, inplace=True)
    for b in batches:
        ids, mask, pixels, extra = inputs(qmodel, b, prompt_tokens, n, device, dtype)
        for name, sched in (("W4A4+KV4, all tokens", full), (f"W4A4+KV4, schedule at {budget:g}", pruned)):
            add_row(name, PrunedRunner(qmodel, sched, weights, impl=impl), sched, ids, mask, pixels, extra)
    if layer_precision is not None:
        model = qmodel = None  # the W4A4 model's memory goes back before the mixed one is built
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        config = mixed_config(layer_precision, layer_kv_bits, layers, impl)
        mmodel = quantize_model(build_random(arch, device, dtype), config, None, inplace=True)
        for b in batches:
            ids, mask, pixels, extra = inputs(mmodel, b, prompt_tokens, n, device, dtype)
            add_row(MIXED_VARIANT, PrunedRunner(mmodel, pruned, weights, impl=impl), pruned, ids, mask, pixels, extra)
        mmodel = None
    if fp8 if fp8 is not None else has_fp8(torch.device(device)):
        model = qmodel = None  # the bf16/W4A4 model's memory goes back before the FP8 model is built
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        fmodel = quantize_model(build_random(arch, device, dtype), fp8_config(layers, impl), None, inplace=True)
        for b in batches:
            ids, mask, pixels, extra = inputs(fmodel, b, prompt_tokens, n, device, dtype)
            add_row(FP8_VARIANT, PrunedRunner(fmodel, full, weights, impl=impl), full, ids, mask, pixels, extra)
        add_fp8_ratios(rows)
        for row in rows:
            print(f"[quota bench e2e] {row.variant}, batch {row.batch}: TTFT {row.ttft_vs_fp8:.2f}x FP8 W8A8, "
                  f"decode {row.decode_vs_fp8:.2f}x", file=sys.stderr, flush=True)
    add_bf16_ratios(rows)
    return rows


def _report(row: SpeedRow) -> None:
    """One line per measured row on stderr, flushed, so that a run cut short keeps what it measured."""
    print(f"[quota bench e2e] {row.variant}, batch {row.batch}: TTFT {row.ttft_ms:.1f} ms, "
          f"{row.decode_tokens_per_s:.1f} tok/s, peak {_peak(row.peak_memory_gib)}, KV {row.kv_cache_mib:.1f} MiB "
          f"({row.kv_prompt_mib:.1f} MiB after the prefill), image encoder {row.vision_ms:.1f} ms eager",
          file=sys.stderr, flush=True)


def _peak(gib: float) -> str:
    """``peak 1.23 GiB`` or ``peak n/a``."""
    text = format_gib(gib)
    return text if text == "n/a" else f"{text} GiB"


def _scaled(values: tuple[float, float, float, float, float]) -> tuple[float, float, float, float, float]:
    ttft, rate, peak, kv, kv_prompt = values
    return ttft * 1e3, rate, peak, kv, kv_prompt
