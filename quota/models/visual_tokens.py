"""N, the visual tokens of one image, from a checkpoint's config (and, where resizing decides it, its image processor).

Fixed-resolution families give every image the same N: LLaVA-1.5 (``(S / p)^2``, plus the CLS token under the
``full`` feature strategy) and Idefics3/SmolVLM without image splitting (``(S / p)^2 / scale^2``). Dynamic-resolution
families give N as a function of the image's original ``(height, width)``:

- LLaVA-NeXT (anyres): the base tile, plus the best-fitting grid of tiles with the padding rows/columns removed,
  plus one newline token per row of features;
- Qwen2-VL / Qwen2.5-VL: the image is resized to multiples of ``patch * merge`` with its pixel count kept within the
  image processor's bounds (``smart_resize``), then ``(H / patch) * (W / patch) / merge^2``;
- Idefics3/SmolVLM with image splitting: the image processor's crop grid, ``(rows * cols + 1)`` crops of
  ``(S / p)^2 / scale^2`` tokens each.

These mirror what the family's processor inserts (the tests count the image tokens it writes). A config that
quota cannot size raises :class:`VisionConfigError`, naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from quota.models.registry import UnsupportedModelError


class VisionConfigError(UnsupportedModelError):
    """The checkpoint's vision config does not say how many visual tokens an image becomes."""


class DynamicResolutionError(ValueError):
    """N was asked without an image size for a family whose N depends on the image."""


LLAVA = ("LlavaForConditionalGeneration",)
LLAVA_NEXT = ("LlavaNextForConditionalGeneration",)
QWEN2_VL = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")
IDEFICS3 = ("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration")
SIZED_CLASSES = LLAVA + LLAVA_NEXT + QWEN2_VL + IDEFICS3
CLS_TOWERS = {"clip_vision_model": 1, "siglip_vision_model": 0}  # vision tower -> leading tokens besides patches


def model_class_of(config) -> str:
    architectures = getattr(config, "architectures", None) or []
    return architectures[0] if architectures else type(config).__name__


def _int(obj: Any, name: str, where: str) -> int:
    value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise VisionConfigError(f"{where}.{name} is {value!r}: quota needs a positive integer to size visual tokens")
    return value


def _patches(vision, where: str = "vision_config") -> int:
    """Patches per side of one tile: ``image_size / patch_size``, which must divide."""
    size, patch = _int(vision, "image_size", where), _int(vision, "patch_size", where)
    if size % patch:
        raise VisionConfigError(f"{where}.image_size {size} is not a multiple of patch_size {patch}")
    return size // patch


def _llava_base(config) -> int:
    """Tokens of one LLaVA tile: patches, plus the tower's CLS under ``full``, minus nothing else."""
    vision = config.vision_config
    tower = getattr(vision, "model_type", None)
    if tower not in CLS_TOWERS:
        raise VisionConfigError(f"vision_config.model_type {tower!r} is not a tower quota can size "
                                f"(known: {', '.join(CLS_TOWERS)})")
    strategy = getattr(config, "vision_feature_select_strategy", None)
    if strategy not in ("default", "full"):
        raise VisionConfigError(f"vision_feature_select_strategy {strategy!r} is neither 'default' nor 'full'")
    return _patches(vision) ** 2 + CLS_TOWERS[tower] - (1 if strategy == "default" else 0)


def _pinpoints(config) -> list[tuple[int, int]]:
    raw = getattr(config, "image_grid_pinpoints", None)
    try:
        points = [(int(h), int(w)) for h, w in raw]
    except (TypeError, ValueError):
        raise VisionConfigError(f"image_grid_pinpoints {raw!r} is not a list of [height, width] pairs") from None
    if not points:
        raise VisionConfigError("image_grid_pinpoints is empty")
    return points


def _best_resolution(size: tuple[int, int], points: list[tuple[int, int]]) -> tuple[int, int]:
    """The pinpoint that keeps the most of the image and wastes the least (transformers' select_best_resolution)."""
    h0, w0 = size
    best, most, waste = points[0], -1, math.inf
    for h, w in points:
        scale = min(w / w0, h / h0)
        effective = min(int(w0 * scale) * int(h0 * scale), w0 * h0)
        wasted = w * h - effective
        if effective > most or (effective == most and wasted < waste):
            best, most, waste = (h, w), effective, wasted
    return best


