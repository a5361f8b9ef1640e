"""Kernel tests run on CUDA when there is one, else on the CPU through the Triton interpreter.

``TRITON_INTERPRET`` must be set before ``@triton.jit`` runs on the kernels; should an earlier test
module have imported ``quota.kernels`` without it, those modules are reloaded under the interpreter.
"""

import importlib
import os
import sys

import torch

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    os.environ["TRITON_INTERPRET"] = "1"
    loaded = sorted(name for name in sys.modules if name.startswith("quota.kernels."))
    for name in sorted(loaded, key=lambda n: not n.endswith("._env")):  # _env first: it reads the flag
        importlib.reload(sys.modules[name])
