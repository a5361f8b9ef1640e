"""Kernel tests run on CUDA when there is one, else on the CPU through the Triton interpreter
(``TRITON_INTERPRET=1``, set by the top-level ``tests/conftest.py`` before any quota module is imported)."""

import os

import torch

assert torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1", "tests/conftest.py sets TRITON_INTERPRET"
