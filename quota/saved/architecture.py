"""A quantized model's architecture as data: what to build from ``config.json`` and which modules to put in.

A saved checkpoint keeps the source model's ``config.json``. :func:`describe` finds how the quantized model
differs from what that config builds (the registry's class constructed on the meta device: no memory, no
initialization cost) and records it as an ordered list of **edits**, each ``{"path": dotted path, "kind": ...}``:

- ``QuantLinear`` and ``RotatedOutput`` records of :mod:`quota.quantize.serialize` (the quantized linears, the
  rotated projector);
- ``part``: a module class that no config builds, constructed as ``cls(config)`` from :data:`CUSTOM_PARTS` (the
  testbed's :class:`~quota.testbed.model.NormalizedProjector`).

Edits are found parent first, so replaying them in order (:func:`rebuild`) reproduces the structure. ``describe``
replays them itself and refuses (:class:`SavedCheckpointError`) a model whose tensors would then not match by
name and shape, so a checkpoint that is written can be rebuilt. It also records ``config_overrides``
(``tie_word_embeddings``, which the rotation turns off), the KV quantizers and the attention implementations.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from quota.models.registry import UnsupportedModelError, spec_for, supported_model_classes
from quota.models.spec import get_submodule, set_submodule
from quota.quantize.serialize import (
    SerializeError,
    attention_implementations,
    build_module,
    dtype_name,
    kv_records,
    module_record,
)
from quota.saved.manifest import SavedCheckpointError
from quota.testbed.model import NormalizedProjector

CUSTOM_PARTS: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (NormalizedProjector,)}
"""Module classes a config does not build, by name; each is constructed as ``cls(config)`` and then filled."""
OVERRIDABLE = ("tie_word_embeddings",)
"""Config attributes whose values are recorded from the quantized model and set again before building it."""
_SUB_CONFIGS = ("text_config",)


def model_class(name: str) -> type[nn.Module]:
    """The transformers class ``name``, which must be in the registry."""
    import transformers

    cls = getattr(transformers, name, None)
    if cls is None or name not in supported_model_classes():
        raise UnsupportedModelError(f"model class {name!r} is not supported here; supported: "
                                    f"{', '.join(supported_model_classes())}")
    return cls


def config_overrides(model: nn.Module) -> dict[str, Any]:
    """``{"tie_word_embeddings": v, "text_config.tie_word_embeddings": v}``: the :data:`OVERRIDABLE` values of the
    model's config and its text config, where they are set."""
    config = model.config
    found = {}
    for prefix, c in [("", config)] + [(f"{r}.", getattr(config, r, None)) for r in _SUB_CONFIGS]:
        for name in OVERRIDABLE:
            value = getattr(c, name, None) if c is not None else None
            if value is not None:
                found[prefix + name] = value
    return found


def apply_overrides(config, overrides: dict[str, Any]) -> None:
    """Set the recorded :func:`config_overrides` on a config read from ``config.json``."""
    for key, value in overrides.items():
        role, _, name = key.rpartition(".")
        target = getattr(config, role, None) if role else config
        if name not in OVERRIDABLE or (role and role not in _SUB_CONFIGS) or target is None:
            raise SavedCheckpointError(f"config override {key!r} does not apply to this config")
        setattr(target, name, value)


def empty_model(config, class_name: str) -> nn.Module:
    """The registry's class ``class_name`` built from ``config`` on the meta device (no memory, no init cost)."""
    cls = model_class(class_name)
    with torch.device("meta"):
        return cls(config)


def _module_at(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return get_submodule(root, path)
    except AttributeError:
        return None


def apply_edit(model: nn.Module, edit: dict[str, Any], config, impl: str | None = None) -> None:
    """Replay one edit on ``model`` (on the meta device): replace, wrap or construct the module at its path.
    ``impl`` replaces the recorded kernel choice of quantized linears."""
    if not isinstance(edit, dict) or not isinstance(edit.get("path"), str):
        raise SavedCheckpointError(f"edit {edit!r:.80}: expected an object with a path")
    path = edit["path"]
    current = _module_at(model, path)
    parent = path.rpartition(".")[0]
    if parent and _module_at(model, parent) is None:
        raise SavedCheckpointError(f"edit {path}: the model has no module {parent}")
    with torch.device("meta"):
        if edit.get("kind") == "part":
            cls = CUSTOM_PARTS.get(edit.get("class"))
            if cls is None:
                raise SavedCheckpointError(f"edit {path}: unknown part class {edit.get('class')!r}; known: "
                                           f"{sorted(CUSTOM_PARTS)}")
            new = cls(config)
        else:
            try:
                new = build_module({k: v for k, v in edit.items() if k != "path"}, current, f"edit {path}", impl)
            except SerializeError as err:
                raise SavedCheckpointError(str(err)) from None
    set_submodule(model, path, new)


def rebuild(config, architecture: dict[str, Any], impl: str | None = None) -> nn.Module:
    """The quantized model's structure on the meta device: the recorded class built from ``config`` (with the
    recorded overrides), then every edit replayed in order."""
    apply_overrides(config, architecture["config_overrides"])
    model = empty_model(config, architecture["model_class"])
    for edit in architecture["edits"]:
        apply_edit(model, edit, config, impl)
    return model


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    tensors = {**dict(model.named_parameters(remove_duplicate=False)),
               **dict(model.named_buffers(remove_duplicate=False))}
    return {name: tuple(t.shape) for name, t in tensors.items()}


def describe(model: nn.Module, config) -> dict[str, Any]:
    """The ``architecture`` record of a quantized ``model`` whose ``config.json`` reads back as ``config``
    (without its tensor layout, which :func:`quota.quantize.serialize.model_tensors` gives). Refuses a module
    that neither the config, the quantized modules nor :data:`CUSTOM_PARTS` can rebuild, and a rebuild whose
    tensors differ in name or shape from the model's."""
    class_name = type(model).__name__
    spec_for(model)  # UnsupportedModelError for a class outside the registry
    overrides = config_overrides(model)
    apply_overrides(config, overrides)
    skeleton = empty_model(config, class_name)
    edits: list[dict[str, Any]] = []
    for path, module in model.named_modules():
        if not path:
            continue
        current = _module_at(skeleton, path)
        if current is not None and type(current) is type(module):
            continue
        record = module_record(module)
        if record is None:
            name = type(module).__name__
            if CUSTOM_PARTS.get(name) is not type(module):
                built = type(current).__name__ if current is not None else "nothing"
                raise SavedCheckpointError(
                    f"cannot save {class_name}: {path} is a {name}, config.json builds {built} there, and quota "
                    f"cannot rebuild a {name} (known extra parts: {sorted(CUSTOM_PARTS)})")
            record = {"kind": "part", "class": name}
        edit = {"path": path, **record}
        apply_edit(skeleton, edit, config)
        edits.append(edit)
    want, got = _shapes(model), _shapes(skeleton)
    if want != got:
        diff = sorted(set(want) ^ set(got)) or sorted(k for k in want if want[k] != got[k])
        raise SavedCheckpointError(f"cannot save {class_name}: rebuilt from config.json its tensors differ at "
                                   f"{diff[:3]}")
    dtype = spec_for(model).embeddings_of(model).weight.dtype
    return {"model_class": class_name, "dtype": dtype_name(dtype), "config_overrides": overrides, "edits": edits,
            "kv_quantizers": kv_records(model), "attention": attention_implementations(model)}

