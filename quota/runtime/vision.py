"""The visual side of a prompt: image features, the image-token span, and vision-tower attention.

- :func:`image_features`: the model's own ``get_image_features`` (vision tower + projector), as
  ``[B, N, d]`` (one image per sample, the same ``N`` for every sample).
- :func:`image_span`: where the ``N`` image placeholder tokens (``config.<spec.image_token_config>``)
  sit in each left-padded row; they must be contiguous.
- :func:`vision_attention`: the VisionZip-style signal, computed from the vision tower's hidden
  states: the attention of the CLS query to every patch (when the features drop CLS, LLaVA's
  ``"default"`` strategy) or the mean attention each token receives (``"full"``), in the vision layer
  that produces the selected features (for CLIP/SigLIP-style encoders). Only the CLS query row is
  formed in the CLS case.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn

from quota.models.spec import ArchSpec, get_submodule
from quota.models.visual_tokens import (
    LLAVA, SIZED_CLASSES, DynamicResolutionError, VisionConfigError, is_dynamic, model_class_of, visual_tokens_of,
)
from quota.runtime.positions import NotSupportedError


def image_token_id(model: nn.Module, spec: ArchSpec) -> int:
    if spec.image_token_config is None:
        raise NotSupportedError(f"family {spec.family!r} has no image token: the runtime needs a VLM")
    value = getattr(model.config, spec.image_token_config, None)
    if value is None:
        raise NotSupportedError(f"model config has no {spec.image_token_config!r}")
    return int(value)


def _as_batch(features, batch: int) -> torch.Tensor:
    if not torch.is_tensor(features):
        pooled = getattr(features, "pooler_output", None)
        features = pooled if pooled is not None else features
    if isinstance(features, (list, tuple)):
        shapes = {tuple(f.shape) for f in features}
        if len(shapes) != 1:
            raise NotSupportedError(
                f"images of one batch must give the same number of visual tokens, got {sorted(shapes)}"
            )
        features = torch.stack(list(features))
    if features.dim() == 2:
        features = features.view(batch, -1, features.shape[-1])
    if features.shape[0] != batch:
        raise NotSupportedError(
            f"one image per sample is supported; got {features.shape[0]} images for {batch} prompts"
        )
    return features  # [B, N, d]


def image_features(model: nn.Module, pixel_values: torch.Tensor, batch: int, **vision_inputs) -> torch.Tensor:
    """``[B, N, d]`` projected image features from the model's ``get_image_features``."""
    fn = getattr(model, "get_image_features", None) or model.model.get_image_features
    params = inspect.signature(fn).parameters
    kwargs = dict(vision_inputs)
    for name in ("vision_feature_layer", "vision_feature_select_strategy"):
        if name in params and name not in kwargs and hasattr(model.config, name):
            kwargs[name] = getattr(model.config, name)
    return _as_batch(fn(pixel_values=pixel_values, **kwargs), batch)


def image_span(input_ids: torch.Tensor, token_id: int, n: int, check: bool = True) -> torch.Tensor:
    """``span_start`` long ``[B]``: the first image token of each row; with ``check`` (which reads back to the
    host), checks there are exactly ``n`` contiguous ones per row."""
    is_image = input_ids == token_id  # [B, S]
    if not check:
        return is_image.int().argmax(-1).long()
    counts = is_image.sum(-1)
    if not bool((counts == n).all()):
        raise NotSupportedError(f"every prompt must hold exactly {n} image tokens (one image); got {counts.tolist()}")
    start = is_image.int().argmax(-1)  # [B]
    idx = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
    inside = (idx >= start[:, None]) & (idx < start[:, None] + n)
    if not bool((inside == is_image).all()):
        raise NotSupportedError("the image tokens of a prompt must be contiguous")
    return start.long()


