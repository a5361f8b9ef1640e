"""Tiny random VLMs and prompts for the runtime tests (seeded, float32, CPU)."""

from __future__ import annotations

import torch

IMAGE_TOKEN = 127
VOCAB = 128


def tiny_llava(seed: int = 0, layers: int = 4, image_size: int = 32, strategy: str = "default"):
    """LlavaForConditionalGeneration: CLIP 2-layer tower (patch 8: ``(image_size / 8)^2`` visual tokens),
    Llama text model with ``layers`` layers, GQA (4 query heads, 2 KV heads)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, patch_size=8)
    text = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN,
                         vision_feature_select_strategy=strategy, image_seq_length=(image_size // 8) ** 2)
    model = LlavaForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # larger weights than the default init, so greedy outputs vary with the input
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.dim() == 2 and not name.startswith("model.vision_tower"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def n_visual(model) -> int:
    cfg = model.config.vision_config
    return (cfg.image_size // cfg.patch_size) ** 2


def prompt(n: int, head: int, tail: int, seed: int) -> list[int]:
    """``head`` text tokens, ``n`` image tokens, ``tail`` text tokens (random ids below the image token)."""
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(1, IMAGE_TOKEN - 1, (head + tail,), generator=g).tolist()
    return text[:head] + [IMAGE_TOKEN] * n + text[head:]


def left_pad(rows: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


def pixels(batch: int, image_size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, image_size, image_size, generator=g)


QWEN_IMAGE, QWEN_START, QWEN_END = 120, 122, 123


def tiny_qwen2vl(seed: int = 0, layers: int = 4):
    """Qwen2VLForConditionalGeneration: 1-block vision tower (patch 4, merge 2), M-RoPE text model."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, bos_token_id=1, eos_token_id=2),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=4,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=QWEN_IMAGE, video_token_id=121, vision_start_token_id=QWEN_START, vision_end_token_id=QWEN_END,
        bos_token_id=1, eos_token_id=2,
    )
    model = Qwen2VLForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and not name.startswith("model.visual"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def qwen_inputs(grid: int, heads_tails: list[tuple[int, int]], seed: int = 0):
    """Left-padded ``(input_ids, attention_mask, pixel_values, image_grid_thw, rows)`` for one ``grid x grid``
    patch image per prompt (``grid^2 / 4`` visual tokens after the merge)."""
    n = grid * grid // 4
    rows = []
    for i, (head, tail) in enumerate(heads_tails):
        g = torch.Generator().manual_seed(seed + i)
        text = torch.randint(3, 110, (head + tail,), generator=g).tolist()
        rows.append(text[:head] + [QWEN_START] + [QWEN_IMAGE] * n + [QWEN_END] + text[head:])
    ids, mask = left_pad(rows)
    g = torch.Generator().manual_seed(seed + 100)
    pv = torch.randn(len(rows) * grid * grid, 3 * 2 * 4 * 4, generator=g)
    thw = torch.tensor([[1, grid, grid]] * len(rows))
    return ids, mask, pv, thw, rows


def tiny_plans(n: int):
    """One plan of every baseline for a 4-layer model with ``n`` visual tokens."""
    from quota.runtime.baselines import baseline_plan, fastv, pyramiddrop

    return [fastv(10, n, 4, k_layer=2), pyramiddrop(7, n, 4, stages=2, first=1), baseline_plan("sparsevlm", 7, n, 4),
            baseline_plan("sparsevlm_norecycle", 7, n, 4), baseline_plan("visionzip", 6, n, 4), baseline_plan("random", 6, n, 4, seed=3)]


def span_inputs(b=3, s=30, d=12, n=14, seed=0):
    """Random inputs of a pruning point: ``hidden`` [B, S, d], ``positions`` [2, B, S], ``valid`` [B, S], ``scores``
    [B, n] and ``span`` [B] (each sample's visual span of ``n`` tokens somewhere in its ``S``)."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, s, d, generator=g)
    positions = torch.stack([torch.arange(s).expand(b, s), 100 + torch.arange(s).expand(b, s)])  # [2, B, S]
    valid = torch.rand(b, s, generator=g) > 0.1
    scores = torch.rand(b, n, generator=g)
    span = torch.randint(0, s - n + 1, (b,), generator=g)
    return hidden, positions, valid, scores, span
