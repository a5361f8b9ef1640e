"""Stage-wise pruning baselines as :class:`~quota.recipe.PruningPlan` presets.

Each preset maps an equivalent-token budget ``tokens`` (the mean over layers of ``k_l``, e.g. 64, 128
or 192 of ``N = 576``) to its own schedule and scoring; the same :class:`~quota.runtime.generate.PrunedRunner`
executes all of them, in full precision or on top of a quantized model. The schedules' mean matches
``tokens`` within one token (integer keep counts); a budget a preset cannot reach raises
:class:`~quota.schedule.ScheduleError` with the least (or most) it can do.

- ``fastv``: all ``N`` tokens in layers ``< K`` (``K = 2``), then ``R`` tokens from layer ``K`` on, ranked
  by the attention of the last token in layer ``K - 1``. ``form="mean"`` (default) picks ``R`` so that
  the mean over layers equals the budget; ``form="keep"`` is the paper's "keep R" form with ``R = tokens``
  (its mean is then above the budget).
- ``pyramiddrop``: all tokens before layer ``first`` (2), then a drop at each of ``stages`` (4) evenly
  spaced boundaries, keeping ``N * lam^i`` after the ``i``-th; ``lam`` is solved to meet the budget (the
  paper fixes ``lam = 0.5`` and moves the boundaries instead). Ranked by the last instruction token's
  attention (the last prompt token).
- ``sparsevlm``: text-guided pruning at layers 2, 6 and 15 of 32 (scaled to the model's depth) with
  geometric keep counts solved to meet the budget, ranked by the mean attention of the text tokens after
  the image. At each of those points the most relevant of the dropped tokens are recycled (SparseVLM's token
  recycling, :mod:`quota.runtime.recycle`: the top 30% of the dropped tokens by that score, clustered by DPC-KNN
  into about one token per 10, each its cluster's mean); unlike SparseVLM, the recycled tokens count in the keep
  count, so the budget holds.
- ``sparsevlm_norecycle``: the ablation without recycling (the dropped tokens are lost).
- ``visionzip``: selection before the language model by the vision tower's attention (CLS query, or mean
  attention received), ``round(tokens)`` tokens in every layer, of which ``c`` are contextual tokens merging
  the dropped ones (:mod:`quota.kernels.token_merge`) and the rest dominant tokens. ``c`` follows VisionZip's
  published split for LLaVA-1.5 (dominant + contextual: 54 + 10 at 64 tokens, 108 + 20 at 128, 162 + 30 at
  192), i.e. ``c = round(tokens * 10 / 64)``, at least 1 when ``tokens >= 2``. Unlike VisionZip, which merges in
  the vision tower by its keys and puts the contextual tokens after the dominant ones, the merge runs on the
  projected image features (cosine of hidden states) and each contextual token sits at its target's place.
- ``visionzip_nomerge``: the ablation without contextual tokens, ``round(tokens)`` dominant tokens.
- ``divprune``: DivPrune-style max-min diversity selection (:func:`quota.runtime.diversity.divprune_select`)
  before the language model, ``round(tokens)`` tokens in every layer, seeded with the best token by
  ``relevance`` (``vision_attn``; ``magnitude`` for a model whose vision attention quota cannot read, chosen by
  :func:`baseline_plan_for`).
- ``cdpruner``: CDPruner-style conditional-DPP selection (:func:`quota.runtime.diversity.cdpruner_select`)
  before the language model, ``round(tokens)`` tokens in every layer. CDPruner's relevance is the similarity
  of each image token to the instruction (text encoder); before layer 0 quota uses the in-LLM-free
  ``relevance`` signal instead (as for ``divprune``).
- ``random``: ``round(tokens)`` tokens in every layer, chosen by seeded random scores before layer 0.
"""

from __future__ import annotations

from typing import Callable, Sequence

from quota.models.registry import spec_for
from quota.recipe import PruningPlan, ScoringSpec
from quota.runtime.vision import expected_visual_tokens, vision_attention_unsupported
from quota.schedule import ScheduleError

SPARSEVLM_LAYERS_OF_32 = (2, 6, 15)
VISIONZIP_SPLIT = (54, 10)  # VisionZip's dominant + contextual at 64 tokens on LLaVA-1.5 (same ratio at 128, 192)
DIVERSITY_PRESETS = ("divprune", "cdpruner")


def _check(tokens: float, n_visual: int, num_layers: int) -> None:
    if n_visual < 1 or num_layers < 1:
        raise ScheduleError(f"need n_visual >= 1 and num_layers >= 1, got {n_visual}, {num_layers}")
    if not 0 <= tokens <= n_visual:
        raise ScheduleError(f"a budget of {tokens} equivalent tokens is outside [0, N={n_visual}]")


def _flat(tokens: float, n_visual: int, num_layers: int) -> tuple[int, ...]:
    return (min(int(round(tokens)), n_visual),) * num_layers


