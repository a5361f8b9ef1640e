"""Checked solve arguments (``time_limit``, ``accept_gap``) and a deadline shared by solver stages."""

from __future__ import annotations

import math
import time
from numbers import Real

from quota.solvers.errors import SolverArgumentError


def check_time_limit(time_limit: object) -> float | None:
    """``time_limit`` as float seconds, or None (no limit). Raises ``SolverArgumentError`` (a
    ``ValueError``) unless it is None or a positive finite number."""
    if time_limit is None:
        return None
    if isinstance(time_limit, bool) or not isinstance(time_limit, Real):
        raise SolverArgumentError(
            "time_limit", f"time_limit must be a positive finite number of seconds or None, got {time_limit!r}"
        )
    value = float(time_limit)
    if not (math.isfinite(value) and value > 0):
        raise SolverArgumentError(
            "time_limit", f"time_limit must be a positive finite number of seconds or None, got {time_limit!r}"
        )
    return value


def check_accept_gap(accept_gap: object) -> float | None:
    """``accept_gap`` as a float (``inf`` allowed), or None. Raises ``SolverArgumentError`` for a
    negative, NaN or non-numeric value."""
    if accept_gap is None:
        return None
    if isinstance(accept_gap, bool) or not isinstance(accept_gap, Real) or not float(accept_gap) >= 0:
        raise SolverArgumentError(
            "accept_gap", f"accept_gap must be a non-negative relative gap (inf allowed) or None, got {accept_gap!r}"
        )
    return float(accept_gap)


class Deadline:
    """A start time and an optional limit in seconds; stages of one solve share it."""

    def __init__(self, time_limit: float | None) -> None:
        self.limit = check_time_limit(time_limit)
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start

    def remaining(self, floor: float = 1e-3) -> float | None:
        """Seconds left (at least ``floor``, so a backend always gets a valid positive limit), or None."""
        if self.limit is None:
            return None
        return max(self.limit - self.elapsed(), floor)

    def expired(self) -> bool:
        """Whether the limit has passed."""
        return self.limit is not None and self.elapsed() > self.limit
