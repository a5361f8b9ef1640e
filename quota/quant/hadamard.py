"""Hadamard transforms: exact orthonormal Sylvester matrices, block-diagonal ones for sizes that are
not powers of two (576 = 9 x 64, 1536 = 3 x 512), and seeded random orthogonal rotations.

The online transforms (the ``down_proj`` input, the key head dimension) must be cheap, so they are
block-diagonal with the largest power-of-two block that divides the size. The offline residual-stream
rotation is folded into weights, so it can afford to mix blocks too.
"""

from __future__ import annotations

import functools
import math

import torch


def is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def hadamard_block_size(n: int) -> int:
    """Largest power of two dividing ``n``: the block of the block-diagonal Hadamard of size ``n``."""
    if n <= 0:
        raise ValueError(f"Hadamard size must be positive, got {n}")
    return n & -n


@functools.lru_cache(maxsize=32)
def _sylvester(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h / math.sqrt(n)


def hadamard_matrix(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal Sylvester Hadamard matrix ``[n, n]`` (``n`` a power of two); symmetric, ``H @ H = I``."""
    if not is_power_of_two(n):
        raise ValueError(f"a Sylvester Hadamard matrix needs a power-of-two size, got {n}")
    return _sylvester(n).to(dtype)


def block_hadamard_matrix(n: int, block: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Block-diagonal orthonormal Hadamard ``[n, n]`` with power-of-two blocks (default: the largest)."""
    block = block or hadamard_block_size(n)
    if n % block != 0:
        raise ValueError(f"block {block} does not divide size {n}")
    return torch.block_diag(*[hadamard_matrix(block, torch.float64)] * (n // block)).to(dtype)


def apply_block_hadamard(x: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """``x @ blockdiag(H_b, ..., H_b)`` along the last dimension, by a fast Walsh-Hadamard transform.

    ``x``: ``[..., n]``; returns the same shape and dtype (computed in float32 at least).
    The block-diagonal Hadamard is symmetric and its own inverse.
    """
    n = x.shape[-1]
    block = block or hadamard_block_size(n)
    if n % block != 0 or not is_power_of_two(block):
        raise ValueError(f"block {block} must be a power of two dividing {n}")
    dtype = x.dtype
    y = x.to(torch.promote_types(dtype, torch.float32)).reshape(-1, n // block, block)  # [R, n/b, b]
    h = 1
    while h < block:
        y = y.view(y.shape[0], n // block, block // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        y = torch.stack((a + b, a - b), dim=-2)
        h *= 2
    y = y.reshape(x.shape) / math.sqrt(block)
    return y.to(dtype)


@functools.lru_cache(maxsize=32)
def _device_hadamard(n: int, device: torch.device) -> torch.Tensor:
    return hadamard_matrix(n, torch.float32).to(device)


def rotate_by_hadamard(x: torch.Tensor) -> torch.Tensor:
    """``x @ H_n`` along a power-of-two last dimension ``n``, as one float32 matmul with a cached ``H_n``: what
    :func:`apply_block_hadamard` computes (to float32 rounding), in three launches instead of a few per stage.
    Returns ``x``'s shape and dtype."""
    n = x.shape[-1]
    if not is_power_of_two(n):
        raise ValueError(f"rotate_by_hadamard needs a power-of-two last dimension, got {n}")
    return (x.float() @ _device_hadamard(n, x.device)).to(x.dtype)


def random_orthogonal(n: int, seed: int) -> torch.Tensor:
    """Seeded Haar-random orthogonal matrix ``[n, n]`` (float64), deterministic across platforms."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def random_hadamard_rotation(n: int, seed: int, mix_blocks: bool = True) -> torch.Tensor:
    """Randomized orthogonal Hadamard rotation ``[n, n]`` (float64), QuaRot-style: ``diag(s) @ R``.

    ``s`` are seeded random signs. For a power-of-two ``n``, ``R = H_n``. Otherwise ``n = m * b`` with
    ``b`` the largest power-of-two factor and ``R = kron(O_m, H_b)``: with ``mix_blocks`` the ``m``
    blocks are mixed by a seeded random orthogonal ``O_m`` (so one outlier channel spreads over all ``n``
    channels); without it ``O_m = I`` and ``R`` is the block-diagonal Hadamard.
    """
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n,), generator=g).to(torch.float64) * 2 - 1
    b = hadamard_block_size(n)
    m = n // b
    mixer = random_orthogonal(m, seed + 1) if (mix_blocks and m > 1) else torch.eye(m, dtype=torch.float64)
    rot = torch.kron(mixer.contiguous(), hadamard_matrix(b, torch.float64).contiguous())
    return signs.unsqueeze(1) * rot
