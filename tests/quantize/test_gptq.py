import torch

from quota.quantize.gptq import HessianAccumulator, gptq_quantize
from quota.quant.quantizers import quantize_weight_rtn, search_weight_clip, signed_range


def correlated_inputs(n=4096, k=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(k, k, generator=g)
    return torch.randn(n, k, generator=g) @ basis * torch.rand(k, generator=g) * 2


def test_hessian_accumulates_running_mean():
    x = torch.randn(300, 16)
    acc = HessianAccumulator(16)
    for chunk in x.split(70):
        acc.add(chunk)
    assert torch.allclose(acc.hessian, 2 * x.double().T @ x.double() / 300, atol=1e-5)


def test_gptq_beats_rtn_on_output_error():
    x = correlated_inputs()
    w = torch.randn(48, 96)
    acc = HessianAccumulator(96)
    acc.add(x)
    out = x @ w.T
    rtn = quantize_weight_rtn(w, 4, clip=search_weight_clip(w, 4, None, acc.input_sq_norm()))
    for act_order in (False, True):
        q = gptq_quantize(w, acc.hessian, 4, act_order=act_order, block_size=32)
        assert q.codes.shape == (48, 96) and q.codes.dtype == torch.int8
        lo, hi = signed_range(4)
        assert int(q.codes.min()) >= lo and int(q.codes.max()) <= hi
        err_gptq = (x @ q.dequantize().T - out).pow(2).mean()
        err_rtn = (x @ rtn.dequantize().T - out).pow(2).mean()
        assert err_gptq < 0.8 * err_rtn, (act_order, float(err_gptq), float(err_rtn))


def test_gptq_groups_and_dead_columns():
    x = correlated_inputs(k=64)
    x[:, 5] = 0  # a dead input channel
    w = torch.randn(16, 64)
    acc = HessianAccumulator(64)
    acc.add(x)
    q = gptq_quantize(w, acc.hessian, 4, group_size=16)
    assert q.scale.shape == (16, 4)
    assert torch.all(q.codes[:, 5] == 0)
    assert torch.isfinite(q.dequantize()).all()


def test_gptq_is_deterministic():
    x = correlated_inputs(k=32)
    w = torch.randn(8, 32)
    acc = HessianAccumulator(32)
    acc.add(x)
    a = gptq_quantize(w, acc.hessian)
    b = gptq_quantize(w, acc.hessian)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.scale, b.scale)
