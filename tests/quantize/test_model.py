import pytest
import torch
import torch.nn as nn

from quota.models.registry import UnsupportedModelError
from quota.quantize.calibration import CalibrationDataError
from quota.quant.config import BF16, QuantConfig
from quota.quantize.linear import QuantLinear
from quota.quantize.model import quantize_model
from tests.tiny_models import tiny_llama, tiny_qwen2

CALIB = [torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(i)) for i in range(2)]
IDS = torch.randint(0, 128, (2, 17), generator=torch.Generator().manual_seed(9))


@torch.no_grad()
def rel_err(a, b):
    return float((a - b).norm() / b.norm())  # noqa


def test_identity_config_leaves_logits_identical():
    model = tiny_llama()
    ref = model(IDS).logits
    assert torch.equal(quantize_model(model, BF16)(IDS).logits, ref)


def test_rotation_only_config_is_exact_in_full_precision():
    model = tiny_llama(dtype=torch.float64)
    cfg = QuantConfig(w_bits=16, a_bits=16, kv_bits=16, rotate=True)
    assert rel_err(quantize_model(model, cfg)(IDS).logits, model(IDS).logits) < 1e-6


@pytest.mark.parametrize("make", [tiny_llama, tiny_qwen2])
def test_w4a4_replaces_linears_and_never_mutates_the_original(make):
    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = model(IDS).logits
    q = quantize_model(model, QuantConfig(kv_group_size=16), CALIB)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    layer = q.model.layers[0]
    for lin in (layer.self_attn.q_proj, layer.self_attn.o_proj, layer.mlp.down_proj):
        assert isinstance(lin, QuantLinear) and lin.w_bits == 4 and lin.a_bits == 4
    assert layer.mlp.down_proj.hadamard_block == 64 or layer.mlp.down_proj.hadamard_block == 32
    assert layer.self_attn.quota_kv.bits == 4
    assert isinstance(q.lm_head, nn.Linear) and not isinstance(q.lm_head, QuantLinear)
    out = q(IDS).logits
    assert torch.isfinite(out).all() and 0 < rel_err(out, ref) < 0.6


def test_more_bits_means_closer_outputs():
    model = tiny_llama()
    ref = model(IDS).logits
    errs = [
        rel_err(quantize_model(model, QuantConfig(w_bits=b, a_bits=b, kv_bits=b, kv_group_size=16), CALIB)(IDS).logits, ref)
        for b in (8, 4)
    ]
    assert errs[0] < errs[1] / 5


def test_kv_quantization_changes_attention_and_generation_runs():
    model = tiny_llama()
    no_kv = quantize_model(model, QuantConfig(kv_bits=16, a_bits=16, w_bits=16, rotate=False))
    kv = quantize_model(model, QuantConfig(kv_bits=4, a_bits=16, w_bits=16, rotate=False, kv_group_size=16,
                                           kv_hadamard=False))
    assert torch.allclose(no_kv(IDS).logits, model(IDS).logits, atol=1e-5)
    assert not torch.allclose(kv(IDS).logits, model(IDS).logits, atol=1e-4)
    out = kv.generate(IDS[:1], max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 22)


def test_kv_hadamard_is_exact_without_quantization_error_at_8_bits():
    model = tiny_llama()
    cfg = dict(a_bits=16, w_bits=16, rotate=False, kv_group_size=16, kv_bits=8)
    plain = quantize_model(model, QuantConfig(kv_hadamard=False, **cfg))(IDS).logits
    had = quantize_model(model, QuantConfig(kv_hadamard=True, **cfg))(IDS).logits
    ref = model(IDS).logits
    assert rel_err(had, ref) < 0.02 and rel_err(plain, ref) < 0.02


def test_keep_full_precision_lm_head_can_be_quantized():
    model = tiny_llama()
    cfg = QuantConfig(keep_full_precision=("embeddings",), kv_group_size=16, weight_method="rtn")
    q = quantize_model(model, cfg, CALIB)
    assert isinstance(q.lm_head, QuantLinear)


def test_unsupported_model_lists_supported_ones():
    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM"):
        quantize_model(nn.Sequential(nn.Linear(4, 4)), QuantConfig())


@pytest.mark.parametrize(
    "batches,match",
    [
        (None, "needs calibration"),
        ([], "empty"),
        ([torch.randint(0, 128, (32,))], r"\[B, S\]"),
        ([torch.randn(2, 8)], "integer"),
        ([torch.full((1, 8), 500)], "outside"),
        (["text"], "LongTensor"),
    ],
)
def test_bad_calibration_data_is_named(batches, match):
    with pytest.raises(CalibrationDataError, match=match):
        quantize_model(tiny_llama(), QuantConfig(), batches)


def test_bad_kv_group_is_reported():
    with pytest.raises(ValueError, match="kv_group_size"):
        quantize_model(tiny_llama(), QuantConfig(kv_group_size=12, weight_method="rtn"), CALIB)
