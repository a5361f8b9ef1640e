"""Recipe: the frozen output of profiling and solving, and the one contract the runtime applies.

A recipe is a versioned, content-hashed JSON document (:mod:`quota.versioned`): the per-layer visual-token
schedule, the scoring that picks the tokens (:class:`ScoringSpec`: weights, per-stage weights, normalization,
seed, selection rule, merging), the quantization config, how the schedule was obtained (budget, solver, status,
gap, time) and what it was measured on (model id and hash, data version, library versions). Saving is atomic. Loading validates every
field and names the one that is wrong (``schedule[29]``, ``scoring.weights.attn_last``); it refuses an
unknown version, a tampered file (hash mismatch) and, when a model is given, a recipe made for another model.

Version 3 adds per-layer precision (``layer_precision``: one option name of :data:`quota.quant.precision.PRECISIONS`
per decoder layer; ``layer_kv_bits``: KV bits per layer) and the joint budgets (``budgets``: cost kind -> fraction of
the all-bf16, all-tokens cost) of a recipe solved over (precision x keep count), each written only when set; version
2 files (without them) still load. :attr:`Recipe.quant_config` builds the QuantConfig with the recipe's per-layer
precision, so everything that applies a recipe's config honours it.
Version 1 files (``schema``/``schema_version`` keys, a flat ``score_weights`` field) still load.
:class:`PruningPlan` is the part of a recipe the runtime executes (a schedule and its scoring); the
stage-wise baselines are plans too, and :meth:`Recipe.from_plan` makes a recipe of one.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from quota.atomic import write_json_atomic
from quota.quant.config import QuantConfig
from quota.schedule import (
    ScheduleError, check_budget, check_budget_kind, check_schedule, equivalent_tokens, is_full,
)
from quota.signals import MERGE_RULES, NORMALIZATIONS, SELECTIONS, SIGNALS, available_signals
from quota.versioned import VersionError, read_json, stamp, type_of, unstamp

RECIPE_TYPE = "quota.recipe"
RECIPE_VERSION = 3
READ_VERSIONS = (1, 2, 3)  # 1: a flat ``score_weights`` field instead of ``scoring``; 3: per-layer precision
V3_FIELDS = ("layer_precision", "layer_kv_bits", "budgets")
JOINT_BUDGET_KINDS = ("tokens", "ttft", "decode", "weight_bytes", "kv_bytes", "flops")
"""Cost kinds of a joint recipe's ``budgets`` (those of :data:`quota.solvers.JOINT_COST_KINDS`)."""


class RecipeError(ValueError):
    """A recipe is malformed, of an unknown version, tampered with, or made for another model."""


STAGES: dict[str, str] = {
    "pre_llm": "the pruning point before decoder layer 0 (embedding-level signals and the vision tower's)",
    "in_llm": "every pruning point before a decoder layer l >= 1 (the language model's signals too)",
}


