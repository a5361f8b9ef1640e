"""A small synthetic profile (no model needed) for solver and command-line tests."""

from __future__ import annotations

import numpy as np

from quota.profiling.profile import Profile
from quota.quant.config import QuantConfig
from quota.solvers import default_grid


def synthetic_profile(n_layers: int = 6, n_tokens: int = 64, steps: int = 16, seed: int = 0) -> Profile:
    rng = np.random.default_rng(seed)
    grid = default_grid(n_tokens, steps)
    k = np.asarray(grid, dtype=np.float64)
    sensitivity = np.linspace(3.0, 0.3, n_layers) * rng.uniform(0.8, 1.2, n_layers)  # early layers matter more
    damage = sensitivity[:, None] * (1 - k / n_tokens)[None, :] ** 2  # [L, G], 0 at k = N
    tokens = np.tile(k, (n_layers, 1))
    flops = 2e9 * (tokens + 40)  # text tokens cost too
    kv = 4096.0 * tokens
    latency = 1e-4 * np.ceil((tokens + 40) / 64)  # tile steps
    per_task = {t: damage * w for t, w in (("counting", 1.5), ("reading", 0.5))}
    return Profile(
        model_id="synthetic", model_hash="0" * 64, n_layers=n_layers, n_visual_tokens=n_tokens, grid=grid,
        damage={"kl": damage, "task_loss": damage * 2}, per_task=per_task,
        costs={"tokens": tokens, "flops": flops, "kv": kv, "latency": latency},
        score_weights={"attn_last": 0.6, "magnitude": 0.2, "risk": 0.2}, quant=QuantConfig().to_dict(),
        data_version="synthvqa-v1", device="none",
    )
