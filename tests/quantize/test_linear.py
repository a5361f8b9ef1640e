import pytest
import torch
import torch.nn as nn

from quota.quant.hadamard import apply_block_hadamard
from quota.quantize.linear import QuantLinear
from quota.quant.quantizers import dequantize_symmetric, quantize_activation, quantize_weight_rtn


def test_full_precision_with_online_hadamard_equals_linear():
    lin = nn.Linear(96, 40, bias=True).double()
    w_rot = apply_block_hadamard(lin.weight.detach(), 32)  # W H
    mod = QuantLinear.from_quantized(w_rot, lin.bias.detach(), a_bits=16, hadamard_block=32, dtype=torch.float64)
    x = torch.randn(3, 5, 96, dtype=torch.float64)
    assert torch.allclose(mod(x), lin(x), atol=1e-10)


@pytest.mark.parametrize("bits", [4, 8])
def test_integer_path_equals_dequantized_matmul(bits):
    w = torch.randn(40, 96)
    x = torch.randn(17, 96)
    q = quantize_weight_rtn(w, bits)
    mod = QuantLinear.from_quantized(q, None, a_bits=bits, a_clip_ratio=0.9)
    expected_w = q.dequantize()
    codes, scale = quantize_activation(x, bits, 0.9)
    expected = dequantize_symmetric(codes, scale) @ expected_w.T
    out = mod(x)
    assert torch.allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert mod.weight.shape == ((40, 48) if bits == 4 else (40, 96)) and mod.weight.dtype == torch.int8
    assert torch.equal(mod.weight_codes(), q.codes)


def test_state_dict_round_trip():
    q = quantize_weight_rtn(torch.randn(8, 32), 4)
    a = QuantLinear.from_quantized(q, torch.randn(8), a_bits=4)
    b = QuantLinear(32, 8, 4, 4, bias=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 32)
    assert torch.equal(a(x), b(x))


def test_triton_path_refuses_unsupported_scheme():
    q = quantize_weight_rtn(torch.randn(8, 32), 4, group_size=16)
    mod = QuantLinear.from_quantized(q, None, a_bits=4, impl="triton")
    with pytest.raises(ValueError, match="reference"):
        mod(torch.randn(2, 32))
