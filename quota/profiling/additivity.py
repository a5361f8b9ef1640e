"""Check the additive damage model: predicted damage (the profile's per-layer curves summed over the
layers of a schedule) against damage measured by running that schedule, over random feasible schedules,
reported as a Spearman rank correlation. When the profile has KL interaction terms, the same schedules are also
ranked by the prediction that adds them (``spearman_with_interactions``), so the two are comparable. The report's
top-level figures read the curves as measured (``raw``); ``fitted`` ranks the same schedules under the solver's
default ``monotone`` fit (:mod:`quota.profiling.damage_fit`), with and without the interaction terms. Every
measurement yields KL, task loss and, with a teacher, ``kl_teacher``, so ``others`` ranks the same schedules by
every other damage as well (those the profile has curves of): under low-bit operators they can disagree (the KL
floor of docs/results/joint_h100)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from scipy.stats import spearmanr

from quota.profiling.damage_fit import DEFAULT_DAMAGE_FIT, fitted_curve, fitted_interactions
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
    fitted: dict | None = None
    others: dict | None = None  # damage -> {"measured", "predicted", "spearman", "fitted"}, the other damages

    def to_dict(self) -> dict:
        """The report as JSON; the interaction fields only when the profile had interaction terms."""
        d = asdict(self)
        if self.predicted_with_interactions is None:
            del d["predicted_with_interactions"], d["spearman_with_interactions"]
        for key in ("fitted", "others"):
            if d[key] is None:
                del d[key]
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


def predicted_damage(profile: Profile, schedule, damage: str = "kl", interactions: bool = False,
                     damage_fit: str = "raw") -> float:
    """The additive prediction of ``schedule``'s damage: the ``damage`` curve (read under ``damage_fit``) summed
    over its layers, plus, with ``interactions``, the profile's interaction term of every adjacent pair of layers
    (KL profiles that have them; ``ValueError`` otherwise)."""
    return predictions(profile, [schedule], damage, interactions, damage_fit)[0]


def predictions(profile: Profile, schedules, damage: str = "kl", interactions: bool = False,
                damage_fit: str = "raw") -> list[float]:
    """:func:`predicted_damage` of each of ``schedules`` (the curves are fitted once)."""
    curve = fitted_curve(profile.damage[damage], damage_fit, profile.grid)  # [L, G]
    pairs = None
    if interactions:
        if profile.interactions is None or damage != "kl":
            raise ValueError(f"interaction terms apply to a profile that has them and to kl damage, not {damage!r}")
        pairs = fitted_interactions(profile, damage_fit)
    out = []
    for schedule in schedules:
        idx = [profile.grid.index(k) for k in schedule]
        total = sum(curve[layer, g] for layer, g in enumerate(idx))
        if pairs is not None:
            total += sum(pairs[layer, a, b] for layer, (a, b) in enumerate(zip(idx, idx[1:])))
        out.append(float(total))
    return out


def fitted_ranking(profile: Profile, schedules, measured, damage: str = "kl",
                   damage_fit: str = DEFAULT_DAMAGE_FIT) -> dict:
    """How well the ``damage_fit`` reading of the profile ranks ``schedules`` whose damage was ``measured``:
    ``{"damage_fit", "predicted", "spearman"}``, plus ``predicted_with_interactions`` and
    ``spearman_with_interactions`` when the profile has interaction terms and the damage is KL."""
    predicted = predictions(profile, schedules, damage, damage_fit=damage_fit)
    out = {"damage_fit": damage_fit, "predicted": predicted, "spearman": float(spearmanr(predicted, measured)[0])}
    if damage == "kl" and profile.interactions is not None:
        with_pairs = predictions(profile, schedules, damage, True, damage_fit)
        out.update(predicted_with_interactions=with_pairs,
                   spearman_with_interactions=float(spearmanr(with_pairs, measured)[0]))
    return out


def check_additivity(profile: Profile, meter: DamageMeter, count: int = 30, seed: int = 0, damage: str = "kl",
                     on_item: Callable[[int, int], None] | None = None) -> AdditivityReport:  # fmt: skip
    """Measure ``count`` random schedules with ``meter`` and correlate with the profile's prediction;
    ``on_item(done, total)`` is called after each schedule. With KL damage and a profile that has interaction
    terms, the same measurements are also correlated with the prediction that includes them."""
    if damage not in profile.damage:
        raise ValueError(f"the profile has no {damage!r} damage curve to check (it has {sorted(profile.damage)})")
    schedules = random_schedules(profile, count, seed)
    predicted = predictions(profile, schedules, damage)
    by_damage: dict[str, list] = {"kl": [], "task_loss": [], "kl_teacher": []}
    for i, s in enumerate(schedules):
        d = meter.measure(s, profile.n_visual_tokens)
        for name, values in by_damage.items():
            values.append(getattr(d, name))
        if on_item is not None:
            on_item(i + 1, len(schedules))
    if any(v is None for v in by_damage[damage]):
        raise ValueError(f"damage {damage!r} is not measured by this meter (kl_teacher needs a teacher)")
    measured = by_damage.pop(damage)
    rho, p = spearmanr(predicted, measured)
    report = AdditivityReport([list(s) for s in schedules], predicted, measured, float(rho), float(p), damage)
    if damage == "kl" and profile.interactions is not None:
        report.predicted_with_interactions = predictions(profile, schedules, damage, True)
        report.spearman_with_interactions = float(spearmanr(report.predicted_with_interactions, measured)[0])
    report.fitted = fitted_ranking(profile, schedules, measured, damage)
    others = {}
    for name, values in by_damage.items():
        if name in profile.damage and all(v is not None for v in values):
            predicted_other = predictions(profile, schedules, name)
            others[name] = {"measured": values, "predicted": predicted_other,
                            "spearman": float(spearmanr(predicted_other, values)[0]),
                            "fitted": fitted_ranking(profile, schedules, values, name)["spearman"]}
    report.others = others or None
    return report
