"""Boolean attention masks (True = attend) built per layer from a per-sample key-validity mask.

Layers hold different numbers of tokens after pruning, so each layer gets its own mask, built from
that layer's ``valid`` ``[B, S_l]`` (False on left padding). Causality is by index, which after
compaction is still original order. A padding query attends to itself only, so no row is empty
(an all-masked row would give NaN in SDPA and poison later layers through masked keys).
"""

from __future__ import annotations

import torch


def prefill_mask(valid: torch.Tensor) -> torch.Tensor:
    """``[B, 1, S, S]`` bool: query ``i`` attends to key ``j <= i`` if ``valid[j]``, and always to itself."""
    s = valid.shape[1]
    idx = torch.arange(s, device=valid.device)
    causal = idx[None, :] <= idx[:, None]  # [S, S]
    allowed = (causal[None] & valid[:, None, :]) | torch.eye(s, dtype=torch.bool, device=valid.device)[None]
    return allowed[:, None]


def decode_mask(key_valid: torch.Tensor) -> torch.Tensor:
    """``[B, 1, 1, K]`` bool for one new query over a layer's ``K`` cached keys (the new token included)."""
    return key_valid[:, None, None, :]
