"""Packing of 4-bit codes, two per byte along the last (K) dimension.

Layout (shared by every kernel): element ``2i`` goes to the low nibble of byte ``i`` and element
``2i + 1`` to the high nibble. Weights stay K-major, ``[N, K] -> [N, K // 2]``, the ``nn.Linear``
layout that Triton's int8 ``tl.dot`` needs on Hopper.

Signed codes (weights, activations) lie in ``[-8, 7]`` and are packed into ``torch.int8`` bytes;
unsigned codes (the asymmetric KV cache) lie in ``[0, 15]`` and are packed into ``torch.uint8``.
"""

from __future__ import annotations

import torch


def _check_even(codes: torch.Tensor) -> None:
    if codes.shape[-1] % 2 != 0:
        raise ValueError(f"int4 packing needs an even last dimension, got shape {tuple(codes.shape)}")


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack signed codes ``[..., K]`` (any integer dtype, values in [-8, 7]) into int8 ``[..., K // 2]``."""
    _check_even(codes)
    c = codes.to(torch.int16) & 0xF  # two's-complement nibble
    byte = c[..., 0::2] | (c[..., 1::2] << 4)  # [..., K/2] in [0, 255]
    return byte.to(torch.uint8).view(torch.int8)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: int8 ``[..., K // 2]`` -> int8 codes ``[..., K]`` in [-8, 7]."""
    b = packed.view(torch.uint8).to(torch.int16)
    lo = ((b & 0xF) ^ 8) - 8  # sign-extend the nibble
    hi = (((b >> 4) & 0xF) ^ 8) - 8
    return torch.stack((lo, hi), dim=-1).flatten(-2).to(torch.int8)


def pack_uint4(codes: torch.Tensor) -> torch.Tensor:
    """Pack unsigned codes ``[..., K]`` (values in [0, 15]) into uint8 ``[..., K // 2]``."""
    _check_even(codes)
    c = codes.to(torch.int16) & 0xF
    return (c[..., 0::2] | (c[..., 1::2] << 4)).to(torch.uint8)


def unpack_uint4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_uint4`: uint8 ``[..., K // 2]`` -> uint8 codes ``[..., K]`` in [0, 15]."""
    b = packed.to(torch.int16)
    return torch.stack((b & 0xF, (b >> 4) & 0xF), dim=-1).flatten(-2).to(torch.uint8)
