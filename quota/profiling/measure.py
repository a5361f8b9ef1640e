"""Measure a profile: sensitivity and cost curves of a (quantized) model on calibration batches, written as a
:class:`quota.profiling.profile.Profile`. :mod:`quota.testbed.profile` drives it for the testbed."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import transformers
import triton

from quota import __version__
from quota.atomic import runtime_record
from quota.profiling.costs import analytic_costs, measure_latency
from quota.profiling.profile import Profile
from quota.models.registry import spec_for
from quota.profiling.damage_terms import interaction_subgrid, interaction_terms, per_layer_contributions
from quota.profiling.sensitivity import (
    CalibrationBatch, DamageMeter, batch_image_inputs, batch_visual_tokens, measure_grid, measure_pairs,
    prune_from_schedule, reference_digest,
)
from quota.runtime.vision import vision_attention_unsupported
from quota.profiling.sharding import (
    check_partials, check_ranks_agree, clear_partials, item_key, run_shared, run_sharded, world,
)
from quota.quant.config import QuantConfig
from quota.recipe import ScoringSpec
from quota.solvers import default_grid

# candidate score weightings searched on the calibration data (signal -> weight)
SCORE_CANDIDATES: tuple[dict[str, float], ...] = (
    # every candidate keeps an embedding-level signal (magnitude, risk or vision_attn), the only kind that exists
    # before layer 0, so that a schedule pruning there can be scored when no pre-LLM weighting is searched
    {"attn_last": 0.9, "magnitude": 0.1},
    {"attn_text": 0.9, "magnitude": 0.1},
    {"attn_last": 0.45, "attn_text": 0.45, "magnitude": 0.1},
    {"attn_last": 0.6, "magnitude": 0.2, "risk": 0.2},
    {"attn_text": 0.6, "magnitude": 0.2, "risk": 0.2},
    {"attn_last": 0.4, "attn_text": 0.4, "risk": 0.2},
    {"magnitude": 0.5, "risk": 0.5},
    # the vision tower's attention (VisionZip's signal), alone and with the language model's own attention
    {"vision_attn": 0.9, "magnitude": 0.1},
    {"vision_attn": 0.45, "attn_text": 0.45, "magnitude": 0.1},
)
# candidate weightings of the pruning point before layer 0 (stage ``pre_llm``): only the signals that exist there
PRE_LLM_CANDIDATES: tuple[dict[str, float], ...] = (
    {"vision_attn": 1.0},
    {"vision_attn": 0.9, "magnitude": 0.1},
    {"magnitude": 1.0},
    {"magnitude": 0.5, "risk": 0.5},
)
# candidate selection rules and merged tokens of every pruning point (searched after the weights, on the probes of
# both stages): top-k alone, VisionZip-style merging of the dropped tokens, diversity selection, and diversity
# selection with SparseVLM-style recycling (merge caps the recycled count; 64 leaves the rule's own count, at most 52
# of 576 tokens, in charge)
SELECTION_CANDIDATES: tuple[dict[str, Any], ...] = (
    {"selection": "topk", "merge": 0},
    {"selection": "topk", "merge": 8},
    {"selection": "divprune", "merge": 0},
    {"selection": "cdpruner", "merge": 0},
    {"selection": "divprune", "merge": 64, "merge_rule": "recycle"},
)


def selection_name(candidate: Mapping[str, Any]) -> str:
    """A selection candidate's name: its rule, then ``+merge<c>`` for contextual merging or ``+recycle`` for
    recycling (``topk``, ``topk+merge8``, ``divprune+recycle``)."""
    if candidate.get("merge_rule", "context") == "recycle":
        return f"{candidate['selection']}+recycle"
    return candidate["selection"] + (f"+merge{candidate['merge']}" if candidate["merge"] else "")


def selection_candidates(names: Sequence[str]) -> list[dict[str, Any]]:
    """The candidates of :data:`SELECTION_CANDIDATES` named ``names`` (:func:`selection_name`), in that order;
    an unknown or repeated name is a ``ValueError`` listing the known ones."""
    known = {selection_name(c): c for c in SELECTION_CANDIDATES}
    bad = [n for n in names if n not in known]
    if bad or len(set(names)) != len(names) or not names:
        raise ValueError(f"--selections: {', '.join(bad) or 'repeated or no names'}; choose distinct names among "
                         f"{', '.join(known)}")
    return [dict(known[n]) for n in names]


@dataclass
class ProfileSettings:
    """How a profile is measured. ``grid_steps``: the candidate keep counts are the multiples of
    ``N / grid_steps`` (0 to N). ``score_candidates``: the in-LLM weightings searched (probes pruning from
    ``probe_layer``); ``pre_llm_candidates``: the weightings searched for the point before layer 0 (probes pruning
    there; empty: no pre-LLM search, every stage uses the in-LLM weights). ``selection_candidates``: the
    ``{"selection", "merge"}`` pairs searched afterwards on the probes of both stages (empty or one: no search, the
    first or top-k alone). ``batch_size``: calibration questions per forward (it changes the padding,
    so the measured floats, and is part of a profile's settings record). ``interaction_steps``: ``None`` (default)
    measures no interaction terms; ``S`` measures the two-step schedules of a subgrid of about ``S + 1`` keep
    counts (:func:`measure_interactions`), ``(L - 1) (m - 1) (m - 2) / 2`` more schedules for ``m`` subgrid
    counts."""

    grid_steps: int = 32
    batch_size: int = 64
    probe_layer: int = 2
    probe_keeps: tuple[float, ...] = (1 / 9, 1 / 3)  # fractions of N: 64 and 192 of 576
    score_candidates: Sequence[dict[str, float]] = field(default_factory=lambda: list(SCORE_CANDIDATES))
    pre_llm_candidates: Sequence[dict[str, float]] = field(default_factory=lambda: list(PRE_LLM_CANDIDATES))
    selection_candidates: Sequence[dict[str, Any]] = field(default_factory=lambda: list(SELECTION_CANDIDATES))
    latency: bool = True
    impl: str = "auto"
    interaction_steps: int | None = None


def settings_record(
    *, model_id: str, model_hash: str, quant: QuantConfig, data_version: str, questions: int, n_visual: int,
    settings: ProfileSettings, device, extra: dict | None = None,
) -> dict:
    """What the grid items of a profile depend on, as stored in its partial files: a resumed run reuses them
    only when this record is the same. ``extra``: settings the caller adds (the testbed: its calibration
    question count). :func:`profile_model` completes it with the data's digest and the chosen score weights
    (in-LLM and pre-LLM)."""
    return {
        "model_id": model_id, "model_hash": model_hash, "quant": quant.to_dict(), "data_version": data_version,
        "questions": int(questions), **(extra or {}),
        "grid": [int(k) for k in default_grid(n_visual, settings.grid_steps)], "batch_size": settings.batch_size,
        "probe_layer": settings.probe_layer, "probe_keeps": [float(f) for f in settings.probe_keeps],
        "score_candidates": [dict(w) for w in settings.score_candidates],
        "pre_llm_candidates": [dict(w) for w in settings.pre_llm_candidates], "impl": settings.impl,
        "selection_candidates": [dict(c) for c in settings.selection_candidates],
        **({"interaction_steps": settings.interaction_steps} if settings.interaction_steps is not None else {}),
        **runtime_record(device),
    }


def reference_visual_tokens(model, batches: Sequence[CalibrationBatch]) -> int:
    """The ``N`` a profile's keep counts refer to: the largest image of the calibration batches when they say
    (user data; images of other sizes run the schedules resolved to theirs, see
    :func:`quota.schedule.resolve_schedule`), else the model config's ``image_seq_length`` (the testbed)."""
    counts = [n for n in (batch_visual_tokens(b) for b in batches) if n is not None]
    if counts:
        return max(counts)
    n = getattr(model.config, "image_seq_length", None)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{type(model).__name__}: the calibration batches do not say how many visual tokens an "
                         f"image has, and the config has no image_seq_length")
    return n


