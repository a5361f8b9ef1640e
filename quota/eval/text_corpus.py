"""A fixed English corpus shipped with Python (``pydoc_data.topics``) for calibration and evaluation
of language models: calibration sequences come from its first half, evaluation ones from its second."""

from __future__ import annotations

import torch

CORPUS_NAME = "pydoc_data.topics"


def corpus_text() -> str:
    """All topics, in sorted key order, joined by blank lines (deterministic for a Python version)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def token_blocks(tokenizer, n_blocks: int, seq_len: int, part: str) -> torch.Tensor:
    """``[n_blocks, seq_len]`` token ids: consecutive blocks from the start of the corpus's first half
    (``part="calibration"``) or of its second half (``part="evaluation"``)."""
    if part not in ("calibration", "evaluation"):
        raise ValueError(f"part must be 'calibration' or 'evaluation', got {part!r}")
    ids = tokenizer(corpus_text(), return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    half = ids.shape[0] // 2
    ids = ids[:half] if part == "calibration" else ids[half:]
    need = n_blocks * seq_len
    if ids.shape[0] < need:
        raise ValueError(f"the {part} half has {ids.shape[0]} tokens, fewer than {n_blocks} x {seq_len}")
    return ids[:need].view(n_blocks, seq_len).clone()
