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


def tiny_llava_next():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8)
    text = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2)
    return LlavaNextForConditionalGeneration(
        LlavaNextConfig(vision_config=vision, text_config=text, image_token_id=127, image_grid_pinpoints=[[32, 32]])
    )


def tiny_qwen25vl():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                bos_token_id=1, eos_token_id=2)
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=4, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=64, fullatt_block_indexes=[0])
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=120, video_token_id=121, vision_start_token_id=122,
        vision_end_token_id=123, bos_token_id=1, eos_token_id=2))


def tiny_idefics3():
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    return Idefics3ForConditionalGeneration(Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2),
        scale_factor=2, image_token_id=127))


FAMILIES = [tiny_llama, tiny_qwen2, tiny_llava, tiny_llava_next, tiny_qwen25vl, tiny_idefics3]


@pytest.mark.parametrize("make", FAMILIES)
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


@pytest.mark.parametrize("make", [tiny_llava_next, tiny_qwen25vl, tiny_idefics3])
def test_rotation_is_exact_on_vlm_language_models(make):
    """quantize_model's rotation (nothing quantized) keeps a VLM's text-only logits, for each family."""
    import torch

    from quota.quant.config import QuantConfig
    from quota.quantize.model import quantize_model

    torch.manual_seed(0)
    model = make().double().eval()
    ids = torch.randint(3, 100, (2, 9))
    ref = model(input_ids=ids).logits
    cfg = QuantConfig(w_bits=16, a_bits=16, kv_bits=16, rotate=True, kv_hadamard=False)
    out = quantize_model(model, cfg)(input_ids=ids).logits
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5), float((out - ref).abs().max())
