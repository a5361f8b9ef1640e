"""w4_gemv / w4_gemv_codes (decode GEMV, split-K, input quantized in the kernel) against w4_gemv_reference."""

import pytest
import torch

from quota.kernels.act_quant import quantize_activation_reference
from quota.kernels.w4_gemv import _config, row_scales, w4_gemv, w4_gemv_codes, w4_gemv_reference
from quota.kernels.w4a4_gemm import splitk_workspace
from quota.quant.int4 import pack_int4
from quota.quant.quantizers import quantize_activation
from tests.kernels.kernel_checks import DEVICE, gpu, poison_like, requires_cuda


def _case(m, k, n, seed, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(m, k, generator=g) * 2).to(dtype)
    w = pack_int4(torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8))
    w_s = torch.rand(n, generator=g) * 0.02 + 1e-3
    bias = torch.randn(n, generator=g)
    return x, w, w_s, bias


def _on(*tensors):
    return [t.to(DEVICE) if t is not None else None for t in tensors]


SPLITS = [_config(32, 32, 1, stages=1), _config(32, 32, 3, stages=1), _config(64, 16, 2, stages=1)]


@pytest.mark.parametrize("m,k,n", [(1, 96, 40), (3, 352, 72), (16, 160, 33)])
@pytest.mark.parametrize("cfg", SPLITS, ids=["split1", "split3", "split2"])
def test_quant_in_equals_reference_bit_for_bit(m, k, n, cfg):
    x, w, w_s, bias = _case(m, k, n, seed=m * 7 + k + n, dtype=(torch.bfloat16, torch.float16, torch.float32)[m % 3])
    with_bias = bias if n % 2 else None
    # float32 out: the interpreter's cast to bfloat16 truncates (the GPU test checks bfloat16 too)
    out = poison_like(torch.empty((m, n), dtype=torch.float32, device=DEVICE))
    w4_gemv(*_on(x, w, w_s, with_bias), clip_ratio=0.9, out_dtype=torch.float32, out=out, config=cfg)
    assert torch.equal(out.cpu(), w4_gemv_reference(x, w, w_s, with_bias, clip_ratio=0.9, out_dtype=torch.float32))
    ws, locks = splitk_workspace(torch.device(DEVICE), 0, 0)
    assert not ws.any() and not locks.any()  # split-K leaves its buffers zeroed


@pytest.mark.parametrize("cfg", SPLITS[:2], ids=["split1", "split3"])
def test_codes_form_with_a_hadamard_equals_reference(cfg):
    m, k, n, block = 5, 256, 48, 64
    x, w, w_s, bias = _case(m, k, n, seed=4)
    codes, scale = quantize_activation_reference(x, 4, 1.0, block)  # what act_quant hands over
    out = w4_gemv_codes(*_on(codes, scale, w, w_s, bias), out_dtype=torch.float32, config=cfg)
    assert torch.equal(out.cpu(), w4_gemv_reference(x, w, w_s, bias, 1.0, block, out_dtype=torch.float32))


def test_row_scales_and_rounding_ties():
    x = torch.tensor([[3.5, 0.25, 0.75, -0.25, -0.75, 1.25, -1.25, 0.0] * 4, [0.0] * 32], dtype=torch.float32)
    scale = row_scales(x.to(DEVICE)).cpu()
    assert torch.equal(scale, quantize_activation(x, 4)[1].reshape(-1))  # 0.5 and 1 (a zero row)
    w = pack_int4(torch.eye(32, dtype=torch.int8)[:8])  # output j reads element j: the code itself
    out = w4_gemv(*_on(x, w, torch.ones(8)), out_dtype=torch.float32, config=SPLITS[0]).cpu()
    assert out[0].tolist() == [3.5, 0.0, 1.0, 0.0, -1.0, 1.0, -1.0, 0.0]  # half to even, times the scale 0.5
    assert not out[1].any()


def test_invalid_arguments():
    x, w, w_s, _ = _on(*_case(17, 96, 40, seed=1)[:3], None)
    with pytest.raises(ValueError, match="1 to 16 rows"):
        w4_gemv(x, w, w_s)
    with pytest.raises(ValueError, match="K=96"):
        w4_gemv(x[:2, :64], w, w_s)
    with pytest.raises(ValueError, match="w_scale"):
        w4_gemv(x[:2], w, w_s[:3])
    with pytest.raises(ValueError, match="codes"):
        w4_gemv_codes(x[:2], torch.ones(2, 1, device=DEVICE), w, w_s)


@gpu
@requires_cuda
@pytest.mark.parametrize("m", [1, 16])
@pytest.mark.parametrize("k,n", [(4096, 11008), (11008, 4096), (4096, 12288)])
def test_gpu_decode_shapes_autotuned_and_every_config(m, k, n):
    from quota.kernels.w4_gemv import _CONFIGS

    x, w, w_s, bias = _case(m, k, n, seed=m + k)
    ref = w4_gemv_reference(x, w, w_s, bias, 0.9)
    assert torch.equal(w4_gemv(*_on(x, w, w_s, bias), clip_ratio=0.9).cpu(), ref)
    codes, scale = quantize_activation_reference(x, 4, 0.9)
    for cfg in _CONFIGS:
        assert torch.equal(w4_gemv(*_on(x, w, w_s, bias), clip_ratio=0.9, config=cfg).cpu(), ref), str(cfg)
        assert torch.equal(w4_gemv_codes(*_on(codes, scale, w, w_s, bias), config=cfg).cpu(), ref), str(cfg)
