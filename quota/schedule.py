"""Schedules and budgets: the one owner of their rules.

- A **schedule** is a tuple of ``L`` non-increasing ints ``k_0 >= k_1 >= ... >= k_{L-1}``: ``k_l`` visual
  tokens are alive in decoder layer ``l`` (layer ``l``'s input hidden states and its KV cache hold ``k_l``
  visual tokens plus every text token). ``N`` is the number of visual tokens of the image span.
- **Equivalent tokens** of a schedule: the mean over layers of ``k_l`` (the budget convention of the
  SparseVLM and PyramidDrop tables); the token budget fraction is that mean divided by ``N``.
- **Dynamic resolution** (LLaVA-NeXT anyres, Qwen2-VL, splitting SmolVLM): an image's ``N`` depends on its size.
  A schedule is then written over a reference ``N_ref`` (the recipe's ``n_visual_tokens``) and read as fractions:
  :func:`resolve_schedule` gives each image of ``N`` tokens ``round_half_up(k_l * N / N_ref)`` per layer, an
  integer computation that is deterministic, keeps the schedule non-increasing, and is monotone in ``k_l`` and in
  ``N`` (a larger image never keeps fewer tokens).
- A **budget** is a fraction in ``(0, 1]`` of the all-tokens cost of one of :data:`BUDGET_KINDS`: visual
  token-layers (``tokens``), prefill FLOPs, KV-cache bytes, or measured latency.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

BUDGET_KINDS: tuple[str, ...] = ("tokens", "flops", "kv", "latency")


class ScheduleError(ValueError):
    """A schedule is malformed or does not fit the model (the message names the entry and the rule)."""


def check_schedule(
    schedule: Sequence[int], num_layers: int | None = None, n_visual: int | None = None, name: str = "schedule"
) -> tuple[int, ...]:
    """``schedule`` as a tuple of ints, after checking that every entry is an integer (not a bool, a float
    or a string), non-negative and non-increasing, and, when given, that there are ``num_layers`` entries
    and ``k_0 <= n_visual``. ``name`` prefixes the entry in messages (``schedule[29]``).
    Raises :class:`ScheduleError`."""
    if isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence) and not hasattr(schedule, "tolist"):
        raise ScheduleError(f"{name} must be a list of integers, got {type(schedule).__name__}")
    entries = schedule.tolist() if hasattr(schedule, "tolist") else list(schedule)
    for i, k in enumerate(entries):
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise ScheduleError(f"{name}[{i}] = {k!r} is not an integer keep count")
    ks = tuple(int(k) for k in entries)
    if not ks:
        raise ScheduleError(f"{name} must have one entry per decoder layer, got an empty one")
    if num_layers is not None and len(ks) != num_layers:
        raise ScheduleError(f"{name} has {len(ks)} entries but the model has {num_layers} decoder layers")
    for i, k in enumerate(ks):
        if k < 0:
            raise ScheduleError(f"{name}[{i}] = {k} is negative")
    for l in range(1, len(ks)):
        if ks[l] > ks[l - 1]:
            raise ScheduleError(f"{name} must be non-increasing: {name}[{l}] = {ks[l]} > {name}[{l - 1}] = {ks[l - 1]}")
    if n_visual is not None and ks[0] > n_visual:
        raise ScheduleError(f"{name}[0] = {ks[0]} keeps more visual tokens than the image has (N = {n_visual})")
    return ks


def resolve_schedule(schedule: Sequence[int], reference: int, n_visual: int) -> tuple[int, ...]:
    """``schedule`` (keep counts over ``reference`` visual tokens) for an image of ``n_visual`` tokens: entry
    ``l`` becomes ``floor((k_l * n_visual + reference // 2) / reference)`` (the fraction ``k_l / reference`` of
    ``n_visual``, rounded half up in integers), so ``reference`` maps to ``n_visual``, 0 to 0, and the result is
    non-increasing. The identity when ``n_visual == reference``."""
    ks = check_schedule(schedule, n_visual=reference)
    for name, value in (("reference", reference), ("n_visual", n_visual)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ScheduleError(f"{name} must be a positive number of visual tokens, got {value!r}")
    if n_visual == reference:
        return ks
    return tuple((k * int(n_visual) + int(reference) // 2) // int(reference) for k in ks)


def equivalent_tokens(schedule: Sequence[int]) -> float:
    """Mean over layers of ``k_l``."""
    return sum(int(k) for k in schedule) / len(schedule)


def is_full(schedule: Sequence[int], n_visual: int) -> bool:
    """True when every layer keeps all ``n_visual`` tokens (no pruning anywhere)."""
    return all(int(k) == n_visual for k in schedule)


def check_budget(budget: float, name: str = "budget") -> float:
    """``budget`` as a float after checking it is a finite number in ``(0, 1]``; else ``ValueError``."""
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not math.isfinite(budget):
        raise ValueError(f"{name} must be a number in (0, 1] (a fraction of the all-tokens cost), got {budget!r}")
    if not 0.0 < float(budget) <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1] (a fraction of the all-tokens cost), got {budget!r}")
    return float(budget)


def check_budget_kind(kind: str, name: str = "budget_kind") -> str:
    """``kind`` when it is one of :data:`BUDGET_KINDS`; else ``ValueError`` listing them."""
    if kind not in BUDGET_KINDS:
        raise ValueError(f"{name} = {kind!r}; choose one of {', '.join(BUDGET_KINDS)}")
    return kind
