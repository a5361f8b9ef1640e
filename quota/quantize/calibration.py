"""Calibration data plumbing: validating batches, capturing the inputs of the first decoder layer, and
running one layer over captured inputs (the sequential layer-by-layer pass of GPTQ and clip search)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.nn as nn

from quota.models.spec import ArchSpec


class CalibrationDataError(ValueError):
    """Calibration batches are missing or malformed; the message says which batch and why."""


def validate_batches(batches: Iterable[Any] | None, vocab_size: int | None = None) -> list[dict[str, Any]]:
    """Normalize calibration batches to a list of model-input dicts.

    Each batch is either a LongTensor ``[B, S]`` of token ids or a dict holding at least
    ``input_ids`` ``[B, S]`` (plus e.g. ``attention_mask``, ``pixel_values`` for a VLM).
    """
    if batches is None:
        raise CalibrationDataError("this QuantConfig needs calibration batches (GPTQ or clipping search); got None")
    out = []
    for i, batch in enumerate(batches):
        if isinstance(batch, torch.Tensor):
            batch = {"input_ids": batch}
        if not isinstance(batch, dict) or "input_ids" not in batch:
            raise CalibrationDataError(f"calibration batch {i} must be a LongTensor [B, S] or a dict with 'input_ids'")
        ids = batch["input_ids"]
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            dtype = getattr(ids, "dtype", None)
            raise CalibrationDataError(
                f"calibration batch {i}: input_ids must be an integer tensor [B, S], got shape {shape} dtype {dtype}"
            )
        if ids.numel() == 0:
            raise CalibrationDataError(f"calibration batch {i} is empty (shape {tuple(ids.shape)})")
        if vocab_size is not None and (int(ids.max()) >= vocab_size or int(ids.min()) < 0):
            raise CalibrationDataError(
                f"calibration batch {i} has token ids outside [0, {vocab_size}): min {int(ids.min())}, max {int(ids.max())}"
            )
        out.append(batch)
    if not out:
        raise CalibrationDataError("calibration batches are empty: give at least one batch")
    return out


class _StopForward(Exception):
    pass


@dataclass
class LayerInputs:
    """Captured ``(args, kwargs)`` of every call of one decoder layer, hidden states separately."""

    hidden: list[torch.Tensor] = field(default_factory=list)  # each [B, S, d]
    args: list[tuple] = field(default_factory=list)
    kwargs: list[dict] = field(default_factory=list)


@torch.no_grad()
def capture_first_layer_inputs(model: nn.Module, spec: ArchSpec, batches: list[dict[str, Any]]) -> LayerInputs:
    """Run the model until its first decoder layer for each batch and keep that layer's inputs."""
    captured = LayerInputs()
    first = spec.layers_of(model)[0]
    device = next(model.parameters()).device

    def hook(_module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.hidden.append(hidden)
        captured.args.append(tuple(args[1:]))
        captured.kwargs.append(dict(kwargs))
        raise _StopForward

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            try:
                model(**inputs, use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
    return captured


@torch.no_grad()
def run_layer(layer: nn.Module, inputs: LayerInputs) -> list[torch.Tensor]:
    """Outputs (hidden states) of ``layer`` for every captured call."""
    outs = []
    for hidden, args, kwargs in zip(inputs.hidden, inputs.args, inputs.kwargs):
        out = layer(hidden, *args, **kwargs)
        outs.append(out[0] if isinstance(out, tuple) else out)
    return outs