def batches_digest(batches: Sequence[CalibrationBatch]) -> str:
    """sha256 (16 hex digits) of the calibration batches' tensors and tasks: identifies the exact data."""
    h = hashlib.sha256()
    for b in batches:
        for t in (b.input_ids, b.attention_mask, b.pixel_values, b.answer_ids, b.answer_mask,
                  *batch_image_inputs(b).values()):
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        h.update("|".join(b.tasks).encode())
    return h.hexdigest()[:16]


def runnable_candidates(model, candidates: Sequence[Mapping[str, float]]) -> tuple[list[dict], dict[str, str]]:
    """The candidates that can run on ``model``, and ``{json of a skipped candidate: why}`` for those that weight
    ``vision_attn`` where :func:`vision_attention_unsupported` says it cannot run."""
    why = vision_attention_unsupported(model, spec_for(model))
    skipped = {json.dumps(dict(w), sort_keys=True): why for w in candidates if why and "vision_attn" in w}
    runnable = [dict(w) for w in candidates if json.dumps(dict(w), sort_keys=True) not in skipped]
    return runnable, skipped


def search_weights(
    meter: DamageMeter, candidates: Sequence[Mapping[str, float]], probe_layer: int, keeps: Sequence[int],
    n_layers: int, n_visual: int, scoring_of: Callable[[dict], ScoringSpec], label: str,
) -> tuple[dict, dict]:
    """``(best weights, search record)``: the runnable candidate (:func:`runnable_candidates`) with the least mean
    KL over the probe schedules that keep all tokens before ``probe_layer`` and each of ``keeps`` from it on, each
    measured under ``scoring_of(candidate)``; ties go to the earlier candidate. Under torchrun the (candidate,
    probe) runs are shared out over the ranks and every rank gets every result. Raises ``ValueError`` when no
    candidate can run (``label`` names the search)."""
    runnable, skipped = runnable_candidates(meter.model, candidates)
    if not runnable:
        raise ValueError(f"no {label} candidate can run on {type(meter.model).__name__}: "
                         f"{next(iter(skipped.values()), 'there are none')}")

    def probe(item) -> float:
        _, c, k = item
        schedule = prune_from_schedule(n_layers, n_visual, probe_layer, keeps[k])
        return meter.measure(schedule, n_visual, scoring_of(runnable[c])).kl

    items = [(label, c, k) for c in range(len(runnable)) for k in range(len(keeps))]
    kl = run_shared(items, probe)
    results = [{"weights": w, "mean_kl": float(np.mean([kl[item_key((label, c, k))] for k in range(len(keeps))]))}
               for c, w in enumerate(runnable)]
    best = min(results, key=lambda r: r["mean_kl"])
    search = {"probe_layer": probe_layer, "probe_keeps": list(keeps), "candidates": results,
              "criterion": "mean KL on the calibration split"}
    if skipped:
        search["skipped"] = [{"weights": json.loads(w), "why": why} for w, why in skipped.items()]
    return best["weights"], search


