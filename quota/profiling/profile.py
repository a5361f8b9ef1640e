"""Profile: per-layer sensitivity (damage) and cost curves of one model on one device, as JSON.

Layout (version 2, or 1 when it records no pre-LLM weights; files written before the versioned-JSON convention
carry ``schema``/``schema_version`` instead of ``type``/``version``, and still load)::

    {"type": "quota.profiling", "version": 2,
     "model_id", "model_hash", "data_version", "device", "versions": {torch, transformers, triton, quota},
     "n_layers": L, "n_visual_tokens": N, "grid": [G keep counts, ascending, ending with N],
     "damage": {"kl": [[L x G]], "task_loss": [[L x G]], "per_task": {task: [[L x G]]}},
     "costs": {"tokens": [[L x G]], "flops": ..., "kv": ..., "latency": ...},   # non-decreasing in k
     "score_weights": {"attn_last": w, "magnitude": w, "risk": w}, "score_search": {...},   # in-LLM points
     "pre_llm_weights": {"vision_attn": w, ...}, "pre_llm_search": {...},   # the point before layer 0 (version 2)
     "interactions": [[[L-1 x G x G]]],   # KL interaction terms of adjacent pruning points (version 2, optional)
     "selection": "topk", "merge": 0, "selection_search": {...},   # the selection rule and merging (version 3)
     "merge_rule": "recycle",   # how the merged tokens are folded, when not "context" (version 4)
     "quant": QuantConfig.to_dict(), "timing": {...}, "extra": {...}}

``score_weights`` is the weighting chosen for the pruning points inside the language model (and, without
``pre_llm_weights``, for the one before layer 0 too); ``pre_llm_weights`` the one chosen for the point before
layer 0 from the signals that exist there. ``interactions[l][a][b]`` is the KL damage that the additive model
misses when layer ``l`` keeps ``grid[a]`` and layer ``l + 1`` keeps ``grid[b]`` (measured by ``quota profile
--interactions S``; 0 where ``a <= b``); it applies to the ``kl`` curve only. Version 2 adds only those optional
fields, each written only when present, so a profile without them is written as version 1, exactly as before,
and version 1 files load with no pre-LLM weights and no interactions. Version 3 adds the selection rule
(``"topk"``, ``"divprune"``, ``"cdpruner"``) and the contextual tokens merged at each pruning point, chosen on
calibration probes like the weights (``selection_search``); files without them select by top-k and merge nothing.
Version 4 adds ``merge_rule`` (:data:`quota.signals.MERGE_RULES`), written only when the search chose SparseVLM's
recycling (``"recycle"``); files without it fold merged tokens as VisionZip's contextual tokens (``"context"``).
:attr:`Profile.scoring` is the whole scoring a recipe made from the profile runs.

Loading validates every field and names the field and value that are wrong; saving is atomic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quota.atomic import write_json_atomic
from quota.quant.config import QuantConfig
from quota.recipe import RecipeError, ScoringSpec
from quota.signals import SIGNALS, available_signals
from quota.versioned import VersionError, read_json, stamp, type_of, unstamp

PROFILE_TYPE = "quota.profiling"
PROFILE_VERSION = 4
READ_VERSIONS = (1, 2, 3, 4)  # 1: no pre_llm_weights / pre_llm_search / interactions; 2: no selection / merge;
# 3: no merge_rule
V2_FIELDS = ("pre_llm_weights", "pre_llm_search", "interactions")
V3_FIELDS = ("selection", "merge", "selection_search")
V4_FIELDS = ("merge_rule",)
DAMAGE_KINDS = ("kl", "task_loss")


class ProfileError(ValueError):
    """A profile is malformed; the message names the field and the offending value."""


@dataclass(frozen=True, eq=False)
class Profile:
    model_id: str
    model_hash: str
    n_layers: int
    n_visual_tokens: int
    grid: tuple[int, ...]
    damage: dict[str, np.ndarray]  # kind -> [L, G]
    costs: dict[str, np.ndarray]  # kind -> [L, G]
    per_task: dict[str, np.ndarray] = field(default_factory=dict)  # task -> [L, G]
    score_weights: dict[str, float] = field(default_factory=dict)
    quant: dict[str, Any] = field(default_factory=dict)
    data_version: str = ""
    device: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    score_search: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    pre_llm_weights: dict[str, float] = field(default_factory=dict)
    pre_llm_search: dict[str, Any] = field(default_factory=dict)
    interactions: np.ndarray | None = None  # [L-1, G, G], KL only
    selection: str = "topk"
    merge: int = 0
    selection_search: dict[str, Any] = field(default_factory=dict)
    merge_rule: str = "context"

    def __post_init__(self) -> None:
        _validate(self)
        try:
            ScoringSpec(selection=self.selection, merge=self.merge, merge_rule=self.merge_rule)
        except RecipeError as err:
            raise ProfileError(str(err)) from None

    @property
    def scoring(self) -> ScoringSpec:
        """The scoring of a recipe made from this profile: ``score_weights`` (the default weighting when the profile
        records none), the per-stage weights, the selection rule and the merged tokens, and how they are folded."""
        weights = dict(self.score_weights) if self.score_weights else ScoringSpec().weights
        return ScoringSpec(weights, stage_weights=self.stage_weights, selection=self.selection, merge=self.merge,
                           merge_rule=self.merge_rule)

    @property
    def stage_weights(self) -> dict[str, dict[str, float]] | None:
        """The per-stage weights of a recipe made from this profile (``{"pre_llm": ...}``), ``None`` without
        pre-LLM weights (``score_weights`` then serves every pruning point)."""
        return {"pre_llm": dict(self.pre_llm_weights)} if self.pre_llm_weights else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: version 4 when its merge rule is not the default, else version 3 when it records a
        selection search or a selection or merging other than the default, else version 2 with the pre-LLM fields
        when there are pre-LLM weights and the interactions when there are some, else version 1 without them (what
        readers before them read)."""
        body = self._body()
        if self.pre_llm_weights:
            body.update(pre_llm_weights=self.pre_llm_weights, pre_llm_search=self.pre_llm_search)
        if self.interactions is not None:
            body["interactions"] = self.interactions.tolist()
        if self.selection != "topk" or self.merge or self.selection_search:
            body.update(selection=self.selection, merge=self.merge, selection_search=self.selection_search)
        if self.merge_rule != "context":
            body["merge_rule"] = self.merge_rule
        version = (4 if set(body) & set(V4_FIELDS) else 3 if set(body) & set(V3_FIELDS)
                   else 2 if set(body) & set(V2_FIELDS) else 1)
        return stamp(PROFILE_TYPE, version, body)

    def _body(self) -> dict[str, Any]:
        """The fields of every version (the pre-LLM ones are added by :meth:`to_dict`)."""
        return {
            "model_id": self.model_id, "model_hash": self.model_hash, "data_version": self.data_version,
            "device": self.device, "versions": self.versions,
            "n_layers": self.n_layers, "n_visual_tokens": self.n_visual_tokens, "grid": list(self.grid),
            "damage": {**{k: v.tolist() for k, v in self.damage.items()},
                       "per_task": {k: v.tolist() for k, v in self.per_task.items()}},
            "costs": {k: v.tolist() for k, v in self.costs.items()},
            "score_weights": self.score_weights, "score_search": self.score_search, "quant": self.quant,
            "timing": self.timing, "extra": self.extra,
        }

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, source: str = "profile") -> "Profile":
        try:
            return _from_dict(cls, d)
        except ProfileError as err:
            raise ProfileError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: str | Path) -> "Profile":
        return cls.from_dict(read_json(path, "profile", ProfileError), str(path))