def _stage_schedule(n_visual: int, num_layers: int, boundaries: Sequence[int], lam: float) -> tuple[int, ...]:
    """``N`` before ``boundaries[0]``, ``round(N * lam^i)`` from ``boundaries[i-1]`` on (non-increasing)."""
    out, keep = [], n_visual
    for l in range(num_layers):
        i = sum(1 for b in boundaries if b <= l)
        keep = min(keep, int(round(n_visual * lam**i)))
        out.append(keep)
    return tuple(out)


def _solve_ratio(
    tokens: float, n_visual: int, num_layers: int, boundaries: Sequence[int], name: str
) -> tuple[int, ...]:
    """The geometric stage schedule whose mean is closest to ``tokens`` (bisection on the ratio)."""
    lo_sched = _stage_schedule(n_visual, num_layers, boundaries, 0.0)
    least = sum(lo_sched) / num_layers
    if tokens < least - 0.5:
        raise ScheduleError(
            f"{name}: {tokens} equivalent tokens is below the least this schedule reaches ({least:.1f}, "
            f"all {n_visual} tokens before layer {boundaries[0]}); move the first boundary earlier"
        )
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        mean = sum(_stage_schedule(n_visual, num_layers, boundaries, mid)) / num_layers
        lo, hi = (mid, hi) if mean < tokens else (lo, mid)
    best = min(
        (_stage_schedule(n_visual, num_layers, boundaries, r) for r in (lo, hi)),
        key=lambda s: abs(sum(s) / num_layers - tokens),
    )
    return best


def fastv(tokens: float, n_visual: int, num_layers: int, k_layer: int = 2, form: str = "mean") -> PruningPlan:
    """FastV: all tokens before layer ``k_layer``, ``R`` after, by the last token's attention."""
    _check(tokens, n_visual, num_layers)
    if not 1 <= k_layer < num_layers:
        raise ScheduleError(f"fastv: k_layer must lie in [1, {num_layers - 1}], got {k_layer}")
    if form == "mean":
        r = round((num_layers * tokens - k_layer * n_visual) / (num_layers - k_layer))
        if r < 0:
            least = k_layer * n_visual / num_layers
            raise ScheduleError(
                f"fastv: {tokens} equivalent tokens is below the least with K={k_layer} ({least:.1f}); "
                f"use a smaller k_layer or form='keep'"
            )
    elif form == "keep":
        r = int(round(tokens))
    else:
        raise ValueError(f"fastv: form must be 'mean' or 'keep', got {form!r}")
    schedule = (n_visual,) * k_layer + (min(r, n_visual),) * (num_layers - k_layer)
    return PruningPlan("fastv", schedule, ScoringSpec({"attn_last": 1.0}),
                       f"K={k_layer}, R={min(r, n_visual)}, form={form}")


def pyramiddrop(tokens: float, n_visual: int, num_layers: int, stages: int = 4, first: int = 2) -> PruningPlan:
    """PyramidDrop: geometric drops at ``stages`` boundaries from layer ``first``, by the last token's attention."""
    _check(tokens, n_visual, num_layers)
    if not 1 <= first < num_layers or stages < 1:
        raise ScheduleError(f"pyramiddrop: need 1 <= first < {num_layers} and stages >= 1, got {first}, {stages}")
    span = num_layers - first
    boundaries = sorted({first + round(i * span / stages) for i in range(stages)})
    schedule = _solve_ratio(tokens, n_visual, num_layers, boundaries, "pyramiddrop")
    return PruningPlan("pyramiddrop", schedule, ScoringSpec({"attn_last": 1.0}), f"boundaries={boundaries}")


def sparsevlm(tokens: float, n_visual: int, num_layers: int, layers: Sequence[int] | None = None) -> PruningPlan:
    """SparseVLM-style text-guided pruning at a few layers, by the text tokens' attention."""
    _check(tokens, n_visual, num_layers)
    if layers is None:
        layers = [max(1, round(b * num_layers / 32)) for b in SPARSEVLM_LAYERS_OF_32]
    boundaries = sorted({min(max(int(b), 1), num_layers - 1) for b in layers})
    schedule = _solve_ratio(tokens, n_visual, num_layers, boundaries, "sparsevlm")
    # merge caps the recycled tokens per point; n_visual leaves SparseVLM's own count (recycle_count) in charge
    return PruningPlan("sparsevlm", schedule, ScoringSpec({"attn_text": 1.0}, merge=n_visual, merge_rule="recycle"),
                       f"layers={boundaries}; token recycling")


def sparsevlm_norecycle(tokens: float, n_visual: int, num_layers: int,
                        layers: Sequence[int] | None = None) -> PruningPlan:
    """:func:`sparsevlm` without token recycling (the ablation)."""
    plan = sparsevlm(tokens, n_visual, num_layers, layers)
    return PruningPlan("sparsevlm_norecycle", plan.schedule, ScoringSpec({"attn_text": 1.0}),
                       plan.notes.replace("token recycling", "no recycling"))


