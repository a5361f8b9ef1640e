"""``save(model, out, source, ...)``: write a quantized model as a self-contained checkpoint folder.

The folder (see :mod:`quota.saved` for its layout) holds everything :func:`quota.saved.loader.load` needs: the
source ``config.json``, the processor files, every tensor of the quantized model in safetensors shards, and the
manifest with the module records. It is built in a temporary folder beside ``out`` and renamed into place
(:mod:`quota.saved.folder`): an error leaves nothing behind, and an existing ``out`` is replaced only with
``overwrite`` and only when it is itself a saved checkpoint.
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from quota.atomic import runtime_record, write_json_atomic
from quota.models.checkpoint import IMAGE_PROCESSOR_FILES, TOKENIZER_FILES, LoadedCheckpoint
from quota.quant.config import QuantConfig
from quota.quantize.serialize import model_tensors, report_record
from quota.recipe import Recipe
from quota.runtime.apply import PrunedModel, check_fits
from quota.saved.architecture import describe
from quota.saved.folder import building
from quota.saved.manifest import MANIFEST_NAME, SavedCheckpointError, manifest_dict
from quota.saved.shards import MAX_SHARD_BYTES, sha256_file, write_shards
from quota.testbed import model as testbed

CONFIG_NAME = "config.json"
GENERATION_CONFIG = "generation_config.json"
PROCESSOR_FILES = (*TOKENIZER_FILES, *IMAGE_PROCESSOR_FILES, "special_tokens_map.json", "added_tokens.json",
                   "merges.txt", "chat_template.jinja", "chat_template.json", "video_preprocessor_config.json",
                   GENERATION_CONFIG)
"""Files copied from a source checkpoint folder beside ``config.json``, those that exist."""


@dataclass(frozen=True)
class Source:
    """The model a checkpoint was quantized from: ``kind`` (``checkpoint``: a local folder; ``testbed``),
    ``model_id``, ``model_hash`` and ``model_class``."""

    kind: str
    model_id: str
    model_hash: str
    model_class: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def of_checkpoint(cls, loaded: LoadedCheckpoint) -> "Source":
        """The source record of a folder loaded by :func:`quota.models.checkpoint.load_checkpoint`."""
        return cls("checkpoint", loaded.model_id, loaded.model_hash, loaded.model_class)

    @classmethod
    def of_testbed(cls, model: nn.Module, weights_dir: str | os.PathLike | None = None) -> "Source":
        """The source record of the testbed (weights from ``weights_dir``, default the shipped ones)."""
        return cls("testbed", testbed.MODEL_ID, testbed.model_hash(weights_dir), type(model).__name__)


def _write_source_files(folder: Path, files_from: Path | None, config: Any, processor: Any, class_name: str) -> None:
    """``config.json`` and the processor files: copied from ``files_from``, or written from ``config`` (naming
    ``class_name`` in ``architectures`` when it names nothing) and ``processor.save_pretrained``."""
    if files_from is not None:
        if not (files_from / CONFIG_NAME).is_file():
            raise SavedCheckpointError(f"{files_from} has no {CONFIG_NAME} to copy")
        for name in (CONFIG_NAME, *PROCESSOR_FILES):
            if (files_from / name).is_file():
                shutil.copyfile(files_from / name, folder / name)
        return
    config = copy.deepcopy(config)
    if not getattr(config, "architectures", None):
        config.architectures = [class_name]
    config.to_json_file(folder / CONFIG_NAME)
    if processor is not None:
        processor.save_pretrained(folder)


def save(model: nn.Module | PrunedModel, out: str | os.PathLike, source: Source, *,
         files_from: str | os.PathLike | None = None, config: Any = None, processor: Any = None,
         recipe: Recipe | None = None, overwrite: bool = False, max_shard_bytes: int = MAX_SHARD_BYTES) -> Path:
    """Write ``model`` (quantized by :func:`~quota.quantize.model.quantize_model`; a :class:`PrunedModel` is
    unwrapped) to the folder ``out``; returns ``out``.

    ``config.json`` and the processor come from the source folder ``files_from`` (copied: :data:`PROCESSOR_FILES`),
    or, for a model with no folder (the testbed), from ``config`` (a transformers config) and ``processor`` (its
    ``save_pretrained`` output); give exactly one of ``files_from`` and ``config``. ``recipe`` is stored for the
    loader to prune with; it must fit the model. Every shard file is at most ``max_shard_bytes``.

    Raises :class:`SavedCheckpointError` for an ``out`` that exists (without ``overwrite``), a model quota did not
    quantize or cannot rebuild, and missing source files; the folder then does not appear."""
    if isinstance(model, PrunedModel):
        model = model.model
    report = report_record(model)
    if report is None:
        raise SavedCheckpointError("the model was not quantized by quota (it has no quota_report): quantize it with "
                                   "quota.quantize_model first")
    quant_config = QuantConfig.from_dict(report["config"])
    if (files_from is None) == (config is None):
        raise ValueError("give exactly one of files_from (a checkpoint folder) and config (a transformers config)")
    if files_from is not None and processor is not None:
        raise ValueError("processor goes with config: with files_from the processor files are copied from the folder")
    if recipe is not None:
        if not isinstance(recipe, Recipe):
            raise TypeError(f"recipe must be a quota.recipe.Recipe, got {type(recipe).__name__}")
        check_fits(model, recipe)
    from transformers import AutoConfig

    files_from = Path(files_from) if files_from is not None else None
    with building(out, overwrite, MANIFEST_NAME) as tmp:
        _write_source_files(tmp, files_from, config, processor, type(model).__name__)
        architecture = describe(model, AutoConfig.from_pretrained(tmp, local_files_only=True))
        tensors, layout = model_tensors(model)
        architecture["tensors"] = layout.to_dict()
        shards = write_shards(tensors, tmp, max_shard_bytes)
        stored = {shards["index"]["file"], *(f["file"] for f in shards["files"])}
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file() and p.name not in stored}
        env = runtime_record()
        body = {"quota_version": env["versions"]["quota"], "versions": env["versions"], "source": source.to_dict(),
                "quant_config": quant_config.to_dict(), "recipe": recipe.to_dict() if recipe is not None else None,
                "report": report, "architecture": architecture, "shards": shards, "files": files}
        write_json_atomic(tmp / MANIFEST_NAME, manifest_dict(body))
    return Path(out)