def _llava_next(config, size: tuple[int, int]) -> int:
    tile = _int(config.vision_config, "image_size", "vision_config")
    side = _patches(config.vision_config)
    best_h, best_w = _best_resolution(size, _pinpoints(config))
    cur_h, cur_w = side * (best_h // tile), side * (best_w // tile)  # feature grid of the tiles
    h0, w0 = size
    if w0 / h0 > cur_w / cur_h:  # wider than the grid: rows of padding go
        cur_h -= (cur_h - int(round(h0 * (cur_w / w0), 7))) // 2 * 2
    else:
        cur_w -= (cur_w - int(round(w0 * (cur_h / h0), 7))) // 2 * 2
    return _llava_base(config) + cur_h * cur_w + cur_h  # base tile + unpadded grid + one newline per row


def _pixel_bounds(image_processor) -> tuple[int, int]:
    size = getattr(image_processor, "size", None) or {}
    get = size.get if isinstance(size, Mapping) else lambda k: getattr(size, k, None)
    lo = get("shortest_edge") or getattr(image_processor, "min_pixels", None)
    hi = get("longest_edge") or getattr(image_processor, "max_pixels", None)
    if not (isinstance(lo, int) and isinstance(hi, int) and 0 < lo <= hi):
        raise VisionConfigError(f"the image processor's pixel bounds (size shortest_edge/longest_edge or "
                                f"min_pixels/max_pixels) are {lo!r}/{hi!r}: quota cannot size Qwen2-VL images")
    return lo, hi


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize: sides multiples of ``factor``, pixel count within the bounds, aspect kept."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image of {height} x {width}: aspect ratio above 200, which Qwen2-VL refuses")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def _qwen2_vl(config, image_processor, size: tuple[int, int]) -> int:
    patch = _int(config.vision_config, "patch_size", "vision_config")
    merge = _int(config.vision_config, "spatial_merge_size", "vision_config")
    if image_processor is None:
        raise VisionConfigError("Qwen2-VL images are sized by the image processor's pixel bounds: give the processor")
    for name, want in (("patch_size", patch), ("merge_size", merge)):
        got = getattr(image_processor, name, want)
        if got != want:
            raise VisionConfigError(f"image processor {name} {got} differs from the model's {want}")
    h, w = smart_resize(*size, patch * merge, *_pixel_bounds(image_processor))
    return (h // patch) * (w // patch) // merge**2


def _idefics3_tile(config) -> int:
    scale = _int(config, "scale_factor", "config")
    side = _patches(config.vision_config)
    if side % scale:
        raise VisionConfigError(f"vision patches per side {side} is not a multiple of scale_factor {scale}")
    return (side // scale) ** 2


def _splits(image_processor) -> bool:
    return bool(getattr(image_processor, "do_image_splitting", False)) if image_processor is not None else False


def is_dynamic(config, image_processor=None) -> bool:
    """Whether N depends on the image's size for this checkpoint."""
    name = model_class_of(config)
    return name in LLAVA_NEXT + QWEN2_VL or (name in IDEFICS3 and _splits(image_processor))


def visual_tokens_of(config, image_processor=None, image_size: tuple[int, int] | None = None) -> int:
    """N for one image of ``image_size`` = ``(height, width)`` in pixels, as the model's processor would see it.

    ``image_size`` may be left out for fixed-resolution checkpoints; for dynamic ones it is required
    (:class:`DynamicResolutionError`). Qwen2-VL and splitting Idefics3/SmolVLM also need ``image_processor``
    (its resize bounds or crop grid decide N). :class:`VisionConfigError` when the config cannot be sized."""
    name = model_class_of(config)
    if name not in SIZED_CLASSES:
        raise VisionConfigError(f"quota cannot size the visual tokens of {name}; it sizes {', '.join(SIZED_CLASSES)}")
    if image_size is not None:
        h, w = (int(v) for v in image_size)
        if h <= 0 or w <= 0:
            raise ValueError(f"image_size must be a positive (height, width), got {image_size!r}")
        image_size = (h, w)
    if name in LLAVA:
        return _llava_base(config)
    if name in IDEFICS3 and not _splits(image_processor):
        return _idefics3_tile(config)
    if image_size is None:
        raise DynamicResolutionError(f"{name} has dynamic resolution: N depends on the image, give image_size=(h, w)")
    if name in LLAVA_NEXT:
        return _llava_next(config, image_size)
    if name in QWEN2_VL:
        return _qwen2_vl(config, image_processor, image_size)
    count = getattr(image_processor, "get_number_of_image_patches", None)
    if count is None:
        raise VisionConfigError(
            f"{type(image_processor).__name__} splits images but has no get_number_of_image_patches to count crops"
        )
    _, rows, cols = count(*image_size, {})
    return _idefics3_tile(config) * (rows * cols + 1)  # every crop, plus the global image
