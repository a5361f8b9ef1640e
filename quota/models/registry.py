"""The model registry: one :class:`ArchSpec` per supported family, looked up by the model's class name, and
the models quota loads by name (the testbed) or from a local checkpoint folder."""

from __future__ import annotations

import json
from pathlib import Path

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


MODEL_NAMES: tuple[str, ...] = ("testbed",)
"""Models quota loads by name: ``testbed`` is the shipped synthetic VLM (:mod:`quota.testbed.model`)."""


def checkpoint_class(folder: str | Path) -> str:
    """The model class named by a local Hugging Face checkpoint's ``config.json`` (``architectures[0]``),
    checked against the registry; :class:`UnsupportedModelError` names what is wrong and what is supported."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        raise UnsupportedModelError(f"{folder} has no config.json: not a Hugging Face checkpoint folder")
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (json.JSONDecodeError, AttributeError) as err:
        raise UnsupportedModelError(f"{config} is not a JSON object: {err}") from None
    name = architectures[0] if architectures else None
    if name not in _BY_CLASS:
        raise UnsupportedModelError(
            f"{folder}: model class {name!r} has no architecture description; supported: "
            f"{', '.join(supported_model_classes())}"
        )
    return name


def check_model_name(model: str, command: str, folders: bool = False) -> str:
    """``model`` when ``quota {command}`` can run it: one of :data:`MODEL_NAMES`, or (with ``folders``, for the
    commands that load checkpoints) a folder whose ``config.json`` names a supported class. Otherwise
    :class:`UnsupportedModelError` saying why: an unknown name, an unsupported checkpoint class, or a supported
    checkpoint that this command cannot run yet."""
    if model in MODEL_NAMES:
        return model
    if Path(model).is_dir():
        name = checkpoint_class(model)
        if folders:
            return model
        raise UnsupportedModelError(
            f"quota {command}: {model} holds a {name}, a supported architecture, but this command runs only "
            f"the models {', '.join(MODEL_NAMES)} so far"
        )
    where = " or a checkpoint folder of a supported class" if folders else ""
    raise UnsupportedModelError(
        f"quota {command}: unknown model {model!r} (no such folder); give one of {', '.join(MODEL_NAMES)}{where} "
        f"(supported classes: {', '.join(supported_model_classes())})"
    )
