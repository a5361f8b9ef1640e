"""quota: joint low-bit quantization (W4A4 linears, 4-bit KV cache) and solver-scheduled visual-token
pruning for vision-language models.

Public API (imported lazily, so ``import quota`` stays light):

- models and quantization: ``QuantConfig``, ``quantize_model``, ``load`` (a checkpoint saved by ``quota quantize``:
  :func:`quota.saved.loader`);
- the pipeline: ``profile`` (the testbed -> ``Profile``), ``solve`` (profile -> ``SolveResult`` with its
  ``Recipe``), ``apply`` (recipe -> runnable model), ``evaluate``;
- the recipe contract: ``Recipe``, ``ScoringSpec``, ``PruningPlan``;
- custom objectives: ``build_problem``, ``AllocationProblem``, ``Solution``, the constraints
  ``MinKeepBefore``, ``FixedLayer``, ``CostCap``, ``LinearConstraint``, and ``SolverError`` (every solver
  failure derives from it).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "QuantConfig": "quota.quant.config",
    "quantize_model": "quota.quantize.model",
    "load": "quota.saved",
    "Recipe": "quota.recipe",
    "ScoringSpec": "quota.recipe",
    "PruningPlan": "quota.recipe",
    "Profile": "quota.profiling.profile",
    "profile": "quota.testbed.profile",
    "apply": "quota.runtime.apply",
    "solve": "quota.allocate",
    "build_problem": "quota.allocate",
    "SolveResult": "quota.allocate",
    "AllocationProblem": "quota.solvers",
    "Solution": "quota.solvers",
    "MinKeepBefore": "quota.solvers",
    "FixedLayer": "quota.solvers",
    "CostCap": "quota.solvers",
    "LinearConstraint": "quota.solvers",
    "SolverError": "quota.solvers",
    "evaluate": "quota.eval.run",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'quota' has no attribute {name!r}")
