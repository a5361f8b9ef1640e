"""Loading a local Hugging Face VLM checkpoint folder, offline.

Contract of :func:`load_checkpoint`: the folder's ``config.json`` names a class of the registry
(:func:`~quota.models.registry.checkpoint_class`); the folder holds the processor files (a tokenizer and an image
processor config); the vision config can be sized (:mod:`quota.models.visual_tokens`). Each failure is one
:class:`~quota.models.registry.UnsupportedModelError` line that names the folder and what is wrong, raised before
any weight is read. Nothing is downloaded (``local_files_only=True``); the model comes back in eval mode on the
device and dtype asked for, with the processor padding on the left.

Processors without torchvision. Qwen2-VL's, Qwen2.5-VL's and SmolVLM's processors hold a video processor, which
transformers builds only with torchvision, so ``AutoProcessor`` fails on a machine without it. quota feeds images
only, so :func:`load_processor` then builds the family's processor class (``processor_class`` of the folder's
processor settings, or transformers' mapping of the ``model_type``) from its tokenizer (``AutoTokenizer``), its
image processor (``AutoImageProcessor``, which takes the PIL backend without torchvision) and the saved processor
settings and chat template, with no video processor: :func:`image_only_class` gives a subclass of the same name that
drops the video processor argument and refuses videos with one clear error. Its image tokens are those of the
full processor (the image processor alone decides them), and ``save_pretrained`` writes the same
``processor_class``, so a folder it saves loads the same way. SmolVLM's processor also needs the ``num2words``
package (``pip install num2words``, or the ``smolvlm`` extra); without it the error names that package.

The checkpoint's identity is :func:`checkpoint_hash`: sha256 of ``config.json`` and every weight file (names and
bytes, in sorted order), so renaming the folder keeps it and changing one weight changes it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
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


def _first_line(err: BaseException, limit: int = 240) -> str:
    """The first line of ``err``'s message, cut at a word before ``limit`` characters (transformers' errors may
    list every model type it knows)."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    if len(line) <= limit:
        return line
    cut = line.rfind(" ", 0, limit)
    return line[: cut if cut > 0 else limit].rstrip(",;: ") + " ..."


