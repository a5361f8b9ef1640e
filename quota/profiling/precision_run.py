"""Measure a :class:`~quota.profiling.precision_profile.PrecisionProfile` from uniformly quantized copies of one
model (one per precision option, all from the same base :class:`QuantConfig`, so that they share the rotation and
the parts outside the decoder layers).

Steps (every damage is the teacher-forced KL on the calibration answers):

1. the token profile under the lowest option (:func:`lowest_precision`) with :func:`profile_model` (its score
   weights, grid, analytic costs); its token curves are its ``kl_teacher`` curves against the reference option's
   all-token answers (the teacher), so that they share the reference of every other curve and of the precision
   table, and carry no re-roll floor (a KL against a low-bit model's own answers does: docs/results/joint_h100);
2. the token curves under the reference option (bf16), with the same score weights, when it is not the lowest;
3. the precision table ``[L, P]`` and its additivity on random mixed configurations
   (:mod:`quota.profiling.precision`);
4. each option's per-layer prefill and decode latency on this device (:mod:`quota.profiling.precision_latency`),
   or, without latency, an analytic stand-in labelled ``synthetic``.

Runs in one process (torchrun sharding is for the token profile only: not supported here).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch.nn as nn

from quota.models.registry import spec_for
from quota.profiling.costs import kv_bytes_per_token, layer_flops
from quota.profiling.measure import ProfileSettings, profile_model, progress_reporter, reference_visual_tokens
from quota.profiling.precision import INTERPOLATION, check_precision_additivity, precision_table
from quota.profiling.precision_latency import precision_latency
from quota.profiling.precision_profile import PrecisionProfile, default_kv_bits
from quota.profiling.damage_terms import per_layer_contributions
from quota.profiling.sensitivity import CalibrationBatch, DamageMeter, measure_grid, teacher_answers
from quota.quant.config import QuantConfig
from quota.quant.precision import PRECISIONS, PrecisionError, validate_layer_precision
from quota.recipe import ScoringSpec


def parse_precisions(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"w4a4,fp8,bf16"`` (or a sequence) as distinct known names; ``PrecisionError`` naming the bad entry."""
    names = tuple(n.strip() for n in text.split(",")) if isinstance(text, str) else tuple(text)
    names = validate_layer_precision(names)
    if len(set(names)) != len(names):
        raise PrecisionError(f"precisions must be distinct, got {list(names)}")
    return names


def lowest_precision(names: Sequence[str]) -> str:
    """The option of fewest bits (weight + activation bits; ties: the first given)."""
    return min(names, key=lambda n: (PRECISIONS[n].weight_bits + PRECISIONS[n].act_bits, names.index(n)))


def highest_precision(names: Sequence[str]) -> str:
    """The option of most bits (weight + activation bits; ties: the last given): the reference."""
    return max(names, key=lambda n: (PRECISIONS[n].weight_bits + PRECISIONS[n].act_bits, names.index(n)))


def uniform_config(base: QuantConfig, name: str, n_layers: int, kv_bits: int) -> QuantConfig:
    """``base`` with every decoder layer at option ``name`` and KV ``kv_bits``."""
    return base.replace(layer_precision=(name,) * n_layers, layer_kv_bits=(kv_bits,) * n_layers)


def layer_weight_count(text_config) -> int:
    """Weight elements of one decoder layer's seven linears."""
    d, heads = text_config.hidden_size, text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", heads) or heads
    head_dim = getattr(text_config, "head_dim", None) or d // heads
    return int(d * heads * head_dim * 2 + 2 * d * kv_heads * head_dim + 3 * d * text_config.intermediate_size)


def analytic_latency(text_config, precisions: Sequence[str], seq_lens: Sequence[int], kv_bytes: np.ndarray) -> dict:
    """An analytic stand-in for :func:`precision_latency` (``method = "synthetic"``): prefill = FLOPs at a nominal
    1e14 FLOP/s (x1.9 for 8-bit, x2 for 4-bit activations) plus one weight read at 2e12 B/s; decode = one weight
    read plus the KV read of ``seq_lens`` tokens, at the same bandwidth. For runs without latency measurement."""
    s = np.asarray(seq_lens, dtype=np.float64)
    weights = layer_weight_count(text_config)
    prefill, decode = [], []
    for p, name in enumerate(precisions):
        opt = PRECISIONS[name]
        speed = 1.0 if opt.act_bits >= 16 else 1.9 if opt.act_bits >= 8 else 2.0
        read = weights * opt.bytes_per_weight / 2e12
        prefill.append(layer_flops(text_config, s) / (1e14 * speed) + read)
        decode.append(read + s * kv_bytes[p] / 2e12)
    return {"prefill": np.maximum.accumulate(np.stack(prefill), axis=1),
            "decode": np.maximum.accumulate(np.stack(decode), axis=1), "method": "synthetic", "device": "analytic"}


