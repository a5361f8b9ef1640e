"""Tiny random models of the supported families, for CPU tests (seeded, float32 unless asked)."""

from __future__ import annotations

import torch


def tiny_llama(seed: int = 0, dtype=torch.float32, tie: bool = True, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=128, hidden_size=96, intermediate_size=192, num_hidden_layers=layers, num_attention_heads=6,
        num_key_value_heads=2, head_dim=16, tie_word_embeddings=tie, max_position_embeddings=256,
    )
    model = LlamaForCausalLM(cfg).to(dtype).eval()
    _randomize_norms(model)
    return model


def tiny_qwen2(seed: int = 0, dtype=torch.float32, layers: int = 2):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=128, hidden_size=96, intermediate_size=160, num_hidden_layers=layers, num_attention_heads=6,
        num_key_value_heads=2, tie_word_embeddings=False, max_position_embeddings=256,
    )
    model = Qwen2ForCausalLM(cfg).to(dtype).eval()
    _randomize_norms(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


def _randomize_norms(model) -> None:
    """Non-trivial RMSNorm scales, so that folding them is actually tested."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand_like(p) + 0.5)
