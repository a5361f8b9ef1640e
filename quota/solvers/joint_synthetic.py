"""Synthetic joint problems of any size, for tests and benchmarks (no profile needed).

``synthetic_joint_problem(n_layers, n_candidates, precisions)`` builds a 7B-like decoder (hidden size
4096, 12 * 4096**2 weights per layer, 40 text tokens plus N visual tokens) on an H200-like device
(4.8e12 B/s, 989 dense bf16 TFLOP/s). Each option's weight and activation bits come from its name
(``w4a8`` -> 4 and 8; ``fp8``, ``int8`` -> 8 and 8; ``bf16``, ``fp16`` -> 16 and 16; any other name
by its position, lowest first); the reference is the last option. Lower precision gives:

- more precision damage: ``s_l * q_p`` with ``q_p`` the relative quantization noise
  ``2**-(w-4) + 2**-(a-4)`` less the reference's, ``s_l`` larger at the first and last layers;
- steeper token curves: the base curve of ``quota.solvers.synthetic.synthetic_damage`` (shape
  ``"smooth"``, ``"staircase"`` or ``"noisy"``) times ``1 + 0.5 * q_p / max q``;
- lower costs: ``weight_bytes = params * w / 8`` ([L, P]); ``kv_bytes = 2 * 4096 * (40 + k) * kv / 8``
  with KV bits 4, 8 or 16 (the activation bits, at most 8 below 16); ``ttft`` (seconds) the dense
  flops at a speed-up of 1.9 (8-bit activations) or 2.0 (4-bit) plus one weight read; ``decode``
  (seconds per token) one weight read and one KV read; each time plus 4 us of launch overhead and a
  3% per-(layer, option) spread.

``time_quantum`` (default ``2**-20`` s, about 0.95 us) rounds times up to its multiples, so that every
cost is an integer multiple of a power of two and the DP's units are exact; None keeps float times.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from quota.solvers.joint_problem import JointProblem
from quota.solvers.problem import default_grid
from quota.solvers.synthetic import synthetic_damage

HIDDEN = 4096
PARAMS = 12 * HIDDEN**2  # weights per decoder layer
TEXT_TOKENS = 40
BANDWIDTH = 4.8e12  # bytes per second
BF16_FLOPS = 989e12  # dense bf16 FLOP per second
OVERHEAD = 4e-6  # seconds of launch overhead per layer and pass
_NAMED_BITS = {"fp8": (8, 8), "int8": (8, 8), "bf16": (16, 16), "fp16": (16, 16), "fp32": (32, 32)}


def option_bits(name: str, position: int, n_options: int) -> tuple[int, int]:
    """(weight bits, activation bits) of an option, from its name or else its position (lowest first)."""
    match = re.fullmatch(r"w(\d+)a(\d+)", name.lower())
    if match:
        return int(match.group(1)), int(match.group(2))
    if name.lower() in _NAMED_BITS:
        return _NAMED_BITS[name.lower()]
    bits = 4 * 2 ** round(2 * position / max(n_options - 1, 1))
    return bits, bits


def _speedup(act_bits: int) -> float:
    return 1.0 if act_bits >= 16 else 1.9 if act_bits >= 8 else 2.0


def synthetic_joint_problem(
    n_layers: int,
    n_candidates: int,
    precisions: Sequence[str] = ("w4a4", "w4a8", "fp8", "bf16"),
    *,
    shape: str = "smooth",
    budgets: Mapping[str, float] | None = None,
    n_tokens: int = 576,
    time_quantum: float | None = 2.0**-20,
    seed: int = 0,
) -> JointProblem:
    """A joint problem with ``n_layers`` layers, ``n_candidates`` keep counts
    (``default_grid(n_tokens, n_candidates - 1)``) and the named options (the last is the reference).

    ``budgets``: kind -> fraction of the all-reference all-tokens cost (default ``{"ttft": 0.35}``)."""
    grid = default_grid(n_tokens, n_candidates - 1)
    if len(grid) != n_candidates:
        raise ValueError(f"default_grid({n_tokens}, {n_candidates - 1}) has {len(grid)} values, not {n_candidates}")
    rng = np.random.default_rng(seed)
    n_prec = len(precisions)
    bits = np.array([option_bits(name, i, n_prec) for i, name in enumerate(precisions)], dtype=np.float64)  # [P, 2]
    w_bits, a_bits = bits[:, 0], bits[:, 1]  # [P]
    noise = 2.0 ** -(w_bits - 4) + 2.0 ** -(a_bits - 4)  # [P]
    noise = noise - noise[-1]
    lowness = noise / noise.max() if noise.max() > 0 else np.zeros(n_prec)  # [P], 1 at the noisiest option

    sensitivity = 0.15 * rng.uniform(0.5, 1.5, n_layers)  # [L]
    sensitivity[[0, -1]] *= 3.0
    precision_damage = sensitivity[:, None] * lowness[None, :]  # [L, P]
    base = synthetic_damage(n_layers, np.asarray(grid), n_tokens, shape, seed)  # [L, G]
    token_damage = base[None] * (1.0 + 0.5 * lowness)[:, None, None]  # [P, L, G]

    kept = TEXT_TOKENS + np.asarray(grid, dtype=np.float64)  # [G] tokens in the layer
    kv_bits = np.where(a_bits >= 16, 16.0, np.minimum(a_bits, 8.0))  # [P]
    weight_bytes = np.broadcast_to(PARAMS * w_bits / 8, (n_layers, n_prec))  # [L, P]
    kv_bytes = np.broadcast_to(2 * HIDDEN * kept[None, :] * kv_bits[:, None] / 8, (n_layers, n_prec, len(grid)))
    spread = 1.0 + 0.03 * rng.standard_normal((n_layers, n_prec, 1))  # [L, P, 1]
    weight_read = weight_bytes[:, :, None] / BANDWIDTH  # [L, P, 1] seconds
    flops_time = 2 * PARAMS * kept[None, None, :] / (BF16_FLOPS * np.vectorize(_speedup)(a_bits)[None, :, None])
    ttft = (OVERHEAD + weight_read + flops_time) * spread  # [L, P, G] seconds
    decode = (OVERHEAD + weight_read + kv_bytes / BANDWIDTH) * spread  # [L, P, G] seconds per token
    if time_quantum is not None:
        ttft = np.ceil(ttft / time_quantum) * time_quantum
        decode = np.ceil(decode / time_quantum) * time_quantum
    return JointProblem(
        n_tokens=n_tokens,
        grid=grid,
        precisions=tuple(precisions),
        precision_damage=precision_damage,
        token_damage=token_damage,
        budgets=dict(budgets) if budgets is not None else {"ttft": 0.35},
        costs={"ttft": ttft, "decode": decode, "weight_bytes": weight_bytes, "kv_bytes": kv_bytes},
    )
