"""The pruning runtime: prefill with layer-wise visual-token pruning, then greedy decoding over each
layer's own compacted KV cache. Conventions are stated in :mod:`quota.runtime.plan` and
:mod:`quota.runtime.generate`."""

from quota.runtime.apply import PrunedModel, apply
from quota.runtime.baselines import BASELINES, baseline_plan
from quota.runtime.generate import PrefillState, PrunedRunner
from quota.runtime.graphs import StaticDecoder, StaticPrefill
from quota.runtime.plan import PruningPlan, ScheduleError, ScoringSpec, check_schedule, equivalent_tokens
from quota.runtime.positions import NotSupportedError
from quota.runtime.scoring import SIGNALS, combine, select_topk

__all__ = [
    "BASELINES", "NotSupportedError", "PrefillState", "PrunedModel", "PrunedRunner", "PruningPlan", "SIGNALS",
    "ScheduleError", "ScoringSpec", "StaticDecoder", "StaticPrefill", "apply", "baseline_plan", "check_schedule", "combine", "equivalent_tokens",
    "select_topk",
]
