"""Where models run by default: CUDA in bfloat16 when there is a GPU, else the CPU in float32."""

from __future__ import annotations

import torch


def placement(device: str | None = None) -> tuple[str, torch.dtype]:
    """``(device, dtype)``: ``device`` (default ``"cuda"`` if available, else ``"cpu"``) and bfloat16 on CUDA,
    float32 elsewhere (CPU bfloat16 matmuls are slow and the reference path computes in float32)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return device, (torch.bfloat16 if device.startswith("cuda") else torch.float32)
