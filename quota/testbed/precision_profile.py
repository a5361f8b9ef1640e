"""Precision profiling of the testbed (the Python form of ``quota profile --precisions``): quantize the testbed once
per option on the calibration split (through the disk cache), then measure the precision profile
(:func:`quota.profiling.precision_run.profile_precisions`)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from quota.models.registry import spec_for
from quota.profiling.measure import ProfileSettings
from quota.profiling.precision_profile import PrecisionProfile, default_kv_bits
from quota.profiling.precision_run import parse_precisions, profile_precisions, uniform_config
from quota.profiling.sharding import rank_placement, world
from quota.quant.config import QuantConfig
from quota.testbed import model as testbed
from quota.testbed.batches import make_batches
from quota.testbed.quantized import quantize_testbed
from quota.testbed.splits import DATA_VERSION, calibration_split


def profile_testbed_precisions(
    precisions: str | Sequence[str], quant: QuantConfig | None = None, settings: ProfileSettings | None = None,
    output: str | Path | None = None, device: str | None = None, limit: int | None = None,
    kv_bits: Mapping[str, int] | None = None, additivity: int = 8,
) -> PrecisionProfile:
    """The testbed's precision profile over ``precisions`` (names, or ``"w4a4,w4a8,fp8,bf16"``): one quantized
    copy per option from the base config ``quant`` (default W4A4 GPTQ + rotation + KV4: its method, rotation and
    clipping; the bits come from each option), calibrated on the first ``limit`` calibration questions, measured
    on the same questions. One process only."""
    if world()[1] > 1:
        raise ValueError("quota profile --precisions runs in one process; run it without torchrun")
    names = parse_precisions(precisions)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"--limit must be a number of calibration questions >= 1, got {limit!r}")
    base = quant or QuantConfig(impl="auto")
    settings = settings or ProfileSettings()
    device, dtype = rank_placement(device)
    questions = calibration_split()[:limit] if limit else calibration_split()
    tb = testbed.load(device, dtype)
    n_layers = testbed_layers(tb.model)
    kv = {n: int((kv_bits or {}).get(n, default_kv_bits(n, base.kv_bits))) for n in names}
    models = {n: quantize_testbed(tb.model, tb.tokenizer, uniform_config(base, n, n_layers, kv[n]),
                                  calibration_limit=limit) for n in names}
    batches = make_batches(tb.tokenizer, questions, settings.batch_size, device, dtype)
    return profile_precisions(models, batches, base, names, model_id=testbed.MODEL_ID,
                              model_hash=testbed.model_hash(), data_version=DATA_VERSION, settings=settings,
                              kv_bits=kv, additivity=additivity, output=output)


def testbed_layers(model) -> int:
    """Decoder layers of the (loaded) testbed."""
    return len(spec_for(model).layers_of(model))
