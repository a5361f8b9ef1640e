"""quota: joint low-bit quantization (W4A4 linears, 4-bit KV cache) and solver-scheduled visual-token
pruning for vision-language models.

Public API (imported lazily, so ``import quota`` stays light):
``QuantConfig``, ``quantize_model``, ``apply`` (recipe -> runnable model), ``profile`` (model -> Profile),
``Profile``, ``solve`` (profile -> recipe), ``Recipe``, ``AllocationProblem``, ``Solution``, ``evaluate``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "QuantConfig": "quota.quant.config",
    "quantize_model": "quota.quantize.model",
    "Recipe": "quota.recipe",
    "Profile": "quota.profiling.profile",
    "profile": "quota.testbed.profile",
    "apply": "quota.runtime.apply",
    "AllocationProblem": "quota.solvers",
    "Solution": "quota.solvers",
    "solve": "quota.allocate",
    "evaluate": "quota.eval.run",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'quota' has no attribute {name!r}")
