"""quantize_model with a per-layer precision list: each layer's linears are of its option's kind, 4-bit layers get
GPTQ, bf16 layers are left untouched, per-layer KV bits are installed, the disk cache returns the same model; each
option's module matches its kernel path (under the interpreter on the CPU) and the full-precision linear."""

import pytest
import torch
import torch.nn as nn

from quota.quant.config import QuantConfig, QuantConfigError
from quota.quant.quantizers import quantize_weight_rtn
from quota.quantize.disk_cache import quantize_cached
from quota.quantize.linear import QuantLinear
from quota.quantize.linear_fp8 import Fp8Linear
from quota.quantize.linear_w4a8 import W4A8Linear
from quota.quantize.model import needs_calibration, quantize_model
from quota.quantize.precision import build_linear, layer_precisions, precision_of_module
from tests.tiny_models import tiny_llama

MIX = ("bf16", "fp8", "w4a8", "w4a4", "w4a8_int8")
KV = (16, 8, 4, 4, 8)
RTN = dict(weight_method="rtn", w_clip_search=False, a_clip_search=False)


def _batches(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 128, (2, 24), generator=g) for _ in range(n)]


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def model():
    return tiny_llama(layers=len(MIX))


def test_each_layer_gets_its_options_modules_and_kv_bits(model, one_thread):
    q = quantize_model(model, QuantConfig(layer_precision=MIX, layer_kv_bits=KV, rotate=False, **RTN))
    assert layer_precisions(q) == list(MIX)
    kinds = [type(q.model.layers[i].mlp.down_proj) for i in range(len(MIX))]
    assert kinds == [nn.Linear, Fp8Linear, W4A8Linear, QuantLinear, W4A8Linear]
    assert [layer.self_attn.quota_kv.bits for layer in q.model.layers] == list(KV)
    bf16_layer, source = q.model.layers[0], model.model.layers[0]
    for name, p in source.named_parameters():  # untouched (no rotation): the very same weights
        assert torch.equal(dict(bf16_layer.named_parameters())[name], p)
    ids = _batches(1, 5)[0]
    ref = _logits(model, ids)
    assert (_logits(q, ids) - ref).norm() / ref.norm() < 0.5


def test_an_all_bf16_config_leaves_the_logits_bit_identical(model):
    config = QuantConfig(layer_precision=("bf16",) * len(MIX), layer_kv_bits=(16,) * len(MIX), rotate=False)
    assert config.is_identity
    ids = _batches(1, 3)[0]
    assert torch.equal(_logits(quantize_model(model, config), ids), _logits(model, ids))


def test_rotation_is_global_and_bf16_layers_stay_exact_in_float32(model, one_thread):
    config = QuantConfig(layer_precision=("bf16",) * len(MIX), layer_kv_bits=(16,) * len(MIX), rotate=True, **RTN)
    q = quantize_model(model, config)
    assert q.quota_report.rotated and layer_precisions(q) == ["bf16"] * len(MIX)
    ids = _batches(1, 4)[0]
    ref = _logits(model, ids)
    assert torch.allclose(_logits(q, ids), ref, atol=1e-4, rtol=1e-4)  # a rotation is exact up to rounding


def test_gptq_quantizes_the_4bit_layers(model, one_thread):
    mix = ("w4a8", "fp8", "bf16", "bf16", "bf16")
    base = QuantConfig(layer_precision=mix, rotate=False, w_clip_search=False, a_clip_search=False)
    assert needs_calibration(base) and not needs_calibration(base.replace(layer_precision=("bf16",) * 5))
    gptq = quantize_model(model, base, _batches())
    rtn = quantize_model(model, base.replace(weight_method="rtn"), _batches())
    assert not torch.equal(gptq.model.layers[0].mlp.up_proj.weight, rtn.model.layers[0].mlp.up_proj.weight)
    assert torch.equal(gptq.model.layers[1].mlp.up_proj.weight.view(torch.uint8),
                       rtn.model.layers[1].mlp.up_proj.weight.view(torch.uint8))  # FP8: rounded, no GPTQ


def test_a_list_of_the_wrong_length_is_refused(model):
    with pytest.raises(QuantConfigError, match="layer_precision has 2 entries but the model has 5"):
        quantize_model(model, QuantConfig(layer_precision=("w4a4", "fp8")))
    with pytest.raises(QuantConfigError, match="layer_kv_bits has 1 entries"):
        quantize_model(model, QuantConfig(layer_kv_bits=(4,)))


def test_the_disk_cache_gives_back_the_same_mixed_model(model, tmp_path, one_thread):
    config = QuantConfig(layer_precision=MIX, layer_kv_bits=KV, weight_method="rtn")  # clip searches: calibrated
    first = quantize_cached(model, config, _batches, {"test": "mixed"}, folder=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    again = quantize_cached(model, config, lambda: pytest.fail("recomputed"), {"test": "mixed"}, folder=tmp_path)
    assert layer_precisions(again) == list(MIX)
    ids = _batches(1, 9)[0]
    assert torch.equal(_logits(again, ids), _logits(first, ids))


# ------------------------------------------------------------------------------------------------ modules

M, K, N = 37, 128, 72  # K = 96 + 32, N not a power of two


def _module(name, hadamard_block, impl, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn((N, K), generator=g) * 0.05
    b = torch.randn((N,), generator=g) * 0.1 if bias else None
    weight = w if name == "fp8" else quantize_weight_rtn(w, 4)
    return build_linear(name, weight, b, 0.9, hadamard_block, impl, torch.float32), w, b


@pytest.mark.parametrize("name", ["w4a8", "w4a8_int8", "fp8"])
@pytest.mark.parametrize("hadamard_block", [None, 64])
def test_each_options_kernel_path_matches_its_reference(name, hadamard_block):
    ref_mod, _, _ = _module(name, hadamard_block, "reference")
    ker_mod, _, _ = _module(name, hadamard_block, "triton")
    assert precision_of_module(ref_mod) == name
    x = torch.randn((M, K), generator=torch.Generator().manual_seed(1))
    ref, out = ref_mod(x), ker_mod(x)
    # the kernels sum in another order (and the int8 path's fused Hadamard may round a tie the other way)
    assert ((out - ref).norm() / ref.norm()).item() < (2e-3 if name == "w4a8_int8" and hadamard_block else 1e-5)


@pytest.mark.parametrize("name,bound", [("fp8", 0.06), ("w4a8", 0.15), ("w4a8_int8", 0.15), ("w4a4", 0.3)])
def test_each_options_reference_is_close_to_the_float_linear(name, bound):
    module, w, b = _module(name, None, "reference", seed=2)
    x = torch.randn((M, K), generator=torch.Generator().manual_seed(3))
    full = x @ w.T + b
    assert ((module(x) - full).norm() / full.norm()).item() < bound
