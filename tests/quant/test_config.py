import json

import pytest

from quota.quant.config import BF16, CONFIG_VERSION, QuantConfig, QuantConfigError


def test_round_trip_through_json():
    c = QuantConfig(w_bits=4, a_bits=8, kv_bits=8, w_group_size=128, weight_method="rtn", keep_full_precision=("lm_head",))
    assert QuantConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_serialized_form_is_typed_and_versioned():
    d = QuantConfig().to_dict()
    assert d["type"] == "quota.QuantConfig" and d["version"] == CONFIG_VERSION


def test_unknown_version_is_refused():
    d = QuantConfig().to_dict()
    d["version"] = CONFIG_VERSION + 1
    with pytest.raises(QuantConfigError, match="version"):
        QuantConfig.from_dict(d)


def test_unknown_field_is_refused_by_name():
    d = QuantConfig().to_dict()
    d["w_bitz"] = 4
    with pytest.raises(QuantConfigError, match="w_bitz"):
        QuantConfig.from_dict(d)


@pytest.mark.parametrize(
    "field,value",
    [("w_bits", 1), ("w_bits", 9), ("a_bits", 3), ("kv_bits", 2), ("kv_bits", True), ("a_clip_ratio", 0.0),
     ("a_clip_ratio", 1.5), ("kv_group_size", 0), ("weight_method", "awq"), ("impl", "cuda"), ("w_group_size", 1)],
)
def test_impossible_values_name_the_field(field, value):
    with pytest.raises(QuantConfigError, match=field):
        QuantConfig(**{field: value})


def test_unknown_role_kept_in_full_precision():
    with pytest.raises(QuantConfigError, match="keep_full_precision"):
        QuantConfig(keep_full_precision=("visual_encoder",))


def test_identity_and_names():
    assert BF16.is_identity and not QuantConfig().is_identity
    assert QuantConfig().short_name() == "W4A4-KV4"
    assert QuantConfig(w_bits=8, a_bits=8, kv_bits=16).short_name() == "W8A8"
