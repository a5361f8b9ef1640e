"""``apply(model, recipe)``: quantize per the recipe's config, then attach the pruning runtime.

A recipe is any object (or dict) with:

- ``schedule``: ``L`` keep counts, or ``None`` for no pruning;
- ``score_weights``: signal name -> weight (optional; default ``{"attn_last": 1.0}``); optional
  ``normalize`` and ``seed``, or a ``scoring`` dict holding ``weights``/``normalize``/``seed``;
- a quantization config: a :meth:`QuantConfig.to_dict` dict (or a ``QuantConfig``) under ``quant``,
  ``quant_config`` or ``quantization``; absent or ``None`` means full precision;
- optionally ``n_visual_tokens`` (``N``); else ``N`` is read from the model's vision config.

The contract of section 8 of the design: when the schedule keeps all ``N`` tokens in every layer (or
is ``None``) and the quantization config is the identity, ``apply`` returns ``model`` itself, untouched.
Otherwise it returns the quantized copy (no pruning) or a :class:`PrunedModel` around it.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn

from quota.quant.config import QuantConfig
from quota.runtime.generate import PrunedRunner
from quota.runtime.plan import is_full
from quota.runtime.vision import expected_visual_tokens

QUANT_FIELDS = ("quant", "quant_config", "quantization")


def _field(recipe: Any, name: str, default=None):
    if isinstance(recipe, dict):
        return recipe.get(name, default)
    return getattr(recipe, name, default)


def quant_config_of(recipe: Any) -> QuantConfig | None:
    """The recipe's :class:`QuantConfig`, or ``None`` when it has none."""
    for name in QUANT_FIELDS:
        value = _field(recipe, name)
        if value is None:
            continue
        return value if isinstance(value, QuantConfig) else QuantConfig.from_dict(dict(value))
    return None


def scoring_of(recipe: Any) -> dict[str, Any]:
    """``{"weights", "normalize", "seed"}`` from the recipe's fields."""
    scoring = _field(recipe, "scoring") or {}
    scoring = scoring if isinstance(scoring, dict) else getattr(scoring, "__dict__", {})
    weights = _field(recipe, "score_weights") or scoring.get("weights") or {"attn_last": 1.0}
    return {
        "weights": dict(weights),
        "normalize": _field(recipe, "normalize") or scoring.get("normalize", "minmax"),
        "seed": int(_field(recipe, "seed") or scoring.get("seed", 0)),
    }


class PrunedModel:
    """A model run through :class:`PrunedRunner`; other attributes are the model's.

    :meth:`generate` takes ``model.generate``'s greedy arguments and returns the prompt followed by the
    new tokens ``[B, S + T]``, as ``model.generate`` does for decoder-only models.
    """

    def __init__(self, model: nn.Module, runner: PrunedRunner) -> None:
        self.model = model
        self.runner = runner

    def __getattr__(self, name: str):
        model = self.__dict__.get("model")
        if model is None:
            raise AttributeError(name)
        return getattr(model, name)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 20,
        eos_token_id: int | Iterable[int] | None = None,
        pad_token_id: int | None = None,
        do_sample: bool = False,
        static: bool = False,
        **vision_inputs,
    ) -> torch.Tensor:
        """``static``: decode through a CUDA graph on a GPU (:meth:`PrunedRunner.generate`)."""
        if do_sample:
            raise NotImplementedError("the pruning runtime decodes greedily (do_sample=False)")
        new = self.runner.generate(input_ids, attention_mask, pixel_values, max_new_tokens, eos_token_id,
                                   pad_token_id, static=static, **vision_inputs)
        return torch.cat([input_ids, new.to(input_ids.dtype)], dim=1)

    def prefill(self, *args, **kwargs):
        return self.runner.prefill(*args, **kwargs)


def apply(
    model: nn.Module, recipe: Any, calibration_batches: Iterable[Any] | None = None, impl: str = "auto"
) -> nn.Module | PrunedModel:
    """Quantize ``model`` per ``recipe`` (a copy; ``calibration_batches`` as for
    :func:`~quota.quant.quantize.quantize_model`) and wrap it for pruned generation.

    Returns ``model`` itself when the recipe neither quantizes nor prunes.
    """
    config = quant_config_of(recipe)
    schedule = _field(recipe, "schedule")
    n_visual = _field(recipe, "n_visual_tokens") or expected_visual_tokens(model)
    prunes = schedule is not None and not (n_visual is not None and is_full(schedule, n_visual))
    if config is not None and not config.is_identity:
        from quota.quant.quantize import quantize_model

        model = quantize_model(model, config, calibration_batches)
    if not prunes:
        return model
    s = scoring_of(recipe)
    runner = PrunedRunner(model, schedule, s["weights"], normalize=s["normalize"], seed=s["seed"], impl=impl)
    return PrunedModel(model, runner)
