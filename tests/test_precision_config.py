"""The precision registry and QuantConfig's per-layer fields: names, validation with clear errors, version 2 with
version 1 still read, the disk-cache key following the per-layer fields."""

import pytest
import torch

from quota.quant.config import CONFIG_VERSION, QuantConfig, QuantConfigError
from quota.quantize.disk_cache import cache_key
from quota.quantize.precision import (
    PRECISIONS,
    PrecisionError,
    layer_config,
    precision,
    validate_layer_precision,
    weight_bytes,
)


def test_the_registry_names_each_option_with_its_kernel_and_bytes():
    assert set(PRECISIONS) == {"w4a4", "w4a8", "w4a8_int8", "fp8", "bf16"}
    assert [PRECISIONS[n].bytes_per_weight for n in ("w4a4", "w4a8", "fp8", "bf16")] == [0.5, 0.5, 1.0, 2.0]
    assert PRECISIONS["w4a8"].act_format == "fp8_e4m3" and PRECISIONS["w4a8"].needs_fp8
    assert PRECISIONS["w4a8_int8"].act_format == "int" and not PRECISIONS["w4a8_int8"].needs_fp8
    assert all(PRECISIONS[n].weight_int4 for n in ("w4a4", "w4a8", "w4a8_int8"))
    assert not PRECISIONS["fp8"].weight_int4 and not PRECISIONS["bf16"].quantized
    for p in PRECISIONS.values():  # every kernel named exists
        if p.kernel != "torch":
            module, _, fn = p.kernel.partition(":")
            assert callable(getattr(__import__(module, fromlist=[fn]), fn))
    assert weight_bytes(["w4a4", "bf16"], 100) == 250.0


def test_validation_names_the_bad_entry_and_the_length():
    assert validate_layer_precision(["w4a4", "fp8"], layers=2) == ("w4a4", "fp8")
    with pytest.raises(PrecisionError, match=r"layer 1: unknown precision 'w3a3'; known: w4a4, w4a8"):
        validate_layer_precision(["w4a4", "w3a3"])
    with pytest.raises(PrecisionError, match="3 precisions given for 2 decoder layers"):
        validate_layer_precision(["w4a4"] * 3, layers=2)
    with pytest.raises(PrecisionError, match="sequence of names"):
        validate_layer_precision("w4a4")
    with pytest.raises(PrecisionError, match="unknown precision"):
        precision("int4")


def test_config_fields_are_checked_and_name_the_field():
    c = QuantConfig(layer_precision=["bf16", "w4a8"], layer_kv_bits=[16, 4])
    assert c.layer_precision == ("bf16", "w4a8") and c.layer_kv_bits == (16, 4)
    assert c.precision_of_layer(1) == "w4a8" and c.kv_bits_of_layer(0) == 16 and c.is_mixed
    assert c.short_name() == "MIXED(bf16x1,w4a8x1)-KV4/16"
    with pytest.raises(QuantConfigError, match="layer_precision: layer 0: unknown precision 'w2'"):
        QuantConfig(layer_precision=("w2",))
    with pytest.raises(QuantConfigError, match=r"layer_kv_bits\[1\]=3 is not supported"):
        QuantConfig(layer_kv_bits=(4, 3))
    with pytest.raises(QuantConfigError, match="layer_kv_bits must not be empty"):
        QuantConfig(layer_kv_bits=())
    with pytest.raises(QuantConfigError, match="layer_precision has 2 entries but the model has 3 decoder layers"):
        c.check_layers(3)
    assert QuantConfig().precision_of_layer(0) is None and QuantConfig().kv_bits_of_layer(5) == 4


def test_identity_and_quantizes():
    all_bf16 = QuantConfig(layer_precision=("bf16", "bf16"), layer_kv_bits=(16, 16), rotate=False)
    assert all_bf16.is_identity and not all_bf16.quantizes_any() and not all_bf16.quantizes_kv
    assert not QuantConfig(layer_precision=("bf16", "fp8"), layer_kv_bits=(16, 16), rotate=False).is_identity
    assert QuantConfig(kv_bits=16, layer_kv_bits=(16, 8)).quantizes_kv
    outside = QuantConfig(layer_precision=("bf16",), layer_kv_bits=(16,), rotate=False, keep_full_precision=())
    assert not outside.is_identity  # lm_head and the rest under the uniform W4A4


def test_version_2_round_trips_and_version_1_still_loads():
    c = QuantConfig(layer_precision=("w4a4", "fp8"), layer_kv_bits=(4, 8))
    d = c.to_dict()
    assert d["version"] == CONFIG_VERSION == 2 and d["layer_precision"] == ["w4a4", "fp8"]
    assert QuantConfig.from_dict(d) == c
    old = {k: v for k, v in QuantConfig().to_dict().items() if k not in ("layer_precision", "layer_kv_bits")}
    old["version"] = 1
    assert QuantConfig.from_dict(old) == QuantConfig()
    with pytest.raises(QuantConfigError, match="unknown QuantConfig field"):
        QuantConfig.from_dict({**old, "layer_precision": ["w4a4"]})  # version 1 had no such field
    with pytest.raises(QuantConfigError, match="version 3"):
        QuantConfig.from_dict({**d, "version": 3})


def test_the_disk_cache_key_follows_the_per_layer_fields():
    base = QuantConfig()
    keys = {cache_key(c, torch.device("cpu"), torch.float32, {"m": 1}) for c in (
        base, base.replace(layer_precision=("w4a4", "w4a4")), base.replace(layer_precision=("w4a4", "fp8")),
        base.replace(layer_kv_bits=(4, 8)))}
    assert len(keys) == 4


def test_layer_config_sets_each_options_bits():
    base = QuantConfig(layer_precision=("w4a4",), w_group_size=32, weight_method="gptq")
    w4a4, w4a8, fp8, bf16 = (layer_config(base, n) for n in ("w4a4", "w4a8", "fp8", "bf16"))
    assert (w4a4.w_bits, w4a4.a_bits, w4a4.w_group_size, w4a4.weight_method) == (4, 4, 32, "gptq")
    assert (w4a8.w_bits, w4a8.a_bits, w4a8.w_group_size, w4a8.weight_method) == (4, 8, None, "gptq")
    assert (fp8.w_bits, fp8.a_bits, fp8.weight_method) == (8, 8, "rtn")
    assert (bf16.w_bits, bf16.a_bits) == (16, 16)
    assert all(c.layer_precision is None for c in (w4a4, w4a8, fp8, bf16))
