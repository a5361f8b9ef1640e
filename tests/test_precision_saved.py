"""A mixed-precision model (per-layer precision and KV bits) saves and loads back bit for bit: each layer's module
kind, KV bits and logits come back equal."""

import pytest
import torch

import quota
from quota.data.calibration import calibration_inputs
from quota.data.records import read_records
from quota.models.checkpoint import load_checkpoint
from quota.quant.config import QuantConfig
from quota.quantize.model import quantize_model
from quota.quantize.precision import layer_precisions
from quota.saved import Source, save
from tests.checkpoints import write_checkpoint
from tests.data.datasets import write_dataset

MIXES = {
    "fp8+w4a8": (("fp8", "w4a8"), (8, 4)),
    "w4a8_int8+bf16": (("w4a8_int8", "bf16"), (4, 16)),
    "bf16+w4a4": (("bf16", "w4a4"), (16, 8)),
}


@pytest.fixture(scope="module")
def source_and_batches(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision_saved")
    source = load_checkpoint(write_checkpoint("llava", root / "llava"))
    batches = calibration_inputs(source.processor, read_records(write_dataset(root / "data"))[:3], batch_size=3)
    return source, batches


@pytest.mark.parametrize("mix", MIXES, ids=list(MIXES))
def test_a_mixed_precision_checkpoint_loads_back_bit_for_bit(source_and_batches, tmp_path, mix, one_thread):
    source, batches = source_and_batches
    precisions, kv_bits = MIXES[mix]
    config = QuantConfig(layer_precision=precisions, layer_kv_bits=kv_bits, weight_method="rtn")
    quantized = quantize_model(source.model, config, batches, progress=False)
    assert layer_precisions(quantized) == list(precisions)
    out = save(quantized, tmp_path / "q", Source.of_checkpoint(source), files_from=source.folder)
    loaded = quota.load(out, "cpu", processor=False)
    assert loaded.quant_config == config
    assert layer_precisions(loaded.model) == list(precisions)
    layers = loaded.model.model.language_model.layers
    assert [layer.self_attn.quota_kv.bits for layer in layers] == list(kv_bits)
    with torch.no_grad():
        assert torch.equal(loaded.model(**batches[0]).logits, quantized(**batches[0]).logits)