def probe_keeps(n_visual: int, settings: ProfileSettings) -> list[int]:
    """The probes' keep counts: ``settings.probe_keeps`` as fractions of ``n_visual`` (at least 1)."""
    return [max(1, round(f * n_visual)) for f in settings.probe_keeps]


def calibrate_score_weights(meter: DamageMeter, n_layers: int, n_visual: int, settings: ProfileSettings) -> tuple[dict, dict]:
    """The in-LLM weighting: the candidate of ``settings.score_candidates`` with the least mean KL over the probe
    schedules pruning from ``settings.probe_layer`` (:func:`search_weights`), each the only weighting of every
    pruning point. Under torchrun all ranks get the same choice, so all of them measure the grid with it."""
    probe_layer = min(settings.probe_layer, n_layers - 1)  # a model of fewer layers is probed at its last one
    return search_weights(meter, settings.score_candidates, probe_layer, probe_keeps(n_visual, settings), n_layers,
                          n_visual, lambda w: ScoringSpec(w), "score")


def calibrate_pre_llm_weights(meter: DamageMeter, n_layers: int, n_visual: int, settings: ProfileSettings,
                              in_llm: Mapping[str, float]) -> tuple[dict | None, dict]:
    """The ``pre_llm`` weighting: the candidate of ``settings.pre_llm_candidates`` (signals that exist before layer
    0 only) with the least mean KL over the probe schedules that prune before layer 0 to each of the probe keep
    counts (:func:`search_weights`), measured as ``ScoringSpec(in_llm, stage_weights={"pre_llm": candidate})``
    (the in-LLM weights are not used by these probes). ``(None, {})`` when there are no candidates."""
    if not settings.pre_llm_candidates:
        return None, {}
    return search_weights(meter, settings.pre_llm_candidates, 0, probe_keeps(n_visual, settings), n_layers,
                          n_visual, lambda w: ScoringSpec(dict(in_llm), stage_weights={"pre_llm": w}), "pre_llm")