# ------------------------------------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class ScoringSpec:
    """How token scores are formed, and the tokens chosen, at every pruning point.

    ``weights`` maps signal names (:data:`quota.signals.SIGNALS`) to finite non-negative weights, at least one
    of them positive; a larger weighted signal makes a token more likely to be kept. ``normalize`` is applied
    per sample over the alive visual tokens before weighting (``"minmax"`` or ``"rank"``). ``seed`` drives the
    ``random`` signal. ``selection`` is the rule that picks the kept tokens from the combined scores
    (:data:`quota.signals.SELECTIONS`: ``"topk"``, ``"divprune"``, ``"cdpruner"``). ``merge`` = ``c`` >= 0: the
    dropped tokens are merged into ``min(c, k_l)`` contextual tokens that count in the keep count ``k_l``
    (:func:`quota.runtime.prune.prune`) by ``merge_rule`` (:data:`quota.signals.MERGE_RULES`): ``"context"``
    (VisionZip's contextual tokens, the default) or ``"recycle"`` (SparseVLM's recycling, where ``c`` caps the
    count the rule takes at each point, :func:`quota.runtime.recycle.recycle_count`). Raises :class:`RecipeError` naming the bad field
    (``scoring.weights.attn_last``, ``scoring.selection``).

    ``stage_weights``: per pruning stage (:data:`STAGES`: ``"pre_llm"`` before decoder layer 0, ``"in_llm"``
    before any later layer), signal -> weight, overriding ``weights`` at the points of that stage
    (:meth:`weights_at`); each stage's weights are checked like ``weights`` and may name only the signals that
    exist at that stage (``scoring.stage_weights.pre_llm.attn_last``). ``None`` (or empty): ``weights`` everywhere.

    JSON: ``{"weights": {...}, "normalize": "minmax", "seed": 0}``, plus ``"selection"``, ``"merge"``,
    ``"stage_weights"`` and ``"merge_rule"`` only when they are not the defaults (``"topk"``, ``0``, none,
    ``"context"``), so a top-k recipe with one
    weighting is written, and hashed, as before.
    """

    weights: Mapping[str, float] = field(default_factory=lambda: {"attn_last": 1.0})
    normalize: str = "minmax"
    seed: int = 0
    selection: str = "topk"
    merge: int = 0
    stage_weights: Mapping[str, Mapping[str, float]] | None = None
    merge_rule: str = "context"

    def __post_init__(self) -> None:
        weights = check_weights(self.weights, "scoring.weights")
        if self.normalize not in NORMALIZATIONS:
            raise RecipeError(f"scoring.normalize = {self.normalize!r}; choose one of {NORMALIZATIONS}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise RecipeError(f"scoring.seed = {self.seed!r} must be an integer")
        if not isinstance(self.selection, str) or self.selection not in SELECTIONS:
            raise RecipeError(f"scoring.selection = {self.selection!r}; choose one of {list(SELECTIONS)}")
        if isinstance(self.merge, bool) or not isinstance(self.merge, numbers.Integral) or self.merge < 0:
            raise RecipeError(f"scoring.merge = {self.merge!r} must be an integer >= 0 (contextual tokens)")
        if not isinstance(self.merge_rule, str) or self.merge_rule not in MERGE_RULES:
            raise RecipeError(f"scoring.merge_rule = {self.merge_rule!r}; choose one of {list(MERGE_RULES)}")
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "merge", int(self.merge))
        object.__setattr__(self, "stage_weights", check_stage_weights(self.stage_weights))

    @property
    def active(self) -> dict[str, float]:
        """The signals with a non-zero weight in ``weights`` (the weighting of the stages without their own)."""
        return {k: w for k, w in self.weights.items() if w != 0.0}

    def weights_at(self, layer: int) -> dict[str, float]:
        """The weights of a pruning point before decoder layer ``layer``: its stage's (:func:`stage_of`) when
        ``stage_weights`` has them, else ``weights``; zero weights left out."""
        weights = (self.stage_weights or {}).get(stage_of(layer), self.weights)
        return {k: w for k, w in weights.items() if w != 0.0}

    @property
    def signals_used(self) -> set[str]:
        """Every signal with a non-zero weight at some stage."""
        used = set(self.active)
        for weights in (self.stage_weights or {}).values():
            used |= {k for k, w in weights.items() if w != 0.0}
        return used

    def check_pruning_points(self, schedule: tuple[int, ...], n_visual: int) -> None:
        """Refuse a schedule that prunes before a layer where none of the weighted signals exists (before
        layer 0 the language model's attention does not exist yet)."""
        previous = n_visual
        for layer, k in enumerate(schedule):
            weighted = self.weights_at(layer)
            if k < previous and not set(weighted) & set(available_signals(layer)):
                raise RecipeError(
                    f"schedule[{layer}] = {k} prunes before layer {layer}, where none of the weighted signals "
                    f"{sorted(weighted)} exists (available there: {list(available_signals(layer))})"
                )
            previous = k

    def to_dict(self) -> dict[str, Any]:
        """The JSON object; ``selection``, ``merge``, ``stage_weights`` and ``merge_rule`` only when not the
        defaults (what readers before them read)."""
        out: dict[str, Any] = {"weights": dict(self.weights), "normalize": self.normalize, "seed": self.seed}
        if self.selection != "topk":
            out["selection"] = self.selection
        if self.merge:
            out["merge"] = self.merge
        if self.stage_weights:
            out["stage_weights"] = {stage: dict(w) for stage, w in self.stage_weights.items()}
        if self.merge_rule != "context":
            out["merge_rule"] = self.merge_rule
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "ScoringSpec":
        if not isinstance(data, Mapping):
            raise RecipeError(f"scoring must be an object with weights, normalize and seed, got {data!r}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise RecipeError(f"scoring: unknown field(s) {unknown}; known: {', '.join(known)}")
        return cls(**data)


def stage_of(layer: int) -> str:
    """The pruning stage of a point before decoder layer ``layer``: ``"pre_llm"`` for layer 0, else ``"in_llm"``."""
    return "pre_llm" if layer == 0 else "in_llm"


def stage_signals(stage: str) -> tuple[str, ...]:
    """The signals that exist at every pruning point of ``stage`` (:data:`STAGES`)."""
    return available_signals(0 if stage == "pre_llm" else 1)


def check_weights(weights: Any, where: str) -> dict[str, float]:
    """``weights`` (signal -> weight) as a dict of floats: known signals, finite non-negative weights, at least one
    positive; else :class:`RecipeError` naming ``where.<signal>``."""
    if not isinstance(weights, Mapping):
        raise RecipeError(f"{where} must be an object of signal -> weight, got {weights!r}")
    out = {}
    for name, w in weights.items():
        if name not in SIGNALS:
            raise RecipeError(f"{where}.{name}: unknown score signal; known signals: {list(SIGNALS)}")
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
            raise RecipeError(f"{where}.{name} = {w!r} must be a finite non-negative number")
        out[str(name)] = float(w)
    if not any(w > 0 for w in out.values()):
        raise RecipeError(f"{where} needs at least one positive weight, got {out}")
    return out


def check_stage_weights(stage_weights: Any) -> dict[str, dict[str, float]] | None:
    """``stage_weights`` checked stage by stage (:data:`STAGES`; each stage's weights by :func:`check_weights`,
    naming only signals of :func:`stage_signals`), ``None`` when absent or empty; else :class:`RecipeError`
    naming ``scoring.stage_weights.<stage>[.<signal>]``."""
    if stage_weights is None:
        return None
    if not isinstance(stage_weights, Mapping):
        raise RecipeError(f"scoring.stage_weights must be an object of stage -> weights, got {stage_weights!r}")
    out = {}
    for stage, weights in stage_weights.items():
        where = f"scoring.stage_weights.{stage}"
        if stage not in STAGES:
            raise RecipeError(f"{where}: unknown pruning stage; known stages: {list(STAGES)}")
        checked = check_weights(weights, where)
        for name in checked:
            if name not in stage_signals(stage):
                raise RecipeError(f"{where}.{name}: the signal does not exist at stage {stage} "
                                  f"(available there: {list(stage_signals(stage))})")
        out[stage] = checked
    return {stage: out[stage] for stage in STAGES if stage in out} or None


@dataclass(frozen=True)
class PruningPlan:
    """A schedule and its scoring, executed by :class:`quota.runtime.generate.PrunedRunner`."""

    name: str
    schedule: tuple[int, ...]
    scoring: ScoringSpec = field(default_factory=ScoringSpec)
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", check_schedule(self.schedule))

    @property
    def equivalent_tokens(self) -> float:
        return equivalent_tokens(self.schedule)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "schedule": list(self.schedule), "scoring": self.scoring.to_dict(),
                "notes": self.notes}


