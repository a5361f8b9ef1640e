import pytest
import torch

from quota.quant.quantizers import (
    dequantize_asymmetric,
    dequantize_symmetric,
    fake_quantize_activation,
    quantize_activation,
    quantize_asymmetric,
    quantize_weight_rtn,
    search_weight_clip,
    signed_range,
)


def sqnr_db(x, y):
    return float(10 * torch.log10(x.pow(2).sum() / (x - y).pow(2).sum()))


@pytest.mark.parametrize("bits", [4, 8])
def test_activation_codes_range_and_scale(bits):
    x = torch.randn(17, 96) * torch.linspace(0.1, 5, 17).unsqueeze(1)
    codes, scale = quantize_activation(x, bits, clip_ratio=1.0)
    qmin, qmax = signed_range(bits)
    assert codes.dtype == torch.int8 and scale.shape == (17, 1)
    assert int(codes.min()) >= qmin and int(codes.max()) <= qmax
    # the absmax element of each token maps to +-qmax exactly
    assert torch.equal(codes.abs().amax(-1), torch.full((17,), qmax, dtype=torch.int8))
    assert torch.allclose(scale.squeeze(1), x.abs().amax(-1) / qmax)
    err = (dequantize_symmetric(codes, scale) - x).abs()
    assert torch.all(err <= scale / 2 + 1e-6)


def test_activation_sqnr_int4_vs_int8():
    x = torch.randn(64, 256)
    assert sqnr_db(x, fake_quantize_activation(x, 8)) > 35
    assert 12 < sqnr_db(x, fake_quantize_activation(x, 4)) < 25


def test_clipping_saturates_outliers():
    x = torch.tensor([[10.0, 1.0, -1.0, 0.5]])
    codes, scale = quantize_activation(x, 4, clip_ratio=0.5)
    assert codes[0, 0] == 7 and torch.isclose(scale, torch.tensor([[5.0 / 7]])).all()


def test_zero_rows_are_safe():
    codes, scale = quantize_activation(torch.zeros(3, 8), 4)
    assert torch.equal(codes, torch.zeros(3, 8, dtype=torch.int8)) and torch.equal(scale, torch.ones(3, 1))
    c, s, z = quantize_asymmetric(torch.zeros(2, 16), 4, 8)
    assert torch.equal(dequantize_asymmetric(c, s, z), torch.zeros(2, 16))


def test_rounding_is_half_to_even():
    codes, _ = quantize_activation(torch.tensor([[7.0, 2.5, 3.5, -2.5]]), 4)
    assert codes.tolist() == [[7, 2, 4, -2]]


@pytest.mark.parametrize("bits,group", [(4, 64), (4, 16), (8, 32)])
def test_kv_asymmetric_error_bound(bits, group):
    x = torch.randn(2, 3, 11, 64) * 3 + 1
    codes, scale, zero = quantize_asymmetric(x, bits, group)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 2**bits - 1
    assert scale.shape == (2, 3, 11, 64 // group)
    deq = dequantize_asymmetric(codes, scale, zero)
    bound = scale.repeat_interleave(group, -1) / 2 + 1e-5
    assert torch.all((deq - x).abs() <= bound)
    # min and max of every group are represented exactly (codes 0 and 2^b - 1)
    g = x.view(2, 3, 11, -1, group)
    assert torch.allclose(zero, g.amin(-1))


def test_kv_group_must_divide_head_dim():
    with pytest.raises(ValueError, match="does not divide"):
        quantize_asymmetric(torch.randn(1, 1, 2, 48), 4, 32)


def test_rtn_weight_per_channel_and_group():
    w = torch.randn(40, 96)
    q = quantize_weight_rtn(w, 4)
    assert q.scale.shape == (40, 1) and sqnr_db(w, q.dequantize()) > 12
    qg = quantize_weight_rtn(w, 4, group_size=32)
    assert qg.scale.shape == (40, 3)
    assert sqnr_db(w, qg.dequantize()) > sqnr_db(w, q.dequantize())


def test_clip_search_never_worse_than_no_clipping():
    torch.manual_seed(0)
    w = torch.randn(32, 128)
    w[:, 0] *= 8  # heavy outliers make clipping pay
    clip = search_weight_clip(w, 4)
    assert clip.shape == (32, 1) and bool((clip <= 1).all()) and bool((clip < 1).any())
    plain = (quantize_weight_rtn(w, 4).dequantize() - w).pow(2).sum(-1)
    clipped = (quantize_weight_rtn(w, 4, clip=clip).dequantize() - w).pow(2).sum(-1)
    assert torch.all(clipped <= plain + 1e-6)
