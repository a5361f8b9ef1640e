"""Low-rank adapters as ``torch.nn.utils.parametrize`` parametrizations: ``W = W0 + (alpha / r) B A``.

Training adapts a frozen linear without changing its class or its stored ``W0``; :func:`lora_factors`
exports ``A`` and ``B`` under the linear's module path, the format :func:`quota.testbed.model.merge_lora`
merges at load time.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn.utils import parametrize


class LoRADelta(nn.Module):
    """Parametrization adding ``scale * B @ A`` (``A`` ``[r, in]``, ``B`` ``[out, r]``, ``B`` starts at 0)."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.scale * (self.lora_B @ self.lora_A)).to(weight.dtype)


def add_lora(root: nn.Module, paths: list[str], rank: int, alpha: float) -> list[nn.Parameter]:
    """Attach a LoRA parametrization to each linear at ``paths`` (relative to ``root``); returns the new params."""
    params = []
    for path in paths:
        linear = root.get_submodule(path)
        delta = LoRADelta(linear.out_features, linear.in_features, rank, alpha).to(linear.weight.device)
        parametrize.register_parametrization(linear, "weight", delta)
        params += [delta.lora_A, delta.lora_B]
    return params


def lora_factors(root: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """``{<path>.lora_A: A, <path>.lora_B: B}`` for every parametrized linear under ``root``."""
    out = {}
    for name, module in root.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, LoRADelta):
                    out[f"{prefix}{name}.lora_A"] = p.lora_A.detach().cpu().contiguous()
                    out[f"{prefix}{name}.lora_B"] = p.lora_B.detach().cpu().contiguous()
    return out
