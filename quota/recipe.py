"""Recipe: the frozen output of profiling and solving, applied by the runtime.

A recipe is a versioned, content-hashed JSON document: the per-layer visual-token schedule, the token
score weights, the quantization config, how the schedule was obtained (budget, solver, status, gap,
time) and what it was measured on (model id and hash, data version, library versions). Saving is
atomic; loading refuses an unknown schema version, a tampered file (hash mismatch) or, when a model
is given, a recipe made for another model, each with a message that says which and why.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quota.atomic import write_json_atomic
from quota.quant.config import QuantConfig

RECIPE_SCHEMA = "quota.recipe"
RECIPE_VERSION = 1
BUDGET_KINDS = ("tokens", "flops", "kv", "latency")


class RecipeError(ValueError):
    """A recipe is malformed, of an unknown version, tampered with, or made for another model."""


@dataclass(frozen=True)
class Recipe:
    """What the runtime needs (``schedule``, ``score_weights``, ``quant``) and how it was obtained."""

    model_id: str
    model_hash: str
    n_layers: int
    n_visual_tokens: int
    schedule: tuple[int, ...]
    score_weights: dict[str, float]
    quant: dict[str, Any]
    budget_kind: str = "tokens"
    budget: float = 1.0
    solver: dict[str, Any] = field(default_factory=dict)  # name, status, objective, bound, gap, seconds
    data_version: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    quota_version: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", tuple(int(k) for k in self.schedule))
        if len(self.schedule) != self.n_layers:
            raise RecipeError(f"schedule has {len(self.schedule)} entries for n_layers={self.n_layers}")
        for i, k in enumerate(self.schedule):
            if not 0 <= k <= self.n_visual_tokens:
                raise RecipeError(f"schedule[{i}]={k} is outside [0, n_visual_tokens={self.n_visual_tokens}]")
        if any(a < b for a, b in zip(self.schedule, self.schedule[1:])):
            raise RecipeError(f"schedule must be non-increasing over layers, got {list(self.schedule)}")
        if self.budget_kind not in BUDGET_KINDS:
            raise RecipeError(f"budget_kind={self.budget_kind!r}; choose one of {BUDGET_KINDS}")
        if not 0.0 < float(self.budget) <= 1.0:
            raise RecipeError(f"budget={self.budget!r} must lie in (0, 1]")
        QuantConfig.from_dict(self.quant)  # validates

    @property
    def quant_config(self) -> QuantConfig:
        return QuantConfig.from_dict(self.quant)

    @property
    def equivalent_tokens(self) -> float:
        """Mean over layers of the visual tokens kept (the budget convention of SparseVLM/PyramidDrop tables)."""
        return sum(self.schedule) / self.n_layers

    def body(self) -> dict[str, Any]:
        d = asdict(self)
        d["schedule"] = list(self.schedule)
        return {"schema": RECIPE_SCHEMA, "schema_version": RECIPE_VERSION, **d}

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.body(), sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "content_hash": self.content_hash()}

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe") -> "Recipe":
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("schema") != RECIPE_SCHEMA:
            raise RecipeError(f"{source}: schema is {data.get('schema')!r}, not {RECIPE_SCHEMA!r}: not a quota recipe")
        if data.get("schema_version") != RECIPE_VERSION:
            raise RecipeError(
                f"{source}: schema_version {data.get('schema_version')!r} is not supported "
                f"(this quota reads version {RECIPE_VERSION})"
            )
        fields = {f for f in cls.__dataclass_fields__}
        body = {k: v for k, v in data.items() if k not in ("schema", "schema_version", "content_hash")}
        unknown = sorted(set(body) - fields)
        if unknown:
            raise RecipeError(f"{source}: unknown field(s) {unknown}")
        missing = sorted(f for f in ("model_id", "model_hash", "n_layers", "n_visual_tokens", "schedule",
                                     "score_weights", "quant") if f not in body)
        if missing:
            raise RecipeError(f"{source}: missing field(s) {missing}")
        try:
            recipe = cls(**body)
        except RecipeError as err:
            raise RecipeError(f"{source}: {err}") from None
        except (TypeError, ValueError) as err:
            raise RecipeError(f"{source}: {err}") from None
        stored = data.get("content_hash")
        if stored is not None and stored != recipe.content_hash():
            raise RecipeError(f"{source}: content_hash does not match the contents (edited or corrupted file)")
        return recipe

    @classmethod
    def load(cls, path: str | Path, model_id: str | None = None, model_hash: str | None = None) -> "Recipe":
        """Read a recipe; with ``model_id``/``model_hash``, refuse one made for another model."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise RecipeError(f"{path}: not valid JSON (truncated or corrupt?): {err}") from None
        recipe = cls.from_dict(data, str(path))
        if model_id is not None and recipe.model_id != model_id:
            raise RecipeError(f"{path}: recipe is for model {recipe.model_id!r}, not {model_id!r}")
        if model_hash is not None and recipe.model_hash != model_hash:
            raise RecipeError(
                f"{path}: recipe was made for {recipe.model_id} with hash {recipe.model_hash[:12]}, "
                f"but this model's hash is {model_hash[:12]} (different weights)"
            )
        return recipe
