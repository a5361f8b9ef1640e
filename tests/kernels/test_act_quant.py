"""quantize_activation_triton against quantize_activation_reference."""

import pytest
import torch
from tests.kernels.kernel_checks import DEVICE, assert_codes_equal_or_tie, gpu, poison_like, requires_cuda

from quota.kernels.act_quant import quantize_activation_reference, quantize_activation_triton
from quota.quant.hadamard import apply_block_hadamard
from quota.quant.int4 import unpack_int4

DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _x(shape, dtype, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def _run(x, bits, clip, block):
    """Kernel on DEVICE into poisoned buffers; the reference on the CPU (float32 true division)."""
    m, k = x.reshape(-1, x.shape[-1]).shape
    codes = poison_like(torch.empty((m, k // 2 if bits == 4 else k), dtype=torch.int8, device=DEVICE))
    scale = poison_like(torch.empty((m, 1), dtype=torch.float32, device=DEVICE))
    got = quantize_activation_triton(x.to(DEVICE), bits, clip, block, out=(codes, scale))
    ref = quantize_activation_reference(x, bits, clip, block)
    return [t.cpu() for t in got], ref


@pytest.mark.parametrize("m", [1, 3, 17, 64])
@pytest.mark.parametrize("k", [96, 160])
@pytest.mark.parametrize("bits", [4, 8])
def test_plain_is_bit_exact(m, k, bits):
    dtype = DTYPES[(m + k + bits) % 3]
    x = _x((m, k), dtype, seed=m * 1000 + k + bits)
    (codes, scale), (ref_codes, ref_scale) = _run(x, bits, 0.9 if m % 2 else 1.0, None)
    assert torch.equal(codes, ref_codes)
    assert torch.equal(scale, ref_scale)


def test_leading_dims_outliers_and_zero_rows():
    x = _x((2, 3, 160), torch.bfloat16, seed=5)
    x[0, 1] = 0.0  # an all-zero token: scale 1, codes 0
    x[1, 2, 7] = 25000.0  # a massive activation
    (codes, scale), (ref_codes, ref_scale) = _run(x, 4, 1.0, None)
    assert codes.shape == (2, 3, 80) and scale.shape == (2, 3, 1)
    assert torch.equal(codes, ref_codes) and torch.equal(scale, ref_scale)
    assert scale[0, 1, 0].item() == 1.0 and not unpack_int4(codes[0, 1]).any()
    assert unpack_int4(codes[1, 2])[7].item() == 7


def test_rounding_is_half_to_even():
    # x / scale hits exact half-integers: with absmax 7 * 0.5 the scale is 0.5, so 0.25 -> 0.5 -> 0, 0.75 -> 2
    row = torch.tensor([3.5, 0.25, 0.75, -0.25, -0.75, 1.25, -1.25, 0.0] * 4, dtype=torch.float32)[None]
    (codes, scale), (ref_codes, _) = _run(row, 4, 1.0, None)
    assert scale.item() == 0.5
    assert unpack_int4(codes)[0, :8].tolist() == [7, 0, 2, 0, -2, 2, -2, 0]
    assert torch.equal(codes, ref_codes)


def _check_hadamard(x, bits, clip, block):
    (codes, scale), (ref_codes, ref_scale) = _run(x, bits, clip, block)
    torch.testing.assert_close(scale, ref_scale, rtol=1e-5, atol=0)
    exact = apply_block_hadamard(x.double(), block) / ref_scale.double()
    unpack = unpack_int4 if bits == 4 else (lambda c: c)
    assert_codes_equal_or_tie(unpack(codes), unpack(ref_codes), exact)


@pytest.mark.parametrize(
    "m,k,block,dtype",
    [(1, 96, 32, torch.bfloat16), (3, 160, 32, torch.float16), (17, 1536, 512, torch.float32),
     (64, 384, 128, torch.bfloat16), (5, 40, 8, torch.float32), (3, 4096, 4096, torch.bfloat16)],
)  # fmt: skip
def test_hadamard_matches_reference(m, k, block, dtype):
    _check_hadamard(_x((m, k), dtype, seed=k + block), 4, 0.9, block)


def test_hadamard_int8_and_long_rows():
    _check_hadamard(_x((3, 5120), torch.bfloat16, seed=11), 8, 1.0, 256)  # 20 blocks: two passes over the row


@pytest.mark.parametrize("bits", [4, 8])
def test_plain_long_rows_are_bit_exact(bits):
    x = _x((5, 4352), torch.float16, seed=bits)  # 17 tiles of 256: two passes over each row
    x[2, 4351] = -300.0  # the absmax sits in the last, partly masked tile
    (codes, scale), (ref_codes, ref_scale) = _run(x, bits, 1.0, None)
    assert torch.equal(codes, ref_codes) and torch.equal(scale, ref_scale)


def test_hadamard_spreads_an_outlier():
    x = _x((1, 256), torch.float32, seed=3, scale=0.01)
    x[0, 5] = 100.0
    (codes, _), _ = _run(x, 4, 1.0, 256)
    assert (unpack_int4(codes).abs() >= 6).all()  # every channel now carries the outlier's share


@pytest.mark.parametrize(
    "kwargs,match",
    [({"bits": 4, "hadamard_block": 48}, "power of two"), ({"bits": 3}, "bits"), ({"clip_ratio": 0.0}, "clip")],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        quantize_activation_triton(torch.zeros(2, 96, device=DEVICE), **kwargs)
    with pytest.raises(ValueError, match="even"):
        quantize_activation_triton(torch.zeros(2, 95, device=DEVICE))
    with pytest.raises(ValueError, match="dtype|bfloat16"):
        quantize_activation_triton(torch.zeros(2, 96, dtype=torch.float64, device=DEVICE))


@gpu
@requires_cuda
@pytest.mark.parametrize("m,k,block", [(1, 4096, None), (300, 11008, None), (1024, 18944, None),
                                       (257, 11008, 256), (64, 18944, 512), (128, 4096, 4096)])  # fmt: skip
def test_gpu_large(m, k, block):
    x = _x((m, k), torch.bfloat16, seed=m + k)
    if block is None:
        (codes, scale), (ref_codes, ref_scale) = _run(x, 4, 0.9, None)
        assert torch.equal(codes, ref_codes) and torch.equal(scale, ref_scale)
    else:
        _check_hadamard(x, 4, 0.9, block)


@pytest.mark.parametrize("k,block", [(4096, None), (11008, None), (18944, 512), (4096, 4096), (96, None)])
def test_autotune_candidates_hold_a_7b_row_in_few_passes(k, block):
    """The GPU's candidates for a row: at least one holds the whole row (one read), none is absurdly large."""
    from quota.kernels.act_quant import _ACT_CONFIGS, _plan, act_candidates

    cands = act_candidates(_ACT_CONFIGS, k, block)
    assert cands
    assert any(_plan(k, block, c.kwargs["TILE"])["NUM_ITERS"] == 1 for c in cands)
    assert all(c.kwargs["TILE"] <= max(2048, 2 * 32768) for c in cands)


@pytest.mark.parametrize("tile", [4096, 8192])
def test_fixed_larger_tiles_are_bit_exact(tile):
    """A configuration the GPU may pick, forced under the interpreter: the row of 5120 in one tile."""
    from quota.kernels.act_quant import _act_config, launch_act_quant

    x = _x((7, 5120), torch.bfloat16, seed=tile)
    codes = torch.empty((7, 2560), dtype=torch.int8, device=DEVICE)
    scale = torch.empty((7, 1), dtype=torch.float32, device=DEVICE)
    launch_act_quant(x.to(DEVICE), codes, scale, 4, 0.9, None, config=_act_config(tile, 2, 8))
    ref_codes, ref_scale = quantize_activation_reference(x, 4, 0.9)
    assert torch.equal(codes.cpu(), ref_codes) and torch.equal(scale.cpu(), ref_scale)