def calibrate_selection(meter: DamageMeter, n_layers: int, n_visual: int, settings: ProfileSettings,
                        weights: Mapping[str, float], pre_llm: Mapping[str, float] | None) -> tuple[dict, dict]:
    """``(chosen {"selection", "merge", "merge_rule"}, search record)``: the candidate of
    ``settings.selection_candidates`` with the least mean KL over the probe schedules of both stages (pruning from
    ``probe_layer`` and, with pre-LLM weights, from layer 0, to each probe keep count), each scored with the chosen
    weights and that selection and merging (a candidate without ``merge_rule`` folds as ``"context"``); ties go to
    the earlier candidate. Fewer than two candidates: the first (or top-k alone), no search."""
    candidates = [{"merge_rule": "context", **c} for c in settings.selection_candidates or SELECTION_CANDIDATES[:1]]
    if len(candidates) == 1:
        return candidates[0], {}
    stages = [settings.probe_layer] + ([0] if pre_llm else [])
    keeps = probe_keeps(n_visual, settings)
    stage_weights = {"pre_llm": dict(pre_llm)} if pre_llm else None

    def probe(item) -> float:
        _, c, layer, k = item
        scoring = ScoringSpec(dict(weights), stage_weights=stage_weights, selection=candidates[c]["selection"],
                              merge=int(candidates[c]["merge"]), merge_rule=candidates[c]["merge_rule"])
        return meter.measure(prune_from_schedule(n_layers, n_visual, layer, keeps[k]), n_visual, scoring).kl

    items = [("selection", c, layer, k) for c in range(len(candidates)) for layer in stages for k in range(len(keeps))]
    kl = run_shared(items, probe)
    results = [{**cand, "mean_kl": float(np.mean([kl[item_key(it)] for it in items if it[1] == c]))}
               for c, cand in enumerate(candidates)]
    best = min(results, key=lambda r: r["mean_kl"])
    return ({"selection": best["selection"], "merge": best["merge"], "merge_rule": best["merge_rule"]},
            {"probe_layers": stages, "probe_keeps": list(keeps), "candidates": results,
             "criterion": "mean KL on the calibration split"})


