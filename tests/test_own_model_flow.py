"""The whole "your own model" flow on tiny random checkpoints of every registered family (examples/own_model.py):
profile on the user's records -> a custom objective (per-task weights, a KV-cache cap) -> solve -> quantize ->
save -> load -> generate. The loaded model must equal the in-memory one, and the recipe must respect its budget."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import quota
from quota.data.profile import data_version, load_records, quantize_on_records
from quota.data.prompts import encode_batch
from quota.eval.records import answer_records
from quota.models.checkpoint import load_checkpoint
from quota.profiling.measure import ProfileSettings
from quota.recipe import Recipe
from quota.runtime.apply import PrunedModel, apply
from tests.checkpoints import FAMILIES, write_checkpoint
from tests.data.datasets import write_dataset
from tests.example_scripts import load_example

RTN = quota.QuantConfig(impl="reference", weight_method="rtn", a_clip_search=False)
SETTINGS = ProfileSettings(grid_steps=4, batch_size=8, latency=False,
                           score_candidates=[{"attn_last": 0.9, "magnitude": 0.1}, {"attn_text": 0.9, "magnitude": 0.1}])


pytestmark = pytest.mark.usefixtures("one_thread")


def _last_logits(model, inputs) -> torch.Tensor:
    """``[B, V]`` logits of the prompt's last position: through the pruning runtime's prefill, or the model's forward."""
    if isinstance(model, PrunedModel):
        return model.prefill(**inputs)[0]
    with torch.no_grad():
        return model(**inputs).logits[:, -1]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_whole_flow(family, tmp_path):
    folder = write_checkpoint(family, tmp_path / family)
    data = write_dataset(tmp_path / "data")
    example = load_example("own_model")
    budget, kv_share = 0.5, 0.97  # the tiny prompts' text is most of their KV cache (Idefics3: N = 4)
    summary = example.run(folder, data, data, tmp_path / "work", budget=budget, kv_share=kv_share,
                          task_weight={"reading": 2.0}, quant=RTN, settings=SETTINGS, device="cpu", max_new_tokens=3)

    recipe = Recipe.load(summary["recipe"], model_id=family)
    assert recipe.equivalent_tokens <= budget * recipe.n_visual_tokens + 1e-9  # the token budget holds
    assert summary["kv_share"] <= kv_share + 1e-9  # and so does the KV cap
    assert recipe.quant_config.weight_method == "rtn" and recipe.prunes is (min(recipe.schedule) < recipe.n_visual_tokens)

    # the loaded checkpoint equals the model quantized and pruned in memory: same logits, same answers
    loaded = load_checkpoint(folder)
    records = load_records(data)
    quantized = quantize_on_records(loaded, records, RTN, data_version(data, records), SETTINGS.batch_size)
    in_memory = apply(quantized, dataclasses.replace(recipe, quant=None), impl="reference")
    saved = quota.load(summary["checkpoint"], "cpu", impl="reference")
    assert isinstance(saved.model, PrunedModel) is recipe.prunes
    for record in records[:2]:
        inputs = encode_batch(loaded.processor, [record], with_answers=False).inputs
        assert torch.equal(_last_logits(saved.model, inputs), _last_logits(in_memory, inputs))
    assert answer_records(in_memory, loaded.processor, records, 8, 3) == summary["answers"]
