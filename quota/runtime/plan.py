"""Pruning plans: a schedule of visual tokens per layer plus the scoring that picks them.

Conventions (shared by the whole runtime):

- A **schedule** is a tuple of ``L`` non-increasing ints ``k_0 >= k_1 >= ... >= k_{L-1}``: ``k_l`` visual
  tokens are alive in decoder layer ``l`` (layer ``l``'s input hidden states and its KV cache hold
  ``k_l`` visual tokens plus every text token). ``N`` is the number of visual tokens of the image span.
- **Equivalent tokens** of a schedule: the mean over layers of ``k_l`` (the budget convention of the
  SparseVLM and PyramidDrop tables); the budget fraction is that mean divided by ``N``.
- Pruning before layer ``l`` (``k_l < k_{l-1}``, or ``k_0 < N`` before layer 0) uses signals computed
  in layer ``l - 1``; before layer 0 only embedding-level signals exist (see :mod:`quota.runtime.scoring`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

NORMALIZATIONS = ("minmax", "rank")


class ScheduleError(ValueError):
    """A schedule is malformed or does not fit the model (the message says which rule failed)."""


@dataclass(frozen=True)
class ScoringSpec:
    """How token scores are formed at every pruning point.

    ``weights`` maps signal names (:data:`quota.runtime.scoring.SIGNALS`) to weights; a positive weight
    makes tokens with a larger signal more likely to be kept. ``normalize`` is applied per sample over
    the alive visual tokens before weighting (``"minmax"`` or ``"rank"``). ``seed`` drives the
    ``random`` signal.
    """

    weights: Mapping[str, float] = field(default_factory=lambda: {"attn_last": 1.0})
    normalize: str = "minmax"
    seed: int = 0

    def __post_init__(self) -> None:
        from quota.runtime.scoring import SIGNALS

        weights = {str(k): float(v) for k, v in dict(self.weights).items()}
        unknown = sorted(set(weights) - set(SIGNALS))
        if unknown:
            raise ValueError(f"unknown score signal(s) {unknown}; known signals: {list(SIGNALS)}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        object.__setattr__(self, "weights", weights)

    @property
    def active(self) -> dict[str, float]:
        """The signals with a non-zero weight."""
        return {k: w for k, w in self.weights.items() if w != 0.0}

    def to_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "normalize": self.normalize, "seed": self.seed}


@dataclass(frozen=True)
class PruningPlan:
    """A schedule and its scoring, executed by :class:`quota.runtime.generate.PrunedRunner`."""

    name: str
    schedule: tuple[int, ...]
    scoring: ScoringSpec = field(default_factory=ScoringSpec)
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", check_schedule(self.schedule))

    @property
    def equivalent_tokens(self) -> float:
        return equivalent_tokens(self.schedule)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "schedule": list(self.schedule), "scoring": self.scoring.to_dict(),
                "notes": self.notes}


def check_schedule(
    schedule: Sequence[int], num_layers: int | None = None, n_visual: int | None = None
) -> tuple[int, ...]:
    """``schedule`` as a tuple of ints, after checking it is non-empty, non-negative, non-increasing and,
    when given, ``num_layers`` long with ``k_0 <= n_visual``. Raises :class:`ScheduleError`."""
    try:
        ks = tuple(int(k) for k in schedule)
    except (TypeError, ValueError) as err:
        raise ScheduleError(f"a schedule must be a sequence of integers, got {schedule!r}") from err
    if any(int(k) != k for k in schedule):
        raise ScheduleError(f"a schedule must hold integers, got {list(schedule)}")
    if not ks:
        raise ScheduleError("a schedule must have one entry per decoder layer, got an empty one")
    if min(ks) < 0:
        raise ScheduleError(f"keep counts must be >= 0, got {list(ks)}")
    for l in range(1, len(ks)):
        if ks[l] > ks[l - 1]:
            raise ScheduleError(f"a schedule must be non-increasing: k_{l}={ks[l]} > k_{l - 1}={ks[l - 1]}")
    if num_layers is not None and len(ks) != num_layers:
        raise ScheduleError(f"the schedule has {len(ks)} entries but the model has {num_layers} decoder layers")
    if n_visual is not None and ks[0] > n_visual:
        raise ScheduleError(f"the schedule keeps k_0={ks[0]} visual tokens but the image has N={n_visual}")
    return ks


def equivalent_tokens(schedule: Sequence[int]) -> float:
    """Mean over layers of ``k_l``."""
    return sum(schedule) / len(schedule)


def is_full(schedule: Sequence[int], n_visual: int) -> bool:
    """True when every layer keeps all ``n_visual`` tokens (no pruning anywhere)."""
    return all(int(k) == n_visual for k in schedule)