def _array(name: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ProfileError(f"{name} is not a numeric array") from None
    if arr.shape != shape:
        raise ProfileError(f"{name} has shape {list(arr.shape)}, expected {list(shape)} (layers x grid)")
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        layer, g = bad[0]
        raise ProfileError(f"{name}[{layer}][{g}] is {arr[layer, g]} (NaN or infinite)")
    return arr


def _interactions(value: Any, shape: tuple[int, int, int]) -> np.ndarray:
    """``value`` as a float ``[L-1, G, G]`` array of finite numbers, or a one-line :class:`ProfileError` naming
    ``interactions``."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ProfileError("interactions is not a numeric array") from None
    if arr.shape != shape:
        raise ProfileError(f"interactions has shape {list(arr.shape)}, expected {list(shape)} "
                           f"(layers - 1 x grid x grid)")
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        layer, a, b = bad[0]
        raise ProfileError(f"interactions[{layer}][{a}][{b}] is {arr[layer, a, b]} (NaN or infinite)")
    return arr


def _from_dict(cls, d: Any) -> Profile:
    try:
        version, d = unstamp(d, PROFILE_TYPE, READ_VERSIONS, "profile")
    except VersionError as err:
        raise ProfileError(str(err).removeprefix("profile: ")) from None
    known = (FIELDS + (V2_FIELDS if version >= 2 else ()) + (V3_FIELDS if version >= 3 else ())
             + (V4_FIELDS if version >= 4 else ()))
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ProfileError(f"unknown field(s) {unknown} (version {version}); known fields: {sorted(known)}")
    for key in ("model_id", "model_hash", "n_layers", "n_visual_tokens", "grid", "damage", "costs"):
        if key not in d:
            raise ProfileError(f"missing field {key!r}")
    damage = dict(d["damage"])
    per_task = damage.pop("per_task", {}) or {}
    return cls(
        model_id=d["model_id"], model_hash=d["model_hash"], n_layers=d["n_layers"],
        n_visual_tokens=d["n_visual_tokens"], grid=tuple(d["grid"]), damage=damage, costs=dict(d["costs"]),
        per_task=dict(per_task), score_weights=d.get("score_weights", {}), quant=d.get("quant", {}),
        data_version=d.get("data_version", ""), device=d.get("device", ""), versions=d.get("versions", {}),
        score_search=d.get("score_search", {}), timing=d.get("timing", {}), extra=d.get("extra", {}),
        pre_llm_weights=d.get("pre_llm_weights", {}), pre_llm_search=d.get("pre_llm_search", {}),
        interactions=d.get("interactions"), selection=d.get("selection", "topk"), merge=d.get("merge", 0),
        selection_search=d.get("selection_search", {}), merge_rule=d.get("merge_rule", "context"),
    )


def _validate(p: Profile) -> None:
    if not isinstance(p.n_layers, int) or p.n_layers < 1:
        raise ProfileError(f"n_layers must be a positive integer, got {p.n_layers!r}")
    if not isinstance(p.n_visual_tokens, int) or p.n_visual_tokens < 1:
        raise ProfileError(f"n_visual_tokens must be a positive integer, got {p.n_visual_tokens!r}")
    grid = p.grid
    if not grid or any(not isinstance(k, int) for k in grid):
        raise ProfileError(f"grid must be a list of integers, got {list(grid)[:5]}")
    if any(a >= b for a, b in zip(grid, grid[1:])):
        raise ProfileError(f"grid must be strictly increasing, got {list(grid)}")
    if grid[0] < 0 or grid[-1] != p.n_visual_tokens:
        raise ProfileError(f"grid must lie in [0, {p.n_visual_tokens}] and end with n_visual_tokens, got {list(grid)}")
    shape = (p.n_layers, len(grid))
    if not p.damage:
        raise ProfileError("damage has no curves")
    object.__setattr__(p, "damage", {k: _array(f"damage.{k}", v, shape) for k, v in p.damage.items()})
    object.__setattr__(p, "per_task", {k: _array(f"damage.per_task.{k}", v, shape) for k, v in p.per_task.items()})
    costs = {}
    for kind, value in p.costs.items():
        arr = _array(f"costs.{kind}", value, shape)
        if (arr < 0).any():
            layer, g = np.argwhere(arr < 0)[0]
            raise ProfileError(f"costs.{kind}[{layer}][{g}] = {arr[layer, g]} is negative")
        drops = np.argwhere(np.diff(arr, axis=1) < -1e-12 * np.maximum(1.0, np.abs(arr[:, 1:])))
        if len(drops):
            layer, g = drops[0]
            raise ProfileError(
                f"costs.{kind} is not non-decreasing in the keep count at layer {layer}: "
                f"{arr[layer, g]} at k={grid[g]} > {arr[layer, g + 1]} at k={grid[g + 1]}"
            )
        costs[kind] = arr
    object.__setattr__(p, "costs", costs)
    if p.interactions is not None:
        object.__setattr__(p, "interactions", _interactions(p.interactions, (p.n_layers - 1, len(grid), len(grid))))
    _check_weights("score_weights", p.score_weights, SIGNALS)
    _check_weights("pre_llm_weights", p.pre_llm_weights, available_signals(0))
    if p.pre_llm_weights and not any(w > 0 for w in p.pre_llm_weights.values()):
        raise ProfileError(f"pre_llm_weights needs at least one positive weight, got {p.pre_llm_weights}")
    for name in ("score_search", "pre_llm_search"):
        if not isinstance(getattr(p, name), dict):
            raise ProfileError(f"{name} must be an object, got {getattr(p, name)!r}")
    if p.quant:
        try:
            QuantConfig.from_dict(p.quant)
        except ValueError as err:
            raise ProfileError(f"quant: {err}") from None


def _check_weights(where: str, weights: Any, signals) -> None:
    """Refuse ``weights`` unless it maps signals of ``signals`` to finite non-negative numbers (naming
    ``where.<signal>``)."""
    if not isinstance(weights, dict):
        raise ProfileError(f"{where} must be an object of signal -> weight, got {weights!r}")
    for name, w in weights.items():
        if name not in signals:
            known = "known signals" if signals is SIGNALS else "signals that exist before layer 0"
            raise ProfileError(f"{where}.{name}: unknown score signal; {known}: {list(signals)}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ProfileError(f"{where}.{name} = {w!r} must be a finite non-negative number")


FIELDS = ("model_id", "model_hash", "data_version", "device", "versions", "n_layers", "n_visual_tokens", "grid",
          "damage", "costs", "score_weights", "score_search", "quant", "timing", "extra")


def is_profile(data: Any) -> bool:
    """True when a JSON object names itself a quota profile (either key convention)."""
    return type_of(data) == PROFILE_TYPE
