"""``load(folder)``: a saved quantized checkpoint, ready to run, without calibrating again.

Steps, each failure one :class:`SavedCheckpointError` line naming the folder:

1. the manifest is read and checked (type ``quota.checkpoint``, version 1);
2. ``config.json`` and the processor files are checked against their recorded sha256;
3. the architecture is rebuilt on the meta device from ``config.json`` (:func:`quota.saved.architecture.rebuild`:
   the registry's class, then the recorded edits: quantized linears, the rotated projector, extra parts);
4. each shard is read once, checked against its sha256 and its tensors assigned to the model by reference (no
   second copy of the weights), non-persistent buffers and tied weights included; floating tensors stored in the
   model's dtype are cast when another ``dtype`` is asked for, except the weight scales and the projector's
   rotation, which quantized modules keep in float32;
5. the KV quantizers and attention implementations are installed, ``quota_report`` restored, and the generation
   config read when the folder has one;
6. when the stored recipe prunes, the model is wrapped in the pruning runtime
   (:func:`quota.runtime.apply.apply` with the quantization already done).

Loaded in the dtype it was saved in, the model computes exactly what the quantized model that was saved computed
(bit for bit on the same device and kernels). Only safetensors and JSON are read: nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from quota.device import placement
from quota.models.checkpoint import load_processor
from quota.quant.config import QuantConfig
from quota.quantize.serialize import (
    TensorLayout,
    assign_tensors,
    dtype_of,
    float32_tensors,
    install_kv_records,
    report_of,
    set_attention_implementations,
)
from quota.recipe import Recipe
from quota.runtime.apply import PrunedModel, apply
from quota.saved.architecture import rebuild
from quota.saved.manifest import SavedCheckpointError, read_manifest
from quota.saved.shards import read_shards, sha256_file
from quota.saved.writer import CONFIG_NAME, GENERATION_CONFIG


@dataclass
class LoadedQuantized:
    """A loaded checkpoint: ``model`` ready to run (a :class:`~quota.runtime.apply.PrunedModel` when the recipe
    prunes, else the quantized module), its ``processor`` (the ``AutoProcessor`` of a checkpoint folder, the
    tokenizer of the testbed; ``None`` when not loaded), the stored ``recipe`` (or ``None``), the ``manifest``
    body and the ``folder``."""

    model: nn.Module | PrunedModel
    processor: Any
    recipe: Recipe | None
    manifest: dict[str, Any]
    folder: Path

    @property
    def module(self) -> nn.Module:
        """The quantized ``nn.Module`` itself (inside the pruning runtime when there is one)."""
        return self.model.model if isinstance(self.model, PrunedModel) else self.model

    @property
    def quant_config(self) -> QuantConfig:
        return QuantConfig.from_dict(self.manifest["quant_config"])


def _check_files(folder: Path, files: dict[str, Any]) -> None:
    """``config.json`` and every recorded processor file present, with its recorded sha256."""
    if CONFIG_NAME not in files or not (folder / CONFIG_NAME).is_file():
        raise SavedCheckpointError(f"{folder}: {CONFIG_NAME} is missing")
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            raise SavedCheckpointError(f"{folder}: {name} is missing")
        actual = sha256_file(path)
        if actual != digest:
            raise SavedCheckpointError(f"{folder}: {name} is corrupted (sha256 {actual[:12]} is not the recorded "
                                       f"{str(digest)[:12]})")


def _cast(tensors: dict[str, torch.Tensor], stored: torch.dtype, dtype: torch.dtype, keep: set[str]
          ) -> dict[str, torch.Tensor]:
    """The tensors stored in the model's dtype ``stored``, cast to ``dtype``, except those named in ``keep``; the
    others as they are."""
    if dtype == stored:
        return tensors
    return {k: v.to(dtype) if v.dtype == stored and k not in keep else v for k, v in tensors.items()}


def _load_config(folder: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as err:  # transformers raises ValueError, KeyError, OSError or its own errors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SavedCheckpointError(f"{folder}/{CONFIG_NAME} cannot be read: {first}") from None


def _processor(folder: Path, source: dict[str, str]):
    if source["kind"] == "testbed":
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return load_processor(folder, source["model_class"])


def _no_meta_left(model: nn.Module, folder: Path) -> None:
    for prefix, module in model.named_modules():
        tensors = [*module._parameters.items(), *module._buffers.items(),
                   *((k, v) for k, v in vars(module).items() if isinstance(v, torch.Tensor))]
        for name, tensor in tensors:
            if tensor is not None and tensor.is_meta:
                raise SavedCheckpointError(f"{folder}: {prefix}.{name} was not stored and cannot be rebuilt")


def load(folder: str | os.PathLike, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
         *, impl: str | None = None, processor: bool = True) -> LoadedQuantized:
    """The saved quantized checkpoint ``folder`` on ``device`` (default: CUDA when there is one, else the CPU) in
    ``dtype`` (default: the dtype it was saved in, the bit-identical choice). ``impl`` (``reference``, ``triton`` or
    ``auto``) replaces the recorded kernel choice of the quantized linears and is the pruning runtime's; by default
    the linears keep theirs and the runtime takes ``auto``. ``processor=False`` skips loading the processor.
    Refuses (:class:`SavedCheckpointError`, one line) a folder that is not a checkpoint of this format and version,
    a missing or corrupted file, and records that do not fit the rebuilt model."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    _check_files(folder, manifest["files"])
    architecture = manifest["architecture"]
    try:
        stored = dtype_of(architecture.get("dtype"), "architecture.dtype")
        layout = TensorLayout.from_dict(architecture.get("tensors"))
        model = rebuild(_load_config(folder), architecture, impl)
        device = torch.device(device if device is not None else placement()[0])
        tensors = _cast(read_shards(folder, manifest["shards"], device), stored, dtype or stored,
                        float32_tensors(model))
        assign_tensors(model, tensors, layout)
        install_kv_records(model, architecture.get("kv_quantizers", {}))
        set_attention_implementations(model, architecture.get("attention", {}))
        model.quota_report = report_of(manifest["report"])
    except (ValueError, KeyError) as err:  # SerializeError, ShardError, SavedCheckpointError, a registry refusal
        text = str(err) if isinstance(err, ValueError) else f"architecture lacks {err}"
        raise SavedCheckpointError(text if text.startswith(str(folder)) else f"{folder}: {text}") from None
    _no_meta_left(model, folder)
    if (folder / GENERATION_CONFIG).is_file():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(folder, local_files_only=True)
    model.eval()
    recipe = Recipe.from_dict(manifest["recipe"], f"{folder} recipe") if manifest["recipe"] is not None else None
    runnable: nn.Module | PrunedModel = model
    if recipe is not None and recipe.prunes:
        runnable = apply(model, dataclasses.replace(recipe, quant=None), impl=impl or "auto")
    return LoadedQuantized(runnable, _processor(folder, manifest["source"]) if processor else None, recipe,
                           manifest, folder)