def _encoder_layers(tower: nn.Module) -> nn.ModuleList:
    for path in ("vision_model.encoder.layers", "encoder.layers"):
        try:
            return get_submodule(tower, path)
        except AttributeError:
            continue
    raise NotSupportedError(f"vision-tower attention needs a CLIP/SigLIP-style encoder, got {type(tower).__name__}")


def vision_attention_unsupported(model: nn.Module, spec: ArchSpec) -> str | None:
    """Why :func:`vision_attention` cannot run on ``model``, or ``None`` when it can: it needs one tile per image
    from a CLIP/SigLIP-style encoder whose patches are the visual tokens (LLaVA-1.5 and the testbed). LLaVA-NeXT's
    tiles, Qwen2-VL's merged patches and Idefics3's pixel shuffle do not map one patch to one token."""
    name = type(model).__name__
    if spec.vision_tower is None:
        return f"{name} has no vision tower"
    if name not in LLAVA:
        return f"vision_attn needs one CLIP/SigLIP tile per image, whose patches are the visual tokens; {name} is not such a model"
    try:
        _encoder_layers(get_submodule(model, spec.vision_tower))
    except (NotSupportedError, AttributeError) as err:
        return str(err)
    return None


@torch.no_grad()
def vision_attention(model: nn.Module, spec: ArchSpec, pixel_values: torch.Tensor) -> torch.Tensor:
    """float32 ``[B, N]`` attention received by each visual token in the vision layer that produces the
    selected features (mean over heads). Runs the vision tower once more, with hidden states."""
    if spec.vision_tower is None:
        raise NotSupportedError("vision_attn needs a vision tower")
    tower = get_submodule(model, spec.vision_tower)
    layers = _encoder_layers(tower)
    feature_layer = getattr(model.config, "vision_feature_layer", -1)
    strategy = getattr(model.config, "vision_feature_select_strategy", "full")
    if not isinstance(feature_layer, int):
        raise NotSupportedError("vision_attn needs a single vision_feature_layer")
    out = tower(pixel_values, output_hidden_states=True, return_dict=True)
    hidden = out.hidden_states  # L_v + 1 tensors [B, P, c]
    produced = feature_layer % len(hidden)
    layer_idx = max(produced - 1, 0)  # the layer whose output is selected (the first one for embeddings)
    layer = layers[layer_idx]
    attn = layer.self_attn
    x = layer.layer_norm1(hidden[layer_idx])  # [B, P, c]
    b, p, _ = x.shape
    heads = attn.num_heads
    q = attn.q_proj(x).view(b, p, heads, -1).transpose(1, 2).float()  # [B, h, P, dh]
    k = attn.k_proj(x).view(b, p, heads, -1).transpose(1, 2).float()
    scale = getattr(attn, "scale", q.shape[-1] ** -0.5)
    if strategy == "default":  # features drop CLS (index 0): CLS query attention to the patches
        probs = torch.softmax((q[:, :, :1] @ k.transpose(-1, -2)) * scale, dim=-1)  # [B, h, 1, P]
        return probs[:, :, 0, 1:].mean(1)
    probs = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)  # [B, h, P, P]
    return probs.mean(dim=(1, 2))


def expected_visual_tokens(model: nn.Module) -> int | None:
    """``N`` per image known from the config alone (fixed-resolution LLaVA-1.5, Idefics3 without splitting), else
    ``None`` (dynamic resolution: N depends on the image)."""
    if is_dynamic(model.config):
        return None
    if model_class_of(model.config) in SIZED_CLASSES:
        try:
            return visual_tokens_of(model.config)
        except (VisionConfigError, DynamicResolutionError):
            return None
    vision = getattr(model.config, "vision_config", None)
    size, patch = getattr(vision, "image_size", None), getattr(vision, "patch_size", None)
    strategy = getattr(model.config, "vision_feature_select_strategy", None)
    if not isinstance(size, int) or not isinstance(patch, int) or strategy not in ("default", "full"):
        return None
    return (size // patch) ** 2 + (1 if strategy == "full" else 0)
