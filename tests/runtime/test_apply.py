"""apply(model, recipe): identity recipes leave the model untouched; others quantize and/or prune."""

from types import SimpleNamespace

import torch

from quota.quant.config import BF16, QuantConfig
from quota.runtime.apply import PrunedModel, apply
from tests.runtime.models import n_visual


def _logits(model, ids, mask, pv):
    return model(input_ids=ids, attention_mask=mask, pixel_values=pv).logits


def test_full_budget_without_quantization_is_untouched(llava, batch3):
    ids, mask, pv, _ = batch3
    before = _logits(llava, ids, mask, pv)
    state = {k: v.clone() for k, v in llava.state_dict().items()}
    impl = llava.config.text_config._attn_implementation
    recipe = {"schedule": [n_visual(llava)] * 4, "score_weights": {"attn_last": 1.0}, "quant": BF16.to_dict()}
    out = apply(llava, recipe)
    assert out is llava
    assert torch.equal(_logits(out, ids, mask, pv), before)
    assert llava.config.text_config._attn_implementation == impl
    assert all(torch.equal(v, state[k]) for k, v in llava.state_dict().items())
    assert apply(llava, SimpleNamespace(schedule=None, score_weights=None, quant_config=None)) is llava


def test_pruning_recipe_gives_a_generate_compatible_model(llava, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    recipe = SimpleNamespace(schedule=(n, n // 2, n // 2, 4), score_weights={"attn_last": 1.0, "magnitude": 0.5},
                             quant=None)
    pruned = apply(llava, recipe)
    assert isinstance(pruned, PrunedModel) and pruned.model is llava
    assert next(pruned.parameters()).dtype == torch.float32  # attributes come from the model
    out = pruned.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, max_new_tokens=4, do_sample=False,
                          pad_token_id=0, eos_token_id=2)
    assert out.shape[0] == 3 and out.shape[1] <= ids.shape[1] + 4
    assert torch.equal(out[:, : ids.shape[1]], ids)
    assert [k.shape[1] for k in pruned.runner.kept_indices] == list(recipe.schedule)


def test_quantizing_recipe_copies_the_model(llava, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    before = _logits(llava, ids, mask, pv)
    config = QuantConfig(weight_method="rtn", w_clip_search=False, a_clip_search=False, kv_group_size=16)
    quantized = apply(llava, {"schedule": [n] * 4, "quantization": config.to_dict()})
    assert not isinstance(quantized, PrunedModel) and quantized is not llava
    assert torch.equal(_logits(llava, ids, mask, pv), before)
    pruned = apply(llava, {"schedule": [n, 8, 8, 8], "quant_config": config, "scoring": {"weights": {"risk": 1.0}}})
    assert isinstance(pruned, PrunedModel) and pruned.runner.scoring.weights == {"risk": 1.0}
    assert pruned.generate(ids, mask, pv, max_new_tokens=2).shape[1] <= ids.shape[1] + 2
