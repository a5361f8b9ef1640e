"""apply(model, recipe): identity recipes leave the model untouched; others quantize and/or prune; a recipe
that does not fit the model is refused before any shortcut."""

import pytest
import torch

from quota.quant.config import BF16, QuantConfig
from quota.recipe import PruningPlan, Recipe, RecipeError, ScoringSpec
from quota.runtime.apply import PrunedModel, apply
from tests.runtime.models import n_visual


def _logits(model, ids, mask, pv):
    return model(input_ids=ids, attention_mask=mask, pixel_values=pv).logits


def _recipe(model, schedule, quant=None, weights=None, **scoring):
    plan = PruningPlan("test", tuple(schedule), ScoringSpec(weights or {"attn_last": 1.0}, **scoring))
    return Recipe.from_plan(plan, n_visual(model), quant)


def test_full_budget_without_quantization_is_untouched(llava, batch3):
    ids, mask, pv, _ = batch3
    before = _logits(llava, ids, mask, pv)
    state = {k: v.clone() for k, v in llava.state_dict().items()}
    impl = llava.config.text_config._attn_implementation
    out = apply(llava, _recipe(llava, [n_visual(llava)] * 4, BF16))
    assert out is llava
    assert torch.equal(_logits(out, ids, mask, pv), before)
    assert llava.config.text_config._attn_implementation == impl
    assert all(torch.equal(v, state[k]) for k, v in llava.state_dict().items())
    assert apply(llava, _recipe(llava, [n_visual(llava)] * 4)) is llava


def test_pruning_recipe_gives_a_generate_compatible_model(llava, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    recipe = _recipe(llava, (n, n // 2, n // 2, 4), weights={"attn_last": 1.0, "magnitude": 0.5})
    pruned = apply(llava, recipe)
    assert isinstance(pruned, PrunedModel) and pruned.model is llava
    assert next(pruned.parameters()).dtype == torch.float32  # attributes come from the model
    out = pruned.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, max_new_tokens=4, do_sample=False,
                          pad_token_id=0, eos_token_id=2)
    assert out.shape[0] == 3 and out.shape[1] <= ids.shape[1] + 4
    assert torch.equal(out[:, : ids.shape[1]], ids)
    assert [k.shape[1] for k in pruned.runner.kept_indices] == list(recipe.schedule)


def test_quantizing_recipe_copies_the_model_and_carries_the_scoring(llava, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    before = _logits(llava, ids, mask, pv)
    config = QuantConfig(weight_method="rtn", w_clip_search=False, a_clip_search=False, kv_group_size=16)
    quantized = apply(llava, _recipe(llava, [n] * 4, config))
    assert not isinstance(quantized, PrunedModel) and quantized is not llava
    assert torch.equal(_logits(llava, ids, mask, pv), before)
    pruned = apply(llava, _recipe(llava, [n, 8, 8, 8], config, {"risk": 1.0}, normalize="rank", seed=7))
    assert isinstance(pruned, PrunedModel) and pruned.runner.scoring == ScoringSpec({"risk": 1.0}, "rank", 7)
    assert pruned.generate(ids, mask, pv, max_new_tokens=2).shape[1] <= ids.shape[1] + 2


def test_a_recipe_that_does_not_fit_is_refused_before_the_shortcut(llava):
    """A full schedule of another N, or of another length, is not a no-op: it is an error."""
    n = n_visual(llava)
    other_n = Recipe.from_plan(PruningPlan("t", (n + 4,) * 4), n + 4)
    with pytest.raises(RecipeError, match=f"made for images of {n + 4} visual tokens but the model's images have {n}"):
        apply(llava, other_n)
    with pytest.raises(RecipeError, match="5 layers but the model has 4"):
        apply(llava, Recipe.from_plan(PruningPlan("t", (n,) * 5), n))


def test_apply_takes_only_a_recipe(llava):
    with pytest.raises(TypeError, match="takes a quota.recipe.Recipe"):
        apply(llava, {"schedule": [n_visual(llava)] * 4, "quant_cfg": QuantConfig().to_dict()})