# ------------------------------------------------------------------------------------------------- recipe


@dataclass(frozen=True)
class Recipe:
    """What the runtime needs (``schedule``, ``scoring``, ``quant``) and how it was obtained.

    ``quant`` is a :meth:`QuantConfig.to_dict` dict, or ``None`` for a model left in full precision."""

    model_id: str
    model_hash: str
    n_layers: int
    n_visual_tokens: int
    schedule: tuple[int, ...]
    scoring: ScoringSpec
    quant: dict[str, Any] | None
    budget_kind: str = "tokens"
    budget: float = 1.0
    solver: dict[str, Any] = field(default_factory=dict)  # name, status, objective, bound, gap, seconds
    data_version: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    quota_version: str = ""
    layer_precision: tuple[str, ...] | None = None
    layer_kv_bits: tuple[int, ...] | None = None
    budgets: dict[str, float] | None = None

    def __post_init__(self) -> None:
        for name in ("model_id", "model_hash", "data_version", "quota_version"):
            if not isinstance(getattr(self, name), str):
                raise RecipeError(f"{name} = {getattr(self, name)!r} must be a string")
        for name in ("n_layers", "n_visual_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise RecipeError(f"{name} = {value!r} must be a positive integer")
        try:
            schedule = check_schedule(self.schedule, self.n_layers, self.n_visual_tokens)
            check_budget_kind(self.budget_kind)
            check_budget(self.budget)
        except ValueError as err:
            raise RecipeError(str(err)) from None
        object.__setattr__(self, "schedule", schedule)
        scoring = self.scoring if isinstance(self.scoring, ScoringSpec) else ScoringSpec.from_dict(self.scoring)
        scoring.check_pruning_points(schedule, self.n_visual_tokens)
        object.__setattr__(self, "scoring", scoring)
        if self.quant is not None:
            quant = self.quant.to_dict() if isinstance(self.quant, QuantConfig) else self.quant
            try:
                QuantConfig.from_dict(quant)
            except (TypeError, ValueError) as err:
                raise RecipeError(f"quant: {err}") from None
            object.__setattr__(self, "quant", dict(quant))
        for name in ("solver", "versions"):
            if not isinstance(getattr(self, name), dict):
                raise RecipeError(f"{name} must be an object, got {getattr(self, name)!r}")
        self._check_precision()

    def _check_precision(self) -> None:
        """Validate ``layer_precision``, ``layer_kv_bits`` and ``budgets`` (the version 3 fields)."""
        for name in ("layer_precision", "layer_kv_bits"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise RecipeError(f"{name} must be a list with one entry per decoder layer, got {value!r}")
            if len(value) != self.n_layers:
                raise RecipeError(f"{name} has {len(value)} entries for {self.n_layers} decoder layers")
            object.__setattr__(self, name, tuple(value))
        if self.layer_precision is not None or self.layer_kv_bits is not None:
            if self.quant is None:
                raise RecipeError("layer_precision/layer_kv_bits need a base quant config (quant is null)")
            try:
                config = QuantConfig.from_dict(self.quant)
                mine = config.replace(layer_precision=self.layer_precision or config.layer_precision,
                                      layer_kv_bits=self.layer_kv_bits or config.layer_kv_bits)
            except (TypeError, ValueError) as err:
                raise RecipeError(str(err)) from None
            for name in ("layer_precision", "layer_kv_bits"):
                theirs = getattr(config, name)
                if getattr(self, name) is not None and theirs is not None and tuple(theirs) != getattr(mine, name):
                    raise RecipeError(f"{name} differs from quant.{name}: {list(getattr(mine, name))} against "
                                      f"{list(theirs)}")
        if self.budgets is not None:
            if not isinstance(self.budgets, Mapping) or not self.budgets:
                raise RecipeError(f"budgets must be an object of cost kind -> fraction, got {self.budgets!r}")
            for kind, value in self.budgets.items():
                if kind not in JOINT_BUDGET_KINDS:
                    raise RecipeError(f"budgets.{kind}: unknown cost kind; choose among {list(JOINT_BUDGET_KINDS)}")
                if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                        or value <= 0:
                    raise RecipeError(f"budgets.{kind} = {value!r} must be a positive fraction")
            object.__setattr__(self, "budgets", {k: float(v) for k, v in self.budgets.items()})

    # -- what the runtime reads

    @property
    def quant_config(self) -> QuantConfig | None:
        """The quantization config, or ``None`` for full precision; with ``layer_precision``/``layer_kv_bits`` they
        are the config's per-layer fields (:meth:`with_precision`)."""
        return None if self.quant is None else self.with_precision(QuantConfig.from_dict(self.quant))

    def with_precision(self, config: QuantConfig) -> QuantConfig:
        """``config`` with this recipe's per-layer precision and KV bits, where the recipe has them and ``config``
        has none of its own (a config given on the command line keeps its own per-layer fields)."""
        changes = {}
        if self.layer_precision is not None and config.layer_precision is None:
            changes["layer_precision"] = self.layer_precision
        if self.layer_kv_bits is not None and config.layer_kv_bits is None:
            changes["layer_kv_bits"] = self.layer_kv_bits
        return config.replace(**changes) if changes else config

    @property
    def is_joint(self) -> bool:
        """Whether the recipe records per-layer precision (a version 3 recipe)."""
        return self.layer_precision is not None or self.layer_kv_bits is not None or self.budgets is not None

    @property
    def equivalent_tokens(self) -> float:
        """Mean over layers of the visual tokens kept (the budget convention of SparseVLM/PyramidDrop tables)."""
        return equivalent_tokens(self.schedule)

    @property
    def prunes(self) -> bool:
        return not is_full(self.schedule, self.n_visual_tokens)

    @property
    def plan(self) -> PruningPlan:
        return PruningPlan(self.model_id, self.schedule, self.scoring)

    @classmethod
    def from_plan(
        cls, plan: PruningPlan, n_visual_tokens: int, quant: QuantConfig | dict | None = None, model_id: str = "",
        model_hash: str = "",
    ) -> "Recipe":
        """A recipe that runs ``plan`` (a stage-wise baseline, say) under ``quant``; not solved, so it records
        no solver, and its token budget is the plan's equivalent tokens over ``n_visual_tokens``."""
        n_layers = len(plan.schedule)
        budget = max(plan.equivalent_tokens / n_visual_tokens, 1e-9)
        return cls(model_id=model_id or plan.name, model_hash=model_hash, n_layers=n_layers,
                   n_visual_tokens=n_visual_tokens, schedule=plan.schedule, scoring=plan.scoring,
                   quant=quant.to_dict() if isinstance(quant, QuantConfig) else quant, budget=min(budget, 1.0),
                   solver={"name": "plan", "plan": plan.name})

    # -- files

    def body(self) -> dict[str, Any]:
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        body["schedule"] = list(self.schedule)
        body["scoring"] = self.scoring.to_dict()
        for name in V3_FIELDS:  # written only when set, so a token-only recipe has the fields of version 2
            if body[name] is None:
                del body[name]
            elif name != "budgets":
                body[name] = list(body[name])
        return stamp(RECIPE_TYPE, RECIPE_VERSION, body)

    def content_hash(self) -> str:
        return content_hash(self.body())

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "content_hash": self.content_hash()}

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe") -> "Recipe":
        """A recipe from its JSON object. The ``content_hash``, when present, is checked against the object as
        stored, so a file of either version verifies; a missing hash is accepted (a recipe written by hand)."""
        try:
            version, body = unstamp(data, RECIPE_TYPE, READ_VERSIONS, source)
        except VersionError as err:
            raise RecipeError(str(err)) from None
        stored = body.pop("content_hash", None)
        if stored is not None and stored != content_hash({k: v for k, v in data.items() if k != "content_hash"}):
            raise RecipeError(f"{source}: content_hash does not match the contents (edited or corrupted file)")
        if version == 1 and "score_weights" in body:
            body["scoring"] = {"weights": body.pop("score_weights")}
        known = {f.name for f in fields(cls)} - (set() if version >= 3 else set(V3_FIELDS))
        unknown = sorted(set(body) - known)
        if unknown:
            raise RecipeError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(known)}")
        missing = sorted(f for f in ("model_id", "model_hash", "n_layers", "n_visual_tokens", "schedule",
                                     "scoring", "quant") if f not in body)
        if missing:
            raise RecipeError(f"{source}: missing field(s) {missing}")
        try:
            return cls(**body)
        except (RecipeError, ScheduleError, TypeError, ValueError) as err:
            raise RecipeError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: str | Path, model_id: str | None = None, model_hash: str | None = None) -> "Recipe":
        """Read a recipe; with ``model_id``/``model_hash``, refuse one made for another model."""
        path = Path(path)
        recipe = cls.from_dict(read_json(path, "recipe", RecipeError), str(path))
        if model_id is not None and recipe.model_id != model_id:
            raise RecipeError(f"{path}: recipe is for model {recipe.model_id!r}, not {model_id!r}")
        if model_hash is not None and recipe.model_hash != model_hash:
            raise RecipeError(
                f"{path}: recipe was made for {recipe.model_id} with hash {recipe.model_hash[:12]}, "
                f"but this model's hash is {model_hash[:12]} (different weights)"
            )
        return recipe


def content_hash(data: dict[str, Any]) -> str:
    """sha256 of a JSON object (keys sorted), as stored in ``content_hash``."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def is_recipe(data: Any) -> bool:
    """True when a JSON object names itself a quota recipe (either key convention)."""
    return type_of(data) == RECIPE_TYPE
