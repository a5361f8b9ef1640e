"""Records -> what the profiler and the quantizer calibrate on.

:func:`calibration_batches` gives :class:`RecordBatch` objects, the profiler's
:class:`~quota.profiling.sensitivity.CalibrationBatch` (prompt, pixels, teacher-forced answer tokens, tasks) plus
the image tensors a family needs beside ``pixel_values`` (``image_inputs``: Qwen2-VL's ``image_grid_thw``,
LLaVA-NeXT's ``image_sizes``, Idefics3's ``pixel_attention_mask``) and each row's visual token count.
:func:`calibration_inputs` gives plain model inputs without answers, for GPTQ and the clipping searches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from quota.data.prompts import batches, encode_batch
from quota.data.records import Record
from quota.profiling.sensitivity import CalibrationBatch


@dataclass
class RecordBatch(CalibrationBatch):
    """A :class:`CalibrationBatch` of user records: ``image_inputs`` holds the processor's image tensors other
    than ``pixel_values`` (empty for LLaVA-1.5), ``n_visual[i]`` the visual tokens of row ``i``."""

    image_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    n_visual: list[int] = field(default_factory=list)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments of the model's forward for the prompts (no answers)."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "pixel_values": self.pixel_values, **self.image_inputs}


def image_size(record: Record) -> tuple[int, int]:
    """``(height, width)`` of a record's image, read from the file's header (the image is not decoded)."""
    from PIL import Image

    with Image.open(record.image) as img:
        return img.height, img.width


def same_size_batches(records: Sequence[Record], batch_size: int) -> list[list[Record]]:
    """``records`` in batches of at most ``batch_size`` whose images all have one size (so one number of visual
    tokens, whatever the model's resolution policy): sizes in order of first appearance, records in file order
    within a size. Deterministic; one batch list when every image has the same size."""
    groups: dict[tuple[int, int], list[Record]] = {}
    for r in records:
        groups.setdefault(image_size(r), []).append(r)
    return [chunk for group in groups.values() for chunk in batches(group, batch_size)]


def calibration_batches(processor, records: Sequence[Record], batch_size: int,
                        device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> list[RecordBatch]:
    """``records`` in batches of at most ``batch_size`` of one image size (:func:`same_size_batches`), each with
    its teacher-forced answers."""
    out = []
    for chunk in same_size_batches(records, batch_size):
        b = encode_batch(processor, chunk, with_answers=True, device=device, dtype=dtype)
        extra = {k: v for k, v in b.image_inputs.items() if k != "pixel_values"}
        out.append(RecordBatch(b.input_ids, b.attention_mask, b.inputs["pixel_values"], b.answer_ids, b.answer_mask,
                               b.tasks, image_inputs=extra, n_visual=b.n_visual))
    return out


def calibration_inputs(processor, records: Sequence[Record], batch_size: int = 8,
                       device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> list[dict]:
    """Model inputs (prompts with images, no answers) of ``records``: what quantization calibrates on."""
    return [encode_batch(processor, chunk, with_answers=False, device=device, dtype=dtype).inputs
            for chunk in same_size_batches(records, batch_size)]
