"""Damage of per-layer precision, measured by swapping decoder layers between uniformly quantized copies of a model,
and the token curves of every option (measured, or interpolated between two measured ones).

**The precision table** (HAWQ-style, first order): ``D[l, p]`` is the KL (teacher-forced, on the calibration
answers, as :class:`~quota.profiling.sensitivity.DamageMeter` measures it) of the model whose layer ``l`` alone
runs option ``p``, all others the reference option (bf16), all visual tokens kept, against the all-reference
model. The models are ``donors[p]``: the same model quantized with every layer at ``p`` (same base config, so
the same rotation, lm_head and vision tower); the mixed model is the reference model with layer ``l`` swapped
for ``donors[p]``'s. One approximation: the donor's GPTQ saw the inputs of ``p``-quantized earlier layers, not of
reference ones (the layer's weights are those a uniform-``p`` model would run).

**Additivity** is checked, not assumed (:func:`check_precision_additivity`): random mixed configurations are
built by the same swaps and measured; their damage is compared with ``sum_l D[l, p_l]`` by Spearman rank
correlation.

**Token curves under a layer's precision** (:func:`interpolate_token_curves`): measuring the prune-from-layer
curves under every (layer precision x tokens) is too much, so the curves are measured under two uniform models,
the lowest option ``lo`` and the highest ``hi``, and for any other option ``p`` at layer ``l``::

    h[p, l, :] = h[hi, l, :] + w[l, p] * (h[lo, l, :] - h[hi, l, :])
    w[l, p]    = clip((D[l, p] - D[l, hi]) / (D[l, lo] - D[l, hi]), 0, 1)      (0 where D[l, lo] <= D[l, hi])

i.e. a layer's token sensitivity moves between the two measured curves in proportion to how much damage its
precision does. Measured options keep their own curve. The rule is exact when the curves are affine in the
precision damage (tested on such a synthetic case); elsewhere it is an approximation to check with measured
points.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch.nn as nn
from scipy.stats import spearmanr

from quota.models.registry import spec_for
from quota.profiling.sensitivity import DamageMeter

INTERPOLATION = ("h[p,l] = h[hi,l] + w[l,p] (h[lo,l] - h[hi,l]), w[l,p] = clip((D[l,p] - D[l,hi]) / "
                 "(D[l,lo] - D[l,hi]), 0, 1)")


@contextlib.contextmanager
def swapped_layers(model: nn.Module, donors: Mapping[int, nn.Module]) -> Iterator[nn.Module]:
    """``model`` with decoder layer ``l`` replaced by ``donors[l]``'s layer ``l`` (each a model of the same
    architecture), restored on exit. Donors of ``None`` leave that layer as it is."""
    layers = spec_for(model).layers_of(model)
    saved = {}
    try:
        for layer, donor in donors.items():
            if donor is None or donor is model:
                continue
            saved[layer] = layers[layer]
            layers[layer] = spec_for(donor).layers_of(donor)[layer]
        yield model
    finally:
        for layer, module in saved.items():
            layers[layer] = module


def _full(meter: DamageMeter, n_layers: int, n_visual: int) -> float:
    return meter.measure([n_visual] * n_layers, n_visual).kl


def precision_table(
    meter: DamageMeter, donors: Mapping[str, nn.Module], precisions: Sequence[str], reference: str, n_visual: int,
    on_item: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``[L, P]``: KL of the meter's model (all layers at ``reference``) with layer ``l`` alone swapped for
    ``donors[p]``'s, all ``n_visual`` tokens kept; 0 at the reference option (not measured). The meter's
    reference run must be (and, computed first here, is) that of the all-reference model."""
    model = meter.model
    n_layers = len(spec_for(model).layers_of(model))
    meter.reference(n_visual, n_layers)  # computed before any swap
    table = np.zeros((n_layers, len(precisions)))
    items = [(layer, p) for layer in range(n_layers) for p, name in enumerate(precisions) if name != reference]
    for i, (layer, p) in enumerate(items):
        with swapped_layers(model, {layer: donors[precisions[p]]}):
            table[layer, p] = _full(meter, n_layers, n_visual)
        if on_item is not None:
            on_item(i + 1, len(items))
    return table


@dataclass
class PrecisionAdditivity:
    """Measured damage of random mixed configurations against the first-order prediction ``sum_l D[l, p_l]``."""

    configurations: list[list[str]]
    predicted: list[float]
    measured: list[float]
    spearman: float | None

    def to_dict(self) -> dict:
        return {"configurations": self.configurations, "predicted": self.predicted, "measured": self.measured,
                "spearman": self.spearman, "model": "D(config) = sum_l D[l, p_l], all tokens kept"}