def _load_config(folder: Path, model_class: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as err:  # transformers' config validation raises ValueError, KeyError or its own errors
        raise UnsupportedModelError(
            f"{folder}/config.json is not a valid {model_class} config: {_first_line(err)}"
        ) from None


def _model_class(name: str):
    import transformers

    cls = getattr(transformers, name, None)
    if cls is None:
        raise UnsupportedModelError(f"transformers {transformers.__version__} has no class {name}")
    return cls


VIDEO_PROCESSOR = "video_processor"
MISSING_PACKAGES = {  # a package a processor may need beyond transformers -> how to get it
    "num2words": "pip install num2words, or install quota with its smolvlm extra",
    "torchvision": "install the torchvision build that matches this torch",
}


def _reason(err: BaseException) -> str:
    """One line saying why a processor failed to load, naming the missing package when it is one."""
    text = str(err).lower()
    for package, install in MISSING_PACKAGES.items():
        if package in text:
            return f"needs {package}, which this environment lacks: {install}"
    return _first_line(err)


class NoVideoProcessor:
    """Stands in for the video processor of an image-only processor: refuses videos with one clear error.

    ``num_frames`` and ``fps`` are ``None`` (SmolVLM's chat template reads them as defaults for video inputs)."""

    num_frames = None
    fps = None

    def __call__(self, *args, **kwargs):
        raise ValueError("this processor was built without a video processor (transformers builds it only with "
                         "torchvision): quota gives it images only")

    def __repr__(self) -> str:
        return "NoVideoProcessor()"


@lru_cache(maxsize=None)
def image_only_class(cls: type) -> type:
    """A subclass of the processor class ``cls`` (same name, same behaviour on images and text) whose sub-processors
    are ``cls``'s without the video processor: its ``__init__`` accepts and drops the video processor argument,
    and its ``video_processor`` is a :class:`NoVideoProcessor`. ``cls`` must have a video processor attribute.
    One class per ``cls`` (cached), so ``isinstance`` agrees across loads."""
    from transformers import ProcessorMixin

    full = list(cls.get_attributes())
    position = full.index(VIDEO_PROCESSOR)
    kept = [name for name in full if name != VIDEO_PROCESSOR]

    class WithoutVideo(ProcessorMixin):  # sits between cls and ProcessorMixin in the subclass's MRO
        def __init__(self, *args, **kwargs):
            args = list(args)
            if VIDEO_PROCESSOR in kwargs:
                kwargs.pop(VIDEO_PROCESSOR)
            elif len(args) > position:
                del args[position]
            super().__init__(*args, **kwargs)

    def get_attributes(_cls) -> list[str]:
        return list(kept)

    return type(cls.__name__, (cls, WithoutVideo), {
        "get_attributes": classmethod(get_attributes), VIDEO_PROCESSOR: NoVideoProcessor(),
        "__module__": cls.__module__, "__doc__": f"{cls.__name__} without its video processor (images only).",
    })


def _json_entry(path: Path, key: str):
    try:
        return json.loads(path.read_text()).get(key) if path.is_file() else None
    except (json.JSONDecodeError, AttributeError):
        return None


def _processor_class(folder: Path):
    """The transformers processor class the folder's files name (``processor_config.json``, then
    ``preprocessor_config.json``, then ``tokenizer_config.json``), else the one of its ``model_type``; or ``None``."""
    import transformers

    name = None
    for file in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        if isinstance(name := _json_entry(folder / file, "processor_class"), str):
            break
    if not isinstance(name, str):
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

        name = PROCESSOR_MAPPING_NAMES.get(_json_entry(folder / "config.json", "model_type"))
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    return cls if isinstance(cls, type) and issubclass(cls, transformers.ProcessorMixin) else None


def _init_settings(cls: type, settings: dict) -> dict:
    """The entries of ``settings`` that ``cls.__init__`` names (``image_seq_len``, ``chat_template``, ...), without
    the sub-processors."""
    import inspect

    named = {name for name, param in inspect.signature(cls.__init__).parameters.items()
             if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and name != "self"}
    named -= set(cls.get_attributes()) | {VIDEO_PROCESSOR}
    return {key: value for key, value in settings.items() if key in named}


def _load_image_only(folder: Path, cls: type):
    """``cls``'s processor for the folder without its video processor (:func:`image_only_class`), built from the
    folder's tokenizer, image processor, processor settings and chat template (``get_processor_dict``)."""
    from transformers import AutoTokenizer
    # from its module: transformers 5.17's top-level AutoImageProcessor asks for torchvision; the class itself doesn't
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    image_only = image_only_class(cls)
    settings, _ = cls.get_processor_dict(folder, local_files_only=True)
    return image_only(image_processor=AutoImageProcessor.from_pretrained(folder, local_files_only=True),
                      tokenizer=AutoTokenizer.from_pretrained(folder, local_files_only=True),
                      video_processor=None, **_init_settings(cls, settings))


def _auto_or_image_only(folder: Path):
    """``AutoProcessor``'s processor for the folder; when that fails (any error: a missing torchvision surfaces as
    ImportError, ValueError or RuntimeError depending on the transformers version) and the folder's processor class
    holds a video processor, the image-only one of :func:`_load_image_only`, whose error then is the one raised."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(folder, local_files_only=True)
    except Exception:
        cls = _processor_class(folder)
        if cls is None or VIDEO_PROCESSOR not in cls.get_attributes():
            raise
    return _load_image_only(folder, cls)


def load_processor(folder: Path, model_class: str):
    """The folder's processor (:func:`_auto_or_image_only`), padding on the left. Raises
    :class:`ProcessorMissingError` with one line naming the problem (and the package to install, when one is
    missing)."""
    try:
        processor = _auto_or_image_only(folder)
    except Exception as err:  # transformers raises ImportError, OSError, ValueError, TypeError, KeyError, ...
        raise ProcessorMissingError(
            f"{folder}: cannot load the processor of this {model_class}: {_reason(err)}"
        ) from None
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
    processor = load_processor(folder, name)
    _check_image_token(config, processor, folder)
    visual_tokens_of(config, processor.image_processor, (64, 64))  # VisionConfigError before weights are read
    model = _model_class(name).from_pretrained(folder, local_files_only=True, dtype=dtype)
    model = model.to(device).eval()
    return LoadedCheckpoint(model=model, processor=processor, spec=spec_for(model), model_id=folder.resolve().name,
                            model_hash=checkpoint_hash(folder), model_class=name, folder=folder)
