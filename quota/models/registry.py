"""One :class:`ArchSpec` per supported family, looked up by the model's class name."""

from __future__ import annotations

import torch.nn as nn

from quota.models.spec import ArchSpec


class UnsupportedModelError(ValueError):
    """The model's architecture has no description in the registry."""


SPECS: tuple[ArchSpec, ...] = (
    ArchSpec(family="llama", model_classes=("LlamaForCausalLM",), language_model="model"),
    ArchSpec(family="qwen2", model_classes=("Qwen2ForCausalLM",), language_model="model"),
    ArchSpec(
        family="llava",
        model_classes=("LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration"),
        language_model="model.language_model",
        vision_tower="model.vision_tower",
        projector="model.multi_modal_projector",
        image_token_config="image_token_id",
        static_vision=True,
    ),
    ArchSpec(
        family="qwen2_vl",
        model_classes=("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"),
        language_model="model.language_model",
        vision_tower="model.visual",
        projector="model.visual.merger",
        positions="mrope",
        image_token_config="image_token_id",
    ),
    ArchSpec(
        family="idefics3",
        model_classes=("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"),
        language_model="model.text_model",
        vision_tower="model.vision_model",
        projector="model.connector",
        image_token_config="image_token_id",
    ),
)

_BY_CLASS = {name: spec for spec in SPECS for name in spec.model_classes}


def supported_model_classes() -> list[str]:
    return sorted(_BY_CLASS)


def spec_for(model: nn.Module) -> ArchSpec:
    """The description of ``model``'s family, or :class:`UnsupportedModelError` listing what is supported."""
    name = type(model).__name__
    if name not in _BY_CLASS:
        raise UnsupportedModelError(
            f"quota has no architecture description for {name}; supported: {', '.join(supported_model_classes())}"
        )
    return _BY_CLASS[name]