def peak_memory(device: torch.device) -> dict[str, float]:
    """``{"peak_memory_gib": ...}``: the most GPU memory this process (rank 0 under torchrun; every rank holds its
    own model) allocated through torch since it started, in GiB; empty on a CPU."""
    if device.type != "cuda":
        return {}
    return {"peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}


def report(message: str) -> None:
    """One progress line on stderr (rank-prefixed under torchrun), flushed so that logs survive a timeout."""
    rank, size = world()
    print(f"[quota profile{f' rank {rank}' if size > 1 else ''}] {message}", file=sys.stderr, flush=True)


def progress_reporter(label: str, every_s: float = 30.0) -> Callable[[int, int], None]:
    """``on_item(done, total)`` that reports progress and a time estimate at most every ``every_s`` seconds
    (and at the last item)."""
    start, last = time.time(), [0.0]

    def on_item(done: int, total: int) -> None:
        now = time.time()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            left = (now - start) / done * (total - done)
            report(f"{label}: {done}/{total} in {now - start:.0f} s, about {left:.0f} s left")

    return on_item


def calibrate_stages(meter: DamageMeter, n_layers: int, n_visual: int, settings: ProfileSettings,
                     questions: int) -> tuple[dict, dict, dict | None, dict]:
    """``(in-LLM weights, their search, pre-LLM weights or None, their search)`` on the meter's calibration data
    (:func:`calibrate_score_weights`, then :func:`calibrate_pre_llm_weights`), reporting progress."""
    t0 = time.time()
    report(f"calibrating score weights ({len(settings.score_candidates)} in-LLM and "
           f"{len(settings.pre_llm_candidates)} pre-LLM candidates, {questions} questions)")
    weights, search = calibrate_score_weights(meter, n_layers, n_visual, settings)
    pre_llm, pre_search = calibrate_pre_llm_weights(meter, n_layers, n_visual, settings, weights)
    report(f"score weights {weights}, before layer 0 {pre_llm} after {time.time() - t0:.0f} s")
    return weights, search, pre_llm, pre_search


def profile_model(
    model, batches: Sequence[CalibrationBatch], quant: QuantConfig, *, model_id: str, model_hash: str,
    data_version: str, settings: ProfileSettings | None = None, output: str | Path | None = None,
    resume: bool | str = False, extra_settings: dict | None = None, teacher: Sequence[torch.Tensor] | None = None,
) -> Profile | None:
    """Profile an (already quantized) VLM on calibration ``batches`` (teacher-forced answers). With ``teacher``
    (the full-precision model's answers, :func:`quota.profiling.sensitivity.teacher_answers`) the profile also
    has the ``kl_teacher`` curve, and ``extra.teacher`` says what quantization alone costs against it. Returns the
    Profile on rank 0 (``None`` on other ranks); with ``output`` it is written there atomically, and per-rank
    partial results next to it, each with the run's settings record (:func:`settings_record`, plus the data
    digest and the chosen score weights), allow ``resume``: ``True``/``"strict"`` reuses the partial results
    of the very same settings and raises :class:`quota.atomic.ResumeMismatchError` on any other (before the
    score weights are calibrated); ``"recompute"`` discards those of other settings."""
    settings = settings or ProfileSettings()
    start = time.time()
    device = next(model.parameters()).device
    spec = spec_for(model)
    text_config = spec.text_config_of(model)
    n_layers = len(spec.layers_of(model))
    n_visual = reference_visual_tokens(model, batches)
    grid = default_grid(n_visual, settings.grid_steps)
    stem = Path(output).with_suffix("") if output is not None else None
    record = settings_record(model_id=model_id, model_hash=model_hash, quant=quant, data_version=data_version,
                             questions=sum(len(b.tasks) for b in batches), n_visual=n_visual, settings=settings,
                             device=device,
                             extra={**(extra_settings or {}), **({"teacher": True} if teacher is not None else {})})
    record["data_digest"] = batches_digest(batches)
    if stem is not None:
        check_partials(stem, record, resume)  # refuse now rather than after calibrating the score weights

    meter = DamageMeter(model, batches, dict(settings.score_candidates[0]), impl=settings.impl,
                        reference_tokens=n_visual, teacher=teacher)
    t0 = time.time()
    weights, search, pre_llm, pre_search = calibrate_stages(meter, n_layers, n_visual, settings,
                                                            sum(len(b.tasks) for b in batches))
    chosen, selection_search = calibrate_selection(meter, n_layers, n_visual, settings, weights, pre_llm)
    meter.scoring = ScoringSpec(weights, stage_weights={"pre_llm": pre_llm} if pre_llm else None,
                                selection=chosen["selection"], merge=int(chosen["merge"]),
                                merge_rule=chosen["merge_rule"])
    report(f"selection {chosen['selection']}, merging {chosen['merge']} tokens ({chosen['merge_rule']}); "
           f"measuring the grid")
    t_weights = time.time() - t0
    # ranks may autotune kernels differently (their rounding differs by far less); a broken reference differs by nats
    check_ranks_agree(reference_digest(meter.reference(n_visual, n_layers), meter.batches),
                      "the all-token reference (its answers' total log-likelihood)", rtol=1e-2)

    record["score_weights"] = dict(weights)
    if pre_llm is not None:
        record["pre_llm_weights"] = dict(pre_llm)
    if selection_search:
        record["selection"] = dict(chosen)
    runner = runner_of(stem, resume, record)
    t0 = time.time()
    grid_results = measure_grid(meter, n_layers, n_visual, grid, runner)
    t_grid = time.time() - t0
    t0 = time.time()  # every rank measures its share of the two-step schedules before the others return
    subgrid, measured_pairs = measure_interactions(
        meter, n_layers, n_visual, grid, settings.interaction_steps,
        runner_of(stem, resume or "recompute", record, "interaction schedules"))
    t_pairs = time.time() - t0
    if grid_results is None:  # not rank 0
        return None

    def curve(get) -> np.ndarray:
        from_layer = np.zeros((n_layers, len(grid)))
        for (layer, k), d in grid_results.items():
            from_layer[layer, grid.index(k)] = get(d)
        return from_layer

    kl_from, loss_from = curve(lambda d: d.kl), curve(lambda d: d.task_loss)
    with_teacher = all(d.kl_teacher is not None for d in grid_results.values())
    teacher_from = curve(lambda d: d.kl_teacher) if with_teacher else None
    pairs = interaction_record(kl_from, grid, subgrid, measured_pairs)
    tasks = sorted({t for d in grid_results.values() for t in d.per_task})
    per_task = {t: per_layer_contributions(curve(lambda d, t=t: d.per_task.get(t, 0.0))) for t in tasks}

    text_tokens = float(np.mean([(b.attention_mask.sum(1) - (batch_visual_tokens(b) or n_visual)).float().mean().item()
                                 for b in batches]))
    costs = analytic_costs(text_config, quant, grid, n_layers, text_tokens)
    t0 = time.time()
    if settings.latency:
        costs["latency"] = np.tile(layer_latency(model, spec, [int(k + text_tokens) for k in grid]), (n_layers, 1))
    t_latency = time.time() - t0
    prof = Profile(
        model_id=model_id, model_hash=model_hash, n_layers=n_layers, n_visual_tokens=n_visual, grid=tuple(grid),
        damage={"kl": per_layer_contributions(kl_from), "task_loss": per_layer_contributions(loss_from),
                **({"kl_teacher": per_layer_contributions(teacher_from)} if with_teacher else {})},
        per_task=per_task, costs=costs, score_weights=weights, score_search=search,
        pre_llm_weights=pre_llm or {}, pre_llm_search=pre_search, interactions=pairs and pairs["terms"],
        selection=chosen["selection"], merge=int(chosen["merge"]), selection_search=selection_search,
        merge_rule=chosen["merge_rule"],
        quant=quant.to_dict(),
        data_version=data_version,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu"),
        versions={"torch": torch.__version__, "transformers": transformers.__version__, "triton": triton.__version__,
                  "quota": __version__},
        timing={"total_s": round(time.time() - start, 1), "score_weights_s": round(t_weights, 1),
                "grid_s": round(t_grid, 1), "latency_s": round(t_latency, 1), "world_size": world()[1],
                "questions": sum(len(b.tasks) for b in batches),
                "schedules_measured": len(grid_results) + 1 + (pairs["count"] if pairs else 0),
                **({"interaction_s": round(t_pairs, 1), "interaction_schedules": pairs["count"]} if pairs else {}),
                **peak_memory(device)},
        extra={"kl_prune_from_layer": kl_from.tolist(), "task_loss_prune_from_layer": loss_from.tolist(),
               "text_tokens_mean": text_tokens, "additive_model": "h_l(k) = d_from(l, k) - d_from(l + 1, k)",
               "reference_check": meter.reference_check,
               **({"kl_teacher_prune_from_layer": teacher_from.tolist(),
                   "teacher": {"kl_all_tokens": float(np.concatenate(meter.teacher_gap()).mean()),
                               "meaning": "mean KL(full-precision answers || this model's all-token answers)"}}
                  if with_teacher else {}),
               **(pairs["extra"] if pairs else {})},
    )
    if output is not None:
        prof.save(output)
        clear_partials(stem)
    return prof


def runner_of(stem: Path | None, resume: bool | str, record: dict, label: str = "grid items"):
    """``run_items(items, compute)`` for :func:`measure_grid`/:func:`measure_pairs`: :func:`run_sharded` with the
    partial files of ``stem`` and the settings ``record``, reporting progress as ``label``; ``None`` without a
    ``stem`` (one process, no partial files)."""
    if stem is None:
        return None
    on_item = progress_reporter(label)
    return lambda items, fn: run_sharded(items, fn, stem, resume, on_item, record)


INTERACTION_MODEL = ("J[l, a, b] = D(N before l, grid[a] at l, grid[b] from l + 1) - (h_l(grid[a]) + "
                     "d_from(l + 1, grid[b])), KL only, measured at the subgrid, bilinear between, 0 where a <= b")


def measure_interactions(meter: DamageMeter, n_layers: int, n_visual: int, grid: Sequence[int], steps: int | None,
                         run_items) -> tuple[tuple[int, ...], dict | None]:
    """``(subgrid, {(layer, a, b): damage})`` of the two-step schedules of the interaction subgrid
    (:func:`quota.profiling.sensitivity.interaction_subgrid`, :func:`measure_pairs`); ``((), None)`` when
    ``steps`` is ``None``, and the measurements are ``None`` on ranks other than 0. ``run_items`` shares the
    schedules out like the grid's (every rank must call this)."""
    if steps is None:
        return (), None
    subgrid = interaction_subgrid(len(grid), steps)
    report(f"measuring interaction terms on the subgrid {[grid[i] for i in subgrid]}")
    return subgrid, measure_pairs(meter, n_layers, n_visual, grid, subgrid, run_items)


def interaction_record(kl_from: np.ndarray, grid: Sequence[int], subgrid: Sequence[int],
                       measured: dict | None) -> dict | None:
    """``{"terms": [L-1, G, G], "count": schedules measured, "extra": the profile's extra fields}`` from the
    measured two-step schedules and the prune-from-layer KL ``kl_from`` (:func:`interaction_terms`); ``None``
    without measurements."""
    if measured is None:
        return None
    terms = interaction_terms(kl_from, {key: d.kl for key, d in measured.items()}, subgrid)
    extra = {"interaction_subgrid": [int(grid[i]) for i in subgrid], "interaction_model": INTERACTION_MODEL,
             "kl_two_step": [[layer, int(grid[a]), int(grid[b]), d.kl] for (layer, a, b), d in measured.items()]}
    return {"terms": terms, "count": len(measured), "extra": extra}


@torch.no_grad()
def layer_latency(model, spec, seq_lens: Sequence[int]) -> np.ndarray:
    """Median seconds of one (the middle) decoder layer's forward at each sequence length, batch 1."""
    layers = spec.layers_of(model)
    layer = layers[len(layers) // 2]
    lm = spec.language_model_of(model)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    d = spec.text_config_of(model).hidden_size
    inputs = {}

    def run(s: int) -> None:
        if s not in inputs:
            h = torch.randn(1, s, d, device=device, dtype=dtype)
            pos = torch.arange(s, device=device)[None]
            inputs[s] = (h, pos, lm.rotary_emb(h, pos))
        h, pos, rope = inputs[s]
        layer(h, attention_mask=None, position_ids=pos, position_embeddings=rope)

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return measure_latency(run, seq_lens, repeats=20 if device.type == "cuda" else 3, warmup=2, synchronize=sync)
