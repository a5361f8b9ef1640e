"""Loading a local Hugging Face VLM checkpoint folder, offline.

Contract of :func:`load_checkpoint`: the folder's ``config.json`` names a class of the registry
(:func:`~quota.models.registry.checkpoint_class`); the folder holds the processor files (a tokenizer and an image
processor config); the vision config can be sized (:mod:`quota.models.visual_tokens`). Each failure is one
:class:`~quota.models.registry.UnsupportedModelError` line that names the folder and what is wrong, raised before
any weight is read. Nothing is downloaded (``local_files_only=True``); the model comes back in eval mode on the
device and dtype asked for, with the processor padding on the left.

The checkpoint's identity is :func:`checkpoint_hash`: sha256 of ``config.json`` and every weight file (names and
bytes, in sorted order), so renaming the folder keeps it and changing one weight changes it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from quota.models.registry import UnsupportedModelError, checkpoint_class, spec_for
from quota.models.spec import ArchSpec
from quota.models.visual_tokens import is_dynamic, visual_tokens_of


class ProcessorMissingError(UnsupportedModelError):
    """The checkpoint folder has no processor quota can load (no tokenizer, no image processor config)."""


WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def weight_files(folder: str | Path) -> list[Path]:
    """The weight files of a checkpoint folder (safetensors, or PyTorch ``.bin``, with their indexes), sorted."""
    folder = Path(folder)
    return sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern) if p.is_file()})


def checkpoint_hash(folder: str | Path) -> str:
    """sha256 (hex) of ``config.json`` and the weight files: each file's name, size and bytes, in sorted order."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in [folder / "config.json", *weight_files(folder)]:
        h.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def _image_processor_config(folder: Path) -> dict | None:
    """The image processor's saved settings: ``preprocessor_config.json``, or the ``image_processor`` entry of a
    ``processor_config.json`` (the layout newer transformers writes)."""
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        return json.loads(pre.read_text())
    proc = folder / "processor_config.json"
    if proc.is_file():
        entry = json.loads(proc.read_text()).get("image_processor")
        return entry if isinstance(entry, dict) else None
    return None


def check_processor_files(folder: str | Path) -> None:
    """:class:`ProcessorMissingError` unless ``folder`` holds a tokenizer and an image processor config."""
    folder = Path(folder)
    save = "save it with processor.save_pretrained(folder)"
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ProcessorMissingError(f"{folder} has no tokenizer ({', '.join(TOKENIZER_FILES)}): {save}")
    try:
        config = _image_processor_config(folder)
    except json.JSONDecodeError as err:
        raise ProcessorMissingError(f"{folder}: the image processor config is not JSON ({err})") from None
    if config is None:
        raise ProcessorMissingError(
            f"{folder} has no image processor config (preprocessor_config.json, or processor_config.json with an "
            f"image_processor entry): {save}"
        )


@dataclass
class LoadedCheckpoint:
    """A checkpoint ready to run: ``model`` (eval mode), its ``processor``, the registry's ``spec``, ``model_id``
    (the folder's name), ``model_hash`` (:func:`checkpoint_hash`), ``model_class`` and ``folder``."""

    model: nn.Module
    processor: Any
    spec: ArchSpec
    model_id: str
    model_hash: str
    model_class: str
    folder: Path

    @property
    def image_processor(self):
        return getattr(self.processor, "image_processor", None)

    @property
    def dynamic_resolution(self) -> bool:
        """Whether N depends on the image (LLaVA-NeXT anyres, Qwen2-VL, splitting Idefics3/SmolVLM)."""
        return is_dynamic(self.model.config, self.image_processor)

    def visual_tokens(self, image_size: tuple[int, int] | None = None) -> int:
        """N for one image of ``(height, width)`` pixels (optional for fixed-resolution checkpoints)."""
        return visual_tokens_of(self.model.config, self.image_processor, image_size)


def _load_config(folder: Path, model_class: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as err:  # transformers' config validation raises ValueError, KeyError or its own errors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsupportedModelError(f"{folder}/config.json is not a valid {model_class} config: {first}") from None


def _model_class(name: str):
    import transformers

    cls = getattr(transformers, name, None)
    if cls is None:
        raise UnsupportedModelError(f"transformers {transformers.__version__} has no class {name}")
    return cls


def _load_processor(folder: Path, model_class: str):
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    except (ImportError, OSError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        missing = "torchvision" if "torchvision" in str(err).lower() else None
        reason = f"needs {missing}, which is not installed" if missing else first
        raise ProcessorMissingError(f"{folder}: cannot load the processor of this {model_class}: {reason}") from None
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise ProcessorMissingError(
            f"{folder}: AutoProcessor gave a {type(processor).__name__}, not a processor with a tokenizer and an "
            f"image processor"
        )
    processor.tokenizer.padding_side = "left"
    return processor


def _check_image_token(config, processor, folder: Path) -> None:
    token_id = getattr(config, "image_token_id", None)
    if token_id is None:
        token_id = getattr(config, "image_token_index", None)
    got = getattr(processor, "image_token_id", None)
    if token_id is not None and got is not None and int(got) != int(token_id):
        raise ProcessorMissingError(
            f"{folder}: the processor's image token id {got} differs from config.json's image_token_id {token_id}"
        )


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> LoadedCheckpoint:
    """Load the model of a local checkpoint folder through the class its ``config.json`` names, and its processor.

    Checks, in order and before reading weights: a supported class, processor files, a vision config that quota
    can size. Raises :class:`UnsupportedModelError` (or its subclasses :class:`ProcessorMissingError`,
    :class:`~quota.models.visual_tokens.VisionConfigError`) with one line naming the problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    name = checkpoint_class(folder)
    check_processor_files(folder)
    config = _load_config(folder, name)
    processor = _load_processor(folder, name)
    _check_image_token(config, processor, folder)
    visual_tokens_of(config, processor.image_processor, (64, 64))  # VisionConfigError before weights are read
    model = _model_class(name).from_pretrained(folder, local_files_only=True, dtype=dtype)
    model = model.to(device).eval()
    return LoadedCheckpoint(model=model, processor=processor, spec=spec_for(model), model_id=folder.resolve().name,
                            model_hash=checkpoint_hash(folder), model_class=name, folder=folder)