def _report(message: str) -> None:
    print(f"[quota profile --precisions] {message}", file=sys.stderr, flush=True)


def profile_precisions(
    models: Mapping[str, nn.Module], batches: Sequence[CalibrationBatch], base: QuantConfig,
    precisions: Sequence[str], *, model_id: str, model_hash: str, data_version: str,
    settings: ProfileSettings | None = None, kv_bits: Mapping[str, int] | None = None, additivity: int = 8,
    output: str | Path | None = None, seed: int = 0,
) -> PrecisionProfile:
    """The precision profile of ``models`` (option -> the model quantized with :func:`uniform_config` of ``base``
    at that option) on calibration ``batches`` (see the module docstring). ``kv_bits``: option -> KV bits
    (default :func:`default_kv_bits`); ``additivity``: random mixed configurations measured (0: none). With
    ``output`` it is written there atomically."""
    start = time.time()
    settings = settings or ProfileSettings()
    names = parse_precisions(precisions)
    missing = [n for n in names if n not in models]
    if missing:
        raise ValueError(f"no quantized model given for precision(s) {missing}")
    kv = {n: int((kv_bits or {}).get(n, default_kv_bits(n, base.kv_bits))) for n in names}
    lo, ref = lowest_precision(names), highest_precision(names)
    lo_model = models[lo]
    spec = spec_for(lo_model)
    n_layers = len(spec.layers_of(lo_model))
    text_config = spec.text_config_of(lo_model)

    teacher = None
    if ref != lo:  # the lowest option's curves against the reference's answers, as every other curve and table is
        _report(f"{ref} answers (the reference the {lo} token curves are measured against)")
        teacher = teacher_answers(models[ref], batches, reference_visual_tokens(lo_model, batches), settings.impl)
    _report(f"token profile under {lo} (the lowest option)")
    token = profile_model(lo_model, batches, uniform_config(base, lo, n_layers, kv[lo]), model_id=model_id,
                          model_hash=model_hash, data_version=data_version, settings=settings, teacher=teacher)
    n_visual, grid = token.n_visual_tokens, token.grid
    scoring = ScoringSpec(token.score_weights, stage_weights=token.stage_weights)
    curves = {lo: token.damage["kl_teacher" if teacher is not None else "kl"]}
    t0 = time.time()
    if ref != lo:
        _report(f"token curves under {ref} (the reference option)")
        meter = DamageMeter(models[ref], batches, scoring, impl=settings.impl, reference_tokens=n_visual)
        results = measure_grid(meter, n_layers, n_visual, grid)
        from_layer = np.zeros((n_layers, len(grid)))
        for (layer, k), d in results.items():
            from_layer[layer, grid.index(k)] = d.kl
        curves[ref] = per_layer_contributions(from_layer)
    t_curves = time.time() - t0

    t0 = time.time()
    meter = DamageMeter(models[ref], batches, scoring, impl=settings.impl, reference_tokens=n_visual)
    _report(f"precision table: {n_layers} layers x {len(names) - 1} options against {ref}")
    table = precision_table(meter, models, names, ref, n_visual, progress_reporter("precision table"))
    t_table = time.time() - t0
    t0 = time.time()
    check = None
    if additivity and len(names) > 1:
        check = check_precision_additivity(meter, models, list(names), table, n_visual, additivity, seed,
                                           progress_reporter("mixed configurations"))
    t_add = time.time() - t0

    text_tokens = float(token.extra.get("text_tokens_mean", 0.0))
    seq_lens = [int(round(k + text_tokens)) for k in grid]
    kv_bytes = np.array([kv_bytes_per_token(text_config, base.replace(kv_bits=kv[n])) for n in names])
    t0 = time.time()
    if settings.latency:
        _report(f"latency of {len(names)} options at {len(seq_lens)} sequence lengths")
        latency = precision_latency(models, names, seq_lens)
    else:
        latency = analytic_latency(text_config, names, seq_lens, kv_bytes)
    t_latency = time.time() - t0

    prof = PrecisionProfile(
        profile=token, precisions=names, reference=ref, kv_bits=tuple(kv[n] for n in names),
        precision_damage=table, token_damage=curves, latency=latency,
        layer_weights=float(layer_weight_count(text_config)), kv_bytes_per_token=kv_bytes, text_tokens=text_tokens,
        additivity=check.to_dict() if check is not None else {},
        timing={"total_s": round(time.time() - start, 1), "token_profile_s": token.timing.get("total_s"),
                "reference_curves_s": round(t_curves, 1), "precision_table_s": round(t_table, 1),
                "additivity_s": round(t_add, 1), "latency_s": round(t_latency, 1)},
        extra={"lowest": lo, "interpolation": INTERPOLATION,
               "base_quant": base.to_dict(),
               "precision_model": "HAWQ-style first order: layer l alone at p, all others at the reference, "
                                  "all tokens kept; KL against the all-reference model"},
    )
    if output is not None:
        prof.save(output)
    return prof
