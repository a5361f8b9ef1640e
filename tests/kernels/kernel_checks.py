"""Shared checks of the kernel tests: the device, poisoned outputs and the tolerance rules."""

from __future__ import annotations

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.gpu
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FLOAT32_FLOOR = 1e-6
"""Relative error every float32 computation is allowed on top of the twice-PyTorch rule (rounding)."""


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """``||x - ref|| / ||ref||`` in float64 on the CPU; NaN anywhere gives inf."""
    x = x.detach().double().cpu()
    ref = ref.detach().double().cpu()
    if not torch.isfinite(x).all():
        return float("inf")
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def assert_twice_torch_error(out: torch.Tensor, ref: torch.Tensor, torch_same_dtype: torch.Tensor) -> None:
    """Tolerance rule for float outputs: the kernel's error against a float64 reference is at most
    twice the error plain PyTorch makes at the kernel's dtype, plus a float32 rounding floor."""
    err = rel_err(out, ref)
    base = rel_err(torch_same_dtype, ref)
    assert err <= 2 * base + FLOAT32_FLOOR, f"kernel error {err:.3g} > 2 x torch error {base:.3g} + {FLOAT32_FLOOR}"


def assert_codes_equal_or_tie(codes: torch.Tensor, ref_codes: torch.Tensor, exact_values: torch.Tensor,
                              tie_tol: float = 1e-3, max_fraction: float = 1e-3) -> None:  # fmt: skip
    """Integer codes after an in-kernel Hadamard: equal to the reference's except where the exact
    (float64) pre-rounding value lies within ``tie_tol`` of a rounding boundary, there off by one at
    most, and on no more than ``max_fraction`` of the elements."""
    codes = codes.cpu().long()
    ref_codes = ref_codes.cpu().long()
    diff = (codes - ref_codes).abs()
    assert int(diff.max()) <= 1, f"codes differ by {int(diff.max())}"
    bad = diff != 0
    if bad.any():
        v = exact_values.cpu().double()[bad]
        dist = ((v - v.floor()) - 0.5).abs()  # distance of the exact value to a half-integer
        far = float(dist.max())
        assert bool((dist <= tie_tol).all()), f"a code differs away from a rounding tie (distance {far:.3g})"
        assert bad.double().mean().item() <= max_fraction, f"{int(bad.sum())} codes differ"


def poison_like(t: torch.Tensor) -> torch.Tensor:
    """A tensor of ``t``'s shape/dtype/device full of a value no kernel writes by accident."""
    if t.dtype.is_floating_point:
        return torch.full_like(t, float("nan"))
    return torch.full_like(t, 0x5A if t.dtype == torch.uint8 else -0x5B)
