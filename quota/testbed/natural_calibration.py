"""What calibrating the natural suite's density measures, without a model: its questions, its targets and
how a candidate is judged. ``examples/calibrate_natural.py`` runs the model.

Contract:
- Calibration questions come from the natural suite's *calibration* namespace only, stream
  :data:`DENSITY_STREAM` + task code (one stream per task, so any number per task is a prefix): never the test
  split, never the 256-question calibration split that profiling reads, never the refinement stream.
- The target is FastV's published retention on LLaVA-1.5-7B (average of nine benchmarks) at 64/128/192
  tokens, :data:`FASTV_TARGETS`; a candidate fits when each measured retention (FastV accuracy / all-token
  accuracy of the unquantized testbed, averaged over tasks) is within :data:`TOLERANCE` of its target.
  Nothing of quota's recipes, and no other preset, enters.
"""

from __future__ import annotations

from quota.testbed.natural_scenes import NaturalParams
from quota.testbed.splits import NATURAL, TASK_CODES, make_question
from quota.testbed.tasks import TASKS, Question

DENSITY_STREAM = 8  # streams 8..12 of the natural calibration namespace: one per task, density calibration only
FASTV_TARGETS = {64: 0.767, 128: 0.854, 192: 0.904}  # published FastV retention, LLaVA-1.5-7B, 9 benchmarks
TOLERANCE = 0.04  # +-4 points


def density_questions(per_task: int, params: NaturalParams) -> list[Question]:
    """The first ``per_task`` density-calibration questions of each task (grouped in ``TASKS`` order), their
    scenes drawn under ``params``."""
    if isinstance(per_task, bool) or not isinstance(per_task, int) or per_task < 1:
        raise ValueError(f"questions per task must be an integer >= 1, got {per_task!r}")
    return [make_question(t, "calibration", DENSITY_STREAM + TASK_CODES[t], i, NATURAL, params)
            for t in TASKS for i in range(per_task)]


def miss(retentions: dict[int, float]) -> float:
    """The largest distance (retention points, as a share) of a candidate's retentions from FastV's targets."""
    return max(abs(retentions[t] - target) for t, target in FASTV_TARGETS.items())


def fits(retentions: dict[int, float]) -> bool:
    """Whether every retention lies within :data:`TOLERANCE` of its target."""
    return miss(retentions) <= TOLERANCE
