"""Quantized modules as records and tensors: rebuilt empty on the meta device and filled, they compute exactly what
the originals computed; malformed records are refused naming the field."""

import pytest
import torch
import torch.nn as nn

from quota.quant.quantizers import quantize_weight_rtn
from quota.quantize.attention import KVQuantizer
from quota.quantize.linear import QuantLinear
from quota.quantize.model import QuantReport
from quota.quantize.rotation import RotatedOutput
from quota.quantize.serialize import (
    SerializeError,
    TensorLayout,
    assign_tensors,
    build_module,
    kv_quantizer,
    kv_records,
    module_record,
    model_tensors,
    report_of,
    report_record,
)
from tests.tiny_models import tiny_llama


def _linear(w_bits=4, group=None, hadamard=None, bias=True, clip=0.85):
    torch.manual_seed(0)
    w = torch.randn(24, 64)  # [N, K]
    b = torch.randn(24) if bias else None
    weight = quantize_weight_rtn(w, w_bits, group) if w_bits != 16 else w
    return QuantLinear.from_quantized(weight, b, a_bits=4, a_clip_ratio=clip, hadamard_block=hadamard)


def _filled(record, module):
    """An empty module built from ``record`` on the meta device, then given ``module``'s tensors."""
    with torch.device("meta"):
        empty = build_module(record, None)
    tensors, layout = model_tensors(module)
    assign_tensors(empty, tensors, layout)
    return empty


@pytest.mark.parametrize("kwargs", [{}, {"group": 16}, {"hadamard": 64, "bias": False}, {"w_bits": 16}, {"w_bits": 8}],
                         ids=["w4", "w4-group16", "w4-hadamard", "w16", "w8"])
def test_a_rebuilt_quant_linear_computes_exactly_the_same(kwargs):
    module = _linear(**kwargs)
    record = module_record(module)
    assert record["kind"] == "QuantLinear" and record["a_clip_ratio"] == 0.85
    rebuilt = _filled(record, module)
    assert isinstance(rebuilt, QuantLinear) and not rebuilt.weight.is_meta
    x = torch.randn(3, 5, 64)  # [B, T, K]
    assert torch.equal(rebuilt(x), module(x))
    assert module_record(rebuilt) == record


def test_the_recorded_kernel_choice_can_be_replaced():
    record = module_record(_linear())
    with torch.device("meta"):
        assert build_module(record, None, impl="auto").impl == "auto"


def test_a_rotated_output_wraps_the_module_it_replaces():
    torch.manual_seed(0)
    inner = nn.Linear(8, 16)
    module = RotatedOutput(inner, torch.linalg.qr(torch.randn(16, 16))[0])
    record = module_record(module)
    assert record == {"kind": "RotatedOutput", "size": 16}
    with torch.device("meta"):
        empty = build_module(record, nn.Linear(8, 16))
    tensors, layout = model_tensors(module)
    assign_tensors(empty, tensors, layout)
    x = torch.randn(2, 8)
    assert torch.equal(empty(x), module(x))
    with pytest.raises(SerializeError, match="needs the module it wraps"):
        build_module(record, None)


@pytest.mark.parametrize("field,value,message", [
    ("a_clip_ratio", -1.0, "a_clip_ratio"), ("w_bits", "4", "w_bits"), ("bias", 1, "bias"), ("impl", "cuda", "impl"),
    ("dtype", "torch.int8", "dtype"), ("kind", "Linear", "kind"),
])
def test_a_malformed_linear_record_is_refused_naming_the_field(field, value, message):
    record = {**module_record(_linear()), field: value}
    with pytest.raises(SerializeError, match=message):
        build_module(record, None, where="lm_head")


def test_kv_quantizers_round_trip_and_malformed_ones_are_refused():
    model = tiny_llama()
    q = KVQuantizer(bits=4, group_size=16, clip_ratio=0.95, hadamard=True)
    model.model.layers[1].self_attn.quota_kv = q
    records = kv_records(model)
    assert records == {"model.layers.1.self_attn": {"bits": 4, "group_size": 16, "clip_ratio": 0.95, "hadamard": True}}
    assert kv_quantizer(records["model.layers.1.self_attn"]) == q
    with pytest.raises(SerializeError, match="clip_ratio"):
        kv_quantizer({"bits": 4, "group_size": 16, "clip_ratio": 2.0, "hadamard": True})
    with pytest.raises(SerializeError, match="fields"):
        kv_quantizer({"bits": 4})


def test_tied_weights_are_stored_once_and_tied_again():
    model = tiny_llama(tie=True)
    tensors, layout = model_tensors(model)
    assert layout.aliases == {"lm_head.weight": "model.embed_tokens.weight"}
    assert "lm_head.weight" not in tensors
    assert "model.rotary_emb.inv_freq" in layout.non_persistent and "model.rotary_emb.inv_freq" in tensors
    with torch.device("meta"):
        empty = type(model)(model.config)
    assign_tensors(empty, tensors, TensorLayout.from_dict(layout.to_dict()))
    assert empty.lm_head.weight is empty.model.embed_tokens.weight
    assert torch.equal(empty.model.rotary_emb.inv_freq, model.model.rotary_emb.inv_freq)
    ids = torch.randint(0, 128, (1, 7))
    with torch.no_grad():
        assert torch.equal(empty(ids).logits, model(ids).logits)


def test_tensors_that_do_not_fit_are_refused():
    model = tiny_llama()
    tensors, layout = model_tensors(model)
    del tensors["model.norm.weight"]
    with torch.device("meta"):
        empty = type(model)(model.config)
    with pytest.raises(SerializeError, match="missing.*model.norm.weight"):
        assign_tensors(empty, tensors, layout)


def test_reports_round_trip():
    model = nn.Linear(2, 2)
    assert report_record(model) is None
    model.quota_report = QuantReport(config={"w_bits": 4}, act_clip={"layers.0.mlp.down_proj": 0.8}, rotated=True)
    assert report_of(report_record(model)) == model.quota_report
    with pytest.raises(SerializeError, match="report"):
        report_of({"config": {}, "extra": 1})
