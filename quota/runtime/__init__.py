"""The pruning runtime: prefill with layer-wise visual-token pruning, then greedy decoding over each
layer's own compacted KV cache. Conventions are stated in :mod:`quota.schedule` (schedules),
:mod:`quota.recipe` (what is applied) and :mod:`quota.runtime.generate` (the runner)."""

from quota.recipe import PruningPlan, ScoringSpec
from quota.runtime.apply import PrunedModel, apply
from quota.runtime.baselines import BASELINES, baseline_plan
from quota.runtime.generate import PrefillState, PrunedRunner
from quota.runtime.graphs import StaticDecoder, StaticPrefill
from quota.runtime.positions import NotSupportedError
from quota.runtime.scoring import SIGNALS, combine, select_topk
from quota.schedule import ScheduleError, check_schedule, equivalent_tokens

__all__ = [
    "BASELINES", "NotSupportedError", "PrefillState", "PrunedModel", "PrunedRunner", "PruningPlan", "SIGNALS",
    "ScheduleError", "ScoringSpec", "StaticDecoder", "StaticPrefill", "apply", "baseline_plan", "check_schedule",
    "combine", "equivalent_tokens", "select_topk",
]
