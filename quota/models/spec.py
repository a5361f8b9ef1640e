"""Architectures as data: where the parts of a model live, described once per family.

quota never patches a model class. Everything it needs to find (decoder layers, attention and MLP
projections, norms, embeddings, lm_head, vision tower, projector) is looked up through an
:class:`ArchSpec`, a frozen description of dotted attribute paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn


@dataclass(frozen=True)
class DecoderLayerSpec:
    """Attribute names inside one decoder layer (Llama/Qwen2 style, pre-norm, RMSNorm, gated MLP)."""

    attention: str = "self_attn"
    q_proj: str = "q_proj"
    k_proj: str = "k_proj"
    v_proj: str = "v_proj"
    o_proj: str = "o_proj"
    mlp: str = "mlp"
    gate_proj: str = "gate_proj"
    up_proj: str = "up_proj"
    down_proj: str = "down_proj"
    input_norm: str = "input_layernorm"
    post_attention_norm: str = "post_attention_layernorm"

    @property
    def linear_paths(self) -> tuple[str, ...]:
        """Dotted paths of the seven linears of a layer, relative to the layer."""
        a, m = self.attention, self.mlp
        return (
            f"{a}.{self.q_proj}", f"{a}.{self.k_proj}", f"{a}.{self.v_proj}", f"{a}.{self.o_proj}",
            f"{m}.{self.gate_proj}", f"{m}.{self.up_proj}", f"{m}.{self.down_proj}",
        )


@dataclass(frozen=True)
class ArchSpec:
    """Where a model family keeps its parts. Paths are dotted attributes from the top-level model.

    ``language_model`` is the decoder stack (it holds ``layers``, ``embed_tokens`` and ``final_norm``);
    ``vision_tower`` and ``projector`` are ``None`` for text-only models. ``positions`` is ``"rope"`` or
    ``"mrope"`` (Qwen2-VL's multimodal RoPE). ``image_token_config`` names the config attribute holding
    the image placeholder token id. ``static_vision``: the image encoder runs without reading device data
    back to the host for fixed input shapes (so a CUDA graph can record it); Qwen2-VL's sizes its positions
    and attention segments by the patch grid's values.
    """

    family: str
    model_classes: tuple[str, ...]
    language_model: str
    lm_head: str = "lm_head"
    layers: str = "layers"
    embed_tokens: str = "embed_tokens"
    final_norm: str = "norm"
    vision_tower: str | None = None
    projector: str | None = None
    positions: str = "rope"
    image_token_config: str | None = None
    static_vision: bool = False
    layer: DecoderLayerSpec = field(default_factory=DecoderLayerSpec)

    @property
    def is_multimodal(self) -> bool:
        return self.vision_tower is not None

    # -- lookups ---------------------------------------------------------------------------------
    def language_model_of(self, model: nn.Module) -> nn.Module:
        return get_submodule(model, self.language_model)

    def layers_of(self, model: nn.Module) -> nn.ModuleList:
        return get_submodule(self.language_model_of(model), self.layers)

    def embeddings_of(self, model: nn.Module) -> nn.Embedding:
        return get_submodule(self.language_model_of(model), self.embed_tokens)

    def final_norm_of(self, model: nn.Module) -> nn.Module:
        return get_submodule(self.language_model_of(model), self.final_norm)

    def lm_head_of(self, model: nn.Module) -> nn.Linear:
        return get_submodule(model, self.lm_head)

    def text_config_of(self, model: nn.Module):
        return self.language_model_of(model).config


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """``root.a.b.c`` for ``path="a.b.c"``, with an error that names the missing part."""
    module = root
    for part in path.split("."):
        if not hasattr(module, part):
            raise AttributeError(f"{type(root).__name__} has no submodule {path!r} (missing {part!r})")
        module = getattr(module, part)
    return module


def set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = get_submodule(root, parent_path) if parent_path else root
    setattr(parent, name, new)
