"""The testbed quantized once per config and calibration set, through the disk cache of quantized models
(:mod:`quota.quantize.disk_cache`), keyed by the testbed's model hash (weights and model card), the data
version and the calibration question count; each entry records them in its header."""

from __future__ import annotations

import os

import torch.nn as nn

from quota.profiling.sensitivity import teacher_answers
from quota.quant.config import QuantConfig
from quota.quantize.disk_cache import quantize_cached
from quota.testbed.batches import calibration_inputs
from quota.testbed.model import model_hash
from quota.testbed.splits import DATA_VERSION, calibration_split


def quantize_testbed(model: nn.Module, tokenizer, config: QuantConfig, weights_dir: str | os.PathLike | None = None,
                     calibration_limit: int | None = None, inplace: bool = False) -> nn.Module:
    """The testbed quantized per ``config``, calibrated on the first ``calibration_limit`` questions of the
    calibration split (default: all), through the cache (keyed by the testbed's hash and the data version)."""
    questions = calibration_split()[:calibration_limit] if calibration_limit else calibration_split()
    param = next(model.parameters())
    identity = {"model_hash": model_hash(weights_dir), "data_version": DATA_VERSION, "calibration": len(questions)}
    return quantize_cached(model, config, lambda: calibration_inputs(tokenizer, param.device, param.dtype,
                                                                     questions=questions), identity, inplace=inplace)


def quantize_after_teacher(model: nn.Module, tokenizer, config: QuantConfig, batches, n_visual: int, teacher: bool,
                           calibration_limit: int | None = None, impl: str = "auto"):
    """``(quantized model, teacher answers or None)``: with ``teacher``, the float ``model``'s all-token answers on
    ``batches`` (:func:`~quota.profiling.sensitivity.teacher_answers`) are taken first, since the testbed is then
    quantized in place (:func:`quantize_testbed`, ``inplace=True``) and its float weights are gone."""
    answers = teacher_answers(model, batches, n_visual, impl) if teacher else None
    return quantize_testbed(model, tokenizer, config, calibration_limit=calibration_limit, inplace=True), answers
