"""kv_cache_write against kv_cache_write_reference: bit-exact codes, scales and zeros in place."""

import pytest
import torch

from quota.kernels.kv_write import allocate_kv_cache, kv_cache_write, kv_cache_write_reference
from quota.quant.hadamard import apply_block_hadamard
from quota.quant.int4 import unpack_uint4
from tests.kernels.kernel_checks import DEVICE, assert_codes_equal_or_tie, gpu, poison_like, requires_cuda


def _poisoned_cache(b, h, s, d, bits, gs):
    return [poison_like(t) for t in allocate_kv_cache(b, h, s, d, bits, gs, DEVICE)]


def _x(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 2 + torch.randn(shape[-1], generator=g)).to(dtype)


def _write_both(x, s_cap, start, bits, gs, clip=1.0, hadamard=False):
    b, h, _, d = x.shape
    cache = _poisoned_cache(b, h, s_cap, d, bits, gs)
    ref = [t.cpu() for t in cache]
    kv_cache_write(x.to(DEVICE), *cache, start, bits, gs, clip, hadamard)
    kv_cache_write_reference(x, *ref, start, bits, gs, clip, hadamard)
    return [t.cpu() for t in cache], ref


def _equal_with_nan(a, b):
    return torch.equal(a.nan_to_num(123.0), b.nan_to_num(123.0)) and torch.equal(a.isnan(), b.isnan())


@pytest.mark.parametrize(
    "b,h,t,d,s_cap,start,bits,gs,clip,dtype",
    [(1, 1, 1, 64, 8, 7, 4, 64, 1.0, torch.bfloat16), (2, 3, 5, 64, 16, 3, 4, 32, 1.0, torch.float16),
     (1, 2, 17, 96, 40, 20, 4, 32, 0.9, torch.float32), (2, 1, 7, 128, 9, 2, 8, 64, 1.0, torch.bfloat16),
     (3, 2, 33, 64, 33, 0, 8, 16, 0.95, torch.float32), (1, 4, 3, 96, 5, 1, 4, 32, 1.0, torch.bfloat16),
     (2, 2, 9, 16, 12, 1, 4, 16, 1.0, torch.float32)],  # the runtime tests' tiny Llama: head_dim 16
)  # fmt: skip
def test_write_is_bit_exact_and_in_place(b, h, t, d, s_cap, start, bits, gs, clip, dtype):
    x = _x((b, h, t, d), dtype, seed=t * 10 + d)
    got, ref = _write_both(x, s_cap, start, bits, gs, clip)
    for a, r in zip(got, ref):
        assert _equal_with_nan(a, r)  # written slots equal, untouched slots still poisoned
    assert not got[1][:, :, start : start + t].isnan().any()
    if start > 0:
        assert got[1][:, :, :start].isnan().all()


def test_append_after_prefill_and_roundtrip_error():
    b, h, d, gs = 2, 2, 64, 32
    x = _x((b, h, 12, d), torch.bfloat16, seed=1)
    cache = allocate_kv_cache(b, h, 16, d, 4, gs, DEVICE)
    ref = [t.cpu().clone() for t in cache]
    kv_cache_write(x[:, :, :11].to(DEVICE), *cache, 0, 4, gs)  # prefill
    kv_cache_write(x[:, :, 11:].to(DEVICE), *cache, 11, 4, gs)  # one decode step
    kv_cache_write_reference(x, *ref, 0, 4, gs)
    assert all(torch.equal(a.cpu(), r) for a, r in zip(cache, ref))
    codes, scale, zero = (t.cpu()[:, :, :12] for t in cache)
    deq = (unpack_uint4(codes).float().view(b, h, 12, d // gs, gs) * scale[..., None] + zero[..., None]).view(x.shape)
    assert (deq - x.float()).abs().max() <= (scale.max() / 2) * 1.001  # within half a step


@pytest.mark.parametrize("hadamard", [False, True])
def test_start_read_from_device_memory(hadamard):
    """A tensor start writes where its value points, as the int start does; rows past the capacity are dropped."""
    b, h, d, gs, s_cap = 2, 3, 64, 32, 10
    x = _x((b, h, 3, d), torch.bfloat16, seed=5)
    for start in (0, 4, 8):  # 8: the last of the three rows falls past the capacity
        got = _poisoned_cache(b, h, s_cap, d, 4, gs)
        ref = [t.cpu() for t in _poisoned_cache(b, h, s_cap, d, 4, gs)]
        start_t = torch.tensor([start], dtype=torch.int32, device=DEVICE)
        kv_cache_write(x.to(DEVICE), *got, start_t, 4, gs, 1.0, hadamard)
        fit = min(3, s_cap - start)
        kv_cache_write_reference(x[:, :, :fit], *ref, start, 4, gs, 1.0, hadamard)
        for a, r in zip(got, ref):
            assert _equal_with_nan(a.cpu(), r)
    with pytest.raises(ValueError, match="int32"):
        kv_cache_write(x.to(DEVICE), *got, torch.tensor([1], device=DEVICE), 4, gs)


@pytest.mark.parametrize("d,bits,dtype", [(64, 4, torch.bfloat16), (128, 4, torch.float32), (64, 8, torch.float16)])
def test_hadamard_keys(d, bits, dtype):
    x = _x((2, 2, 9, d), dtype, seed=d + bits)
    got, ref = _write_both(x, 12, 2, bits, 32, 1.0, hadamard=True)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(got[2], ref[2], rtol=1e-5, atol=1e-6, equal_nan=True)
    sl = slice(2, 11)
    y = apply_block_hadamard(x.double(), d).view(2, 2, 9, d // 32, 32)
    exact = ((y - ref[2][:, :, sl, :, None].double()) / ref[1][:, :, sl, :, None].double()).view(x.shape)
    unpack = unpack_uint4 if bits == 4 else (lambda c: c)
    assert_codes_equal_or_tie(unpack(got[0][:, :, sl]), unpack(ref[0][:, :, sl]), exact)


def test_invalid_arguments():
    cache = allocate_kv_cache(1, 2, 8, 64, 4, 32, DEVICE)
    x = torch.zeros(1, 2, 3, 64, device=DEVICE)
    with pytest.raises(ValueError, match="capacity"):
        kv_cache_write(x, *cache, 6, 4, 32)
    with pytest.raises(ValueError, match="group_size"):
        kv_cache_write(x, *cache, 0, 4, 48)
    with pytest.raises(ValueError, match="codes last dim"):
        kv_cache_write(x, *cache, 0, 8, 32)
    with pytest.raises(ValueError, match="H_kv"):
        kv_cache_write(torch.zeros(1, 3, 3, 64, device=DEVICE), *cache, 0, 4, 32)


@gpu
@requires_cuda
@pytest.mark.parametrize("t,bits,hadamard", [(1, 4, False), (577, 4, False), (300, 8, False), (577, 4, True)])
def test_gpu_large(t, bits, hadamard):
    x = _x((4, 8, t, 128), torch.bfloat16, seed=t)
    got, ref = _write_both(x, 1024, 100, bits, 64, 1.0, hadamard)
    if not hadamard:
        assert all(_equal_with_nan(a, r) for a, r in zip(got, ref))
    else:
        torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-6, equal_nan=True)
