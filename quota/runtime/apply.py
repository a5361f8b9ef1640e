"""``apply(model, recipe)``: quantize per the recipe's config, then attach the pruning runtime.

The recipe is a :class:`quota.recipe.Recipe` (files: :meth:`Recipe.load`; stage-wise baselines:
:meth:`Recipe.from_plan`). Before anything else its schedule is checked against the model: one entry per
decoder layer, and ``n_visual_tokens`` equal to the model's image span, whatever the schedule holds.

The contract of section 8 of the design: when the schedule keeps all ``N`` tokens in every layer and the
quantization config is absent or the identity, ``apply`` returns ``model`` itself, untouched. Otherwise it
returns the quantized copy (no pruning) or a :class:`PrunedModel` around it.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn

from quota.models.registry import spec_for
from quota.quantize.model import quantize_model
from quota.recipe import Recipe, RecipeError
from quota.runtime.generate import PrunedRunner
from quota.runtime.vision import expected_visual_tokens


def check_fits(model: nn.Module, recipe: Recipe) -> None:
    """Refuse a recipe whose layer count or visual-token count is not the model's (:class:`RecipeError`)."""
    n_layers = len(spec_for(model).layers_of(model))
    if recipe.n_layers != n_layers:
        raise RecipeError(f"the recipe's schedule has {recipe.n_layers} layers but the model has {n_layers}")
    n_visual = expected_visual_tokens(model)
    if n_visual is not None and recipe.n_visual_tokens != n_visual:
        raise RecipeError(
            f"the recipe was made for images of {recipe.n_visual_tokens} visual tokens but the model's images "
            f"have {n_visual}"
        )


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
        """``static``: decode through a CUDA graph on a GPU (:meth:`PrunedRunner.generate`). The inputs are checked
        first (:meth:`PrunedRunner.check_inputs`): right padding, a mask that is not ``[B, S]``, an empty
        ``input_ids`` or a negative ``max_new_tokens`` is a ``ValueError`` naming the argument."""
        if do_sample:
            raise NotImplementedError("the pruning runtime decodes greedily (do_sample=False)")
        new = self.runner.generate(input_ids, attention_mask, pixel_values, max_new_tokens, eos_token_id,
                                   pad_token_id, static=static, **vision_inputs)
        return torch.cat([input_ids, new.to(input_ids.dtype)], dim=1)

    def prefill(self, *args, **kwargs):
        return self.runner.prefill(*args, **kwargs)


def apply(
    model: nn.Module, recipe: Recipe, calibration_batches: Iterable[Any] | None = None, impl: str = "auto"
) -> nn.Module | PrunedModel:
    """Quantize ``model`` per ``recipe`` (a copy; ``calibration_batches`` as for
    :func:`~quota.quantize.model.quantize_model`) and wrap it for pruned generation.

    Returns ``model`` itself when the recipe neither quantizes nor prunes. Raises :class:`TypeError` for
    anything but a :class:`Recipe` and :class:`RecipeError` for one that does not fit the model.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(
            f"apply takes a quota.recipe.Recipe (Recipe.load(path), or Recipe.from_plan(plan, ...) for a baseline), "
            f"got {type(recipe).__name__}"
        )
    check_fits(model, recipe)
    config = recipe.quant_config
    if config is not None and not config.is_identity:
        model = quantize_model(model, config, calibration_batches)
    if not recipe.prunes:
        return model
    runner = PrunedRunner.from_scoring(model, recipe.schedule, recipe.scoring, impl=impl,
                                       reference_tokens=recipe.n_visual_tokens)
    return PrunedModel(model, runner)
