import pytest
import torch.nn as nn

from quota.models.registry import SPECS, UnsupportedModelError, spec_for, supported_model_classes
from quota.models.spec import get_submodule
from tests.tiny_models import tiny_llama, tiny_qwen2


def tiny_llava():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8)
    text = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2)
    return LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_id=127))


@pytest.mark.parametrize("make", [tiny_llama, tiny_qwen2, tiny_llava])
def test_every_path_of_the_spec_resolves(make):
    model = make()
    spec = spec_for(model)
    layers = spec.layers_of(model)
    assert len(layers) == 2
    for path in spec.layer.linear_paths:
        assert isinstance(get_submodule(layers[0], path), nn.Linear), path
    assert isinstance(spec.embeddings_of(model), nn.Embedding)
    assert isinstance(spec.lm_head_of(model), nn.Linear)
    assert spec.final_norm_of(model) is not None
    for path in (spec.vision_tower, spec.projector):
        if path is not None:
            assert isinstance(get_submodule(model, path), nn.Module)


def test_unsupported_model_error_lists_supported_classes():
    with pytest.raises(UnsupportedModelError) as err:
        spec_for(nn.Linear(2, 2))
    for name in ("LlamaForCausalLM", "Qwen2VLForConditionalGeneration", "LlavaForConditionalGeneration"):
        assert name in str(err.value)


def test_class_names_are_unique_across_families():
    names = [n for s in SPECS for n in s.model_classes]
    assert len(names) == len(set(names)) == len(supported_model_classes())


def test_missing_submodule_is_named():
    with pytest.raises(AttributeError, match="language_model"):
        get_submodule(nn.Module(), "model.language_model")