def random_configurations(n_layers: int, precisions: Sequence[str], count: int, seed: int = 0) -> list[tuple[str, ...]]:
    """``count`` random per-layer precision lists (distinct when possible): each draws a share of low-precision
    layers uniformly in [0, 1], so both nearly-uniform and evenly mixed configurations appear."""
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    for _ in range(count * 20):
        if len(out) == count:
            break
        share = rng.uniform()
        low = rng.uniform(size=n_layers) < share
        picks = tuple(precisions[int(rng.integers(0, len(precisions) - 1))] if lo else precisions[-1] for lo in low)
        if picks not in seen:
            seen.add(picks)
            out.append(picks)
    return out


def check_precision_additivity(
    meter: DamageMeter, donors: Mapping[str, nn.Module], precisions: Sequence[str], table: np.ndarray,
    n_visual: int, count: int = 8, seed: int = 0, on_item: Callable[[int, int], None] | None = None,
) -> PrecisionAdditivity:
    """Measure ``count`` random mixed configurations (:func:`random_configurations`, the last of ``precisions``
    the reference) and rank-correlate them with ``sum_l table[l, p_l]``. ``spearman`` is None with fewer than 3
    configurations or constant values."""
    n_layers = table.shape[0]
    configs = random_configurations(n_layers, precisions, count, seed)
    predicted, measured = [], []
    for i, config in enumerate(configs):
        predicted.append(float(sum(table[layer, precisions.index(p)] for layer, p in enumerate(config))))
        with swapped_layers(meter.model, {layer: donors[p] for layer, p in enumerate(config)}):
            measured.append(_full(meter, n_layers, n_visual))
        if on_item is not None:
            on_item(i + 1, len(configs))
    rho = None
    if len(configs) >= 3 and len(set(predicted)) > 1 and len(set(measured)) > 1:
        rho = float(spearmanr(predicted, measured)[0])
    return PrecisionAdditivity([list(c) for c in configs], predicted, measured, rho)


def interpolation_weights(table: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``[L, P]`` weights ``w[l, p]`` of the low curve (module docstring): 1 at ``lo``, 0 at ``hi``, clipped to
    [0, 1]; 0 on layers where the low option did no more damage than the high one."""
    span = table[:, lo] - table[:, hi]  # [L]
    safe = np.where(span > 0, span, 1.0)
    w = np.clip((table - table[:, hi:hi + 1]) / safe[:, None], 0.0, 1.0)  # [L, P]
    w[span <= 0] = 0.0
    w[:, lo], w[:, hi] = np.where(span > 0, 1.0, w[:, lo]), 0.0
    return w


def interpolate_token_curves(
    table: np.ndarray, measured: Mapping[str, np.ndarray], precisions: Sequence[str],
) -> tuple[np.ndarray, dict[str, str]]:
    """``([P, L, G] token curves, {option: how it was obtained})`` from the precision table ``[L, P]`` and the
    measured curves ``{option: [L, G]}`` (module docstring). With one measured option, every option takes its
    curve; with two or more, the interpolation runs between the measured option of largest mean precision damage
    (``lo``) and the one of smallest (``hi``), and every measured option keeps its own curve."""
    if not measured:
        raise ValueError("interpolate_token_curves needs at least one measured token curve")
    unknown = [n for n in measured if n not in precisions]
    if unknown:
        raise ValueError(f"measured token curves of {unknown} are not among the precisions {list(precisions)}")
    names = sorted(measured, key=lambda n: (table[:, precisions.index(n)].mean(), precisions.index(n)))
    hi_name, lo_name = names[0], names[-1]
    how = {}
    if len(names) == 1:
        curves = np.stack([measured[hi_name]] * len(precisions))
        how = {p: "measured" if p == hi_name else f"the {hi_name} curve (only one measured)" for p in precisions}
        return curves, how
    lo, hi = precisions.index(lo_name), precisions.index(hi_name)
    w = interpolation_weights(table, lo, hi)  # [L, P]
    h_lo, h_hi = measured[lo_name], measured[hi_name]  # [L, G]
    curves = h_hi[None] + np.transpose(w)[:, :, None] * (h_lo - h_hi)[None]  # [P, L, G]
    for p, name in enumerate(precisions):
        if name in measured:
            curves[p] = measured[name]
            how[name] = "measured"
        else:
            how[name] = f"interpolated between {lo_name} and {hi_name} by precision damage"
    return curves, how
