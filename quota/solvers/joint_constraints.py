"""Per-layer precision constraints of the joint program, and the joint domain mask.

A joint problem takes the keep-count constraints of ``quota.solvers.constraints`` unchanged
(``MinKeepBefore``, ``FixedLayer``), absolute caps as ``CostCap`` (over a joint cost kind, in that
kind's units), and one constraint of its own, ``AllowedPrecisions``. ``LinearConstraint`` (an
``[L, G]`` row) has no joint meaning and is refused by validation.

The domain of layer l is the set of (precision, keep index) pairs its domain constraints allow:
``allowed[l, p, g] = precision_ok[l, p] and keep_ok[l, g]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quota.solvers.constraints import CostCap, FixedLayer, MinKeepBefore, describe, layer_mask


@dataclass(frozen=True)
class AllowedPrecisions:
    """Layer ``layer`` runs at one of ``precisions`` (names from the problem's ``precisions``).

    One name pins the layer: ``AllowedPrecisions(0, ("bf16",))`` keeps layer 0 in bf16."""

    layer: int
    precisions: tuple[str, ...]


JointConstraint = MinKeepBefore | FixedLayer | CostCap | AllowedPrecisions


def describe_joint(constraint: JointConstraint) -> str:
    """A short human-readable name of a joint constraint, used in error messages."""
    if isinstance(constraint, AllowedPrecisions):
        return f"AllowedPrecisions(layer={constraint.layer}, precisions={','.join(constraint.precisions)})"
    return describe(constraint)


def joint_domain(
    constraints: tuple[JointConstraint, ...], precisions: tuple[str, ...], grid: np.ndarray, n_layers: int
) -> tuple[np.ndarray, list[list[str]]]:
    """Allowed (precision, keep index) pairs per layer, ``[L, P, G]`` bool, after the domain constraints.

    Also returns, per layer, the names of the domain constraints restricting it (for diagnostics)."""
    keep_ok = np.ones((n_layers, len(grid)), dtype=bool)  # [L, G]
    precision_ok = np.ones((n_layers, len(precisions)), dtype=bool)  # [L, P]
    reasons: list[list[str]] = [[] for _ in range(n_layers)]
    for c in constraints:
        if isinstance(c, AllowedPrecisions):
            precision_ok[c.layer] &= np.isin(np.asarray(precisions), np.asarray(c.precisions))
            reasons[c.layer].append(describe_joint(c))
            continue
        for layer in range(n_layers):
            mask = layer_mask(c, grid, layer)
            if mask is not None:
                keep_ok[layer] &= mask
                reasons[layer].append(describe_joint(c))
    return precision_ok[:, :, None] & keep_ok[:, None, :], reasons
