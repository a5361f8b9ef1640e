"""Check the additive damage model: predicted damage (the profile's per-layer curves summed over the
layers of a schedule) against damage measured by running that schedule, over random feasible schedules,
reported as a Spearman rank correlation. When the profile has KL interaction terms, the same schedules are also
ranked by the prediction that adds them (``spearman_with_interactions``), so the two are comparable."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from scipy.stats import spearmanr

from quota.profiling.profile import Profile
from quota.profiling.sensitivity import DamageMeter


@dataclass
class AdditivityReport:
    schedules: list[list[int]]
    predicted: list[float]
    measured: list[float]
    spearman: float
    p_value: float
    damage: str
    predicted_with_interactions: list[float] | None = field(default=None)
    spearman_with_interactions: float | None = None

    def to_dict(self) -> dict:
        """The report as JSON; the interaction fields only when the profile had interaction terms."""
        d = asdict(self)
        if self.predicted_with_interactions is None:
            del d["predicted_with_interactions"], d["spearman_with_interactions"]
        return d


def random_schedules(profile: Profile, count: int, seed: int = 0, budgets: tuple[float, float] = (0.1, 0.6)) -> list[tuple[int, ...]]:
    """``count`` distinct random non-increasing schedules on the profile's grid whose mean keep ratio
    lies in ``budgets`` (drawn as sorted random grid indices, so every shape of decay appears)."""
    rng = np.random.default_rng(seed)
    grid, n, layers = np.asarray(profile.grid), profile.n_visual_tokens, profile.n_layers
    out: list[tuple[int, ...]] = []
    seen = set()
    while len(out) < count:
        idx = np.sort(rng.integers(0, len(grid), layers))[::-1]  # non-increasing
        s = tuple(int(k) for k in grid[idx])
        ratio = sum(s) / (layers * n)
        if budgets[0] <= ratio <= budgets[1] and s not in seen:
            seen.add(s)
            out.append(s)
    return out


def predicted_damage(profile: Profile, schedule, damage: str = "kl", interactions: bool = False) -> float:
    """The additive prediction of ``schedule``'s damage: the ``damage`` curve summed over its layers, plus, with
    ``interactions``, the profile's interaction term of every adjacent pair of layers (KL profiles that have them;
    ``ValueError`` otherwise)."""
    curve = profile.damage[damage]  # [L, G]
    idx = [profile.grid.index(k) for k in schedule]
    total = sum(curve[layer, g] for layer, g in enumerate(idx))
    if interactions:
        if profile.interactions is None or damage != "kl":
            raise ValueError(f"interaction terms apply to a profile that has them and to kl damage, not {damage!r}")
        total += sum(profile.interactions[layer, a, b] for layer, (a, b) in enumerate(zip(idx, idx[1:])))
    return float(total)


def check_additivity(profile: Profile, meter: DamageMeter, count: int = 30, seed: int = 0, damage: str = "kl",
                     on_item: Callable[[int, int], None] | None = None) -> AdditivityReport:  # fmt: skip
    """Measure ``count`` random schedules with ``meter`` and correlate with the profile's prediction;
    ``on_item(done, total)`` is called after each schedule. With KL damage and a profile that has interaction
    terms, the same measurements are also correlated with the prediction that includes them."""
    schedules = random_schedules(profile, count, seed)
    predicted = [predicted_damage(profile, s, damage) for s in schedules]
    measured = []
    for i, s in enumerate(schedules):
        d = meter.measure(s, profile.n_visual_tokens)
        measured.append(d.kl if damage == "kl" else d.task_loss)
        if on_item is not None:
            on_item(i + 1, len(schedules))
    rho, p = spearmanr(predicted, measured)
    report = AdditivityReport([list(s) for s in schedules], predicted, measured, float(rho), float(p), damage)
    if damage == "kl" and profile.interactions is not None:
        report.predicted_with_interactions = [predicted_damage(profile, s, damage, True) for s in schedules]
        report.spearman_with_interactions = float(spearmanr(report.predicted_with_interactions, measured)[0])
    return report