def visionzip_contextual(keep: int) -> int:
    """Contextual tokens of VisionZip's split for ``keep`` tokens: ``round(keep * 10 / 64)``, at least 1 when
    ``keep >= 2`` (so a small budget still merges), never more than ``keep - 1``."""
    dominant, contextual = VISIONZIP_SPLIT
    c = int(round(keep * contextual / (dominant + contextual)))
    return max(min(c, keep - 1), 1 if keep >= 2 else 0)


def visionzip(tokens: float, n_visual: int, num_layers: int, contextual: int | None = None) -> PruningPlan:
    """VisionZip-style: dominant tokens by vision-tower attention plus ``contextual`` merged tokens (default
    :func:`visionzip_contextual`), selected before the language model."""
    _check(tokens, n_visual, num_layers)
    schedule = _flat(tokens, n_visual, num_layers)
    c = visionzip_contextual(schedule[0]) if contextual is None else int(contextual)
    if not 0 <= c <= schedule[0]:
        raise ScheduleError(f"visionzip: contextual must lie in [0, {schedule[0]}], got {c}")
    return PruningPlan("visionzip", schedule, ScoringSpec({"vision_attn": 1.0}, merge=c),
                       f"dominant {schedule[0] - c} + contextual {c} (merged)")


def visionzip_nomerge(tokens: float, n_visual: int, num_layers: int) -> PruningPlan:
    """VisionZip-style dominant tokens only (the ablation without contextual tokens)."""
    _check(tokens, n_visual, num_layers)
    return PruningPlan("visionzip_nomerge", _flat(tokens, n_visual, num_layers), ScoringSpec({"vision_attn": 1.0}),
                       "dominant tokens only; contextual merged tokens omitted")


def divprune(tokens: float, n_visual: int, num_layers: int, relevance: str = "vision_attn") -> PruningPlan:
    """DivPrune-style max-min diversity before the language model, seeded with the best ``relevance`` token."""
    _check(tokens, n_visual, num_layers)
    return PruningPlan("divprune", _flat(tokens, n_visual, num_layers),
                       ScoringSpec({relevance: 1.0}, selection="divprune"), f"seed by {relevance}")


def cdpruner(tokens: float, n_visual: int, num_layers: int, relevance: str = "vision_attn") -> PruningPlan:
    """CDPruner-style conditional DPP before the language model, relevance from the ``relevance`` signal."""
    _check(tokens, n_visual, num_layers)
    return PruningPlan("cdpruner", _flat(tokens, n_visual, num_layers),
                       ScoringSpec({relevance: 1.0}, selection="cdpruner"),
                       f"relevance {relevance} (instruction relevance not available before layer 0)")


def random_plan(tokens: float, n_visual: int, num_layers: int, seed: int = 0) -> PruningPlan:
    """Seeded random selection before layer 0, the same tokens in every layer."""
    _check(tokens, n_visual, num_layers)
    return PruningPlan("random", _flat(tokens, n_visual, num_layers), ScoringSpec({"random": 1.0}, seed=seed),
                       f"seed={seed}")


BASELINES: dict[str, Callable[..., PruningPlan]] = {
    "fastv": fastv,
    "pyramiddrop": pyramiddrop,
    "sparsevlm": sparsevlm,
    "sparsevlm_norecycle": sparsevlm_norecycle,
    "visionzip": visionzip,
    "visionzip_nomerge": visionzip_nomerge,
    "divprune": divprune,
    "cdpruner": cdpruner,
    "random": random_plan,
}


def baseline_plan(name: str, tokens: float, n_visual: int, num_layers: int, **options) -> PruningPlan:
    """The plan of baseline ``name`` (a key of :data:`BASELINES`) for ``tokens`` equivalent tokens."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}")
    return BASELINES[name](tokens, n_visual, num_layers, **options)


def baseline_plan_for(model, name: str, tokens: float, **options) -> PruningPlan:
    """The plan of baseline ``name`` at ``tokens`` equivalent tokens, sized to ``model``'s layers and visual
    tokens (run it with ``apply(model, Recipe.from_plan(plan, n_visual_tokens))``). The diversity presets
    (``divprune``, ``cdpruner``) take ``magnitude`` as their relevance when the model's vision attention cannot
    be read (:func:`~quota.runtime.vision.vision_attention_unsupported`), unless ``relevance`` is given."""
    spec = spec_for(model)
    n_layers = len(spec.layers_of(model))
    if name in DIVERSITY_PRESETS and "relevance" not in options and vision_attention_unsupported(model, spec):
        options = {**options, "relevance": "magnitude"}
    return baseline_plan(name, float(tokens), expected_visual_tokens(model), n_layers, **options)
