"""The testbed's calibration batches: synthetic questions in the testbed's prompt format, with their images
and answer tokens, as the profiler (:class:`~quota.profiling.sensitivity.CalibrationBatch`) and the
quantizer's calibration (model inputs without answers) consume them."""

from __future__ import annotations

import numpy as np
import torch

from quota.profiling.sensitivity import CalibrationBatch
from quota.testbed.model import answer_ids, encode_batch, pixel_values
from quota.testbed.splits import calibration_split, load_scene


def make_batches(tokenizer, questions, batch_size: int, device, dtype) -> list[CalibrationBatch]:
    """Calibration questions -> batches in the testbed prompt format (answers end with ``<|im_end|>``)."""
    out = []
    for i in range(0, len(questions), batch_size):
        chunk = questions[i : i + batch_size]
        enc = encode_batch(tokenizer, [q.question for q in chunk])
        answers = [answer_ids(tokenizer, q.answer) for q in chunk]
        width = max(map(len, answers))
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.bool)
        for j, a in enumerate(answers):
            ids[j, : len(a)] = torch.tensor(a)
            mask[j, : len(a)] = True
        images = np.stack([load_scene(q).image for q in chunk])
        out.append(CalibrationBatch(
            enc["input_ids"].to(device), enc["attention_mask"].to(device), pixel_values(images).to(device, dtype),
            ids.to(device), mask.to(device), [q.task for q in chunk],
        ))
    return out


def calibration_inputs(tokenizer, device, dtype, batch_size: int = 32, questions=None) -> list[dict]:
    """Model inputs (prompts with images) of ``questions`` (default: the calibration split), without the
    answers: the data GPTQ and the clipping searches calibrate on."""
    questions = calibration_split() if questions is None else questions
    return [{"input_ids": b.input_ids, "attention_mask": b.attention_mask, "pixel_values": b.pixel_values}
            for b in make_batches(tokenizer, questions, batch_size, device, dtype)]
