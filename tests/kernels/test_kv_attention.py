"""Prefill and decode attention over the quantized cache against the float32/float64 reference; the
bandwidth-bound 4-bit decode kernel (``kv_decode_splitk``, both of its bodies) the same way."""

import math

import pytest
import torch

from quota.kernels import kv_decode_splitk as splitk
from quota.kernels.kv_attention import (
    attention_reference,
    dequantize_cache,
    kv_attention_decode,
    kv_attention_prefill,
    kv_attention_reference,
)
from quota.kernels.kv_decode_splitk import kv_decode_reference, kv_decode_splitk
from quota.kernels.kv_write import allocate_kv_cache, kv_cache_write_reference
from quota.quant.hadamard import apply_block_hadamard, rotate_by_hadamard
from quota.runtime.graphs import forbid_host_sync
from tests.kernels.kernel_checks import (
    DEVICE,
    assert_twice_torch_error,
    gpu,
    poison_like,
    rel_err,
    requires_cuda,
)


def _cache(b, hkv, s_cap, length, d, bits, gs, seed):
    """A cache filled by the reference writer; positions past ``length`` hold garbage."""
    g = torch.Generator().manual_seed(seed)
    cache = allocate_kv_cache(b, hkv, s_cap, d, bits, gs)
    kv_cache_write_reference(torch.randn((b, hkv, s_cap, d), generator=g) * 3, *cache, 0, bits, gs)
    return cache


def _case(b, hq, hkv, t, length, s_cap, d, bits, gs, dtype, padded, seed):
    g = torch.Generator().manual_seed(seed)
    k_cache = _cache(b, hkv, s_cap, length, d, bits, gs, seed + 1)
    v_cache = _cache(b, hkv, s_cap, length, d, bits, gs, seed + 2)
    q = (torch.randn((b, hq, t, d), generator=g) * 2).to(dtype)
    kv_start = None
    if padded:
        kv_start = torch.randint(0, max(1, length // 2), (b,), generator=g, dtype=torch.int32)
        kv_start[0] = length - t + 1 if t > 1 else kv_start[0]  # the first queries of sample 0 see nothing
    return q, k_cache, v_cache, kv_start


def _check(q, k_cache, v_cache, length, bits, gs, kv_start, sm_scale=None, **decode_kw):
    b, hq, t, d = q.shape
    on = lambda c: tuple(x.to(DEVICE) for x in c)  # noqa: E731
    out = poison_like(torch.empty(q.shape, dtype=q.dtype, device=DEVICE))
    ks = kv_start.to(DEVICE) if kv_start is not None else None
    if t == 1 and decode_kw.get("decode", True):
        kw = {k: v for k, v in decode_kw.items() if k != "decode"}
        kv_attention_decode(q.to(DEVICE), on(k_cache), on(v_cache), length, bits, gs, sm_scale, ks, out=out, **kw)
    else:
        kv_attention_prefill(q.to(DEVICE), on(k_cache), on(v_cache), length, bits, gs, sm_scale, ks, out=out)
    k = dequantize_cache(k_cache, length, bits)
    v = dequantize_cache(v_cache, length, bits)
    ref = attention_reference(q, k, v, sm_scale, kv_start, torch.float64)
    torch_same_dtype = attention_reference(q, k, v, sm_scale, kv_start, q.dtype)
    assert_twice_torch_error(out, ref, torch_same_dtype)
    return out.cpu(), ref


PREFILL = [  # b, hq, hkv, t, length, s_cap, d, bits, gs, dtype, padded
    (1, 1, 1, 1, 1, 4, 64, 4, 64, torch.float32, False),
    (2, 3, 1, 5, 37, 40, 64, 4, 32, torch.bfloat16, True),
    (1, 2, 2, 17, 17, 20, 96, 4, 32, torch.float16, False),
    (2, 6, 2, 33, 50, 64, 64, 8, 64, torch.bfloat16, True),
    (1, 3, 3, 17, 64, 64, 128, 4, 64, torch.float32, True),
    (2, 4, 2, 9, 9, 12, 16, 4, 16, torch.float32, True),  # the runtime tests' tiny Llama: head_dim 16, fp32
]


@pytest.mark.parametrize("case", PREFILL)
def test_prefill(case):
    b, hq, hkv, t, length, s_cap, d, bits, gs, dtype, padded = case
    q, kc, vc, ks = _case(*case, seed=t + length)
    out, ref = _check(q, kc, vc, length, bits, gs, ks, decode=False)
    if padded and t > 1:  # queries of sample 0 before its kv_start see no key: zero output
        assert not out[0, :, 0].any()


DECODE = [  # b, hq, hkv, length, s_cap, d, bits, gs, dtype, padded
    (1, 1, 1, 1, 8, 64, 4, 32, torch.bfloat16, False),
    (2, 6, 2, 50, 64, 64, 8, 64, torch.bfloat16, True),
    (3, 3, 1, 70, 80, 96, 4, 32, torch.float16, True),
    (1, 4, 4, 21, 21, 128, 4, 64, torch.float32, False),
    (2, 4, 2, 13, 16, 16, 4, 16, torch.float32, True),  # head_dim 16, fp32
]


@pytest.mark.parametrize("case", DECODE)
@pytest.mark.parametrize("num_splits", [None, 1, 3])
def test_decode(case, num_splits):
    b, hq, hkv, length, s_cap, d, bits, gs, dtype, padded = case
    q, kc, vc, ks = _case(b, hq, hkv, 1, length, s_cap, d, bits, gs, dtype, padded, seed=length + hq)
    _check(q, kc, vc, length, bits, gs, ks, num_splits=num_splits)


@pytest.mark.parametrize("asm_dequant", [True, False])
def test_decode_variants_agree_with_prefill(asm_dequant):
    """Element-wise, decode and prefill differ by at most twice the worst error plain bf16 PyTorch makes
    (measured on the H100: 0.22 between them against 0.26 for PyTorch, on outputs up to 8.6)."""
    q, kc, vc, ks = _case(2, 3, 1, 1, 40, 48, 64, 4, 32, torch.bfloat16, True, seed=4)
    out_d, ref = _check(q, kc, vc, 40, 4, 32, ks, sm_scale=0.3, asm_dequant=asm_dequant)
    out_p, _ = _check(q, kc, vc, 40, 4, 32, ks, sm_scale=0.3, decode=False)
    k, v = dequantize_cache(kc, 40, 4), dequantize_cache(vc, 40, 4)
    torch_error = (attention_reference(q, k, v, 0.3, ks, torch.bfloat16).double() - ref).abs().max()
    assert (out_d.double() - out_p.double()).abs().max() <= 2 * torch_error


@pytest.mark.parametrize("length", [1, 17, 40])
def test_decode_length_read_from_device_memory(length):
    """A tensor length (what a CUDA graph replays) gives the int length's output bit for bit: the grid then
    splits the whole capacity of 48 into chunks of 16, as the int length's 3 splits do, and the splits past the
    length stay empty."""
    q, kc, vc, _ = _case(2, 4, 2, 1, length, 48, 64, 4, 32, torch.bfloat16, False, seed=length)
    q, kc, vc = q.to(DEVICE), tuple(x.to(DEVICE) for x in kc), tuple(x.to(DEVICE) for x in vc)
    want = kv_attention_decode(q, kc, vc, length, 4, 32, num_splits=3)
    length_t = torch.tensor([length], dtype=torch.int32, device=DEVICE)
    got = kv_attention_decode(q, kc, vc, length_t, 4, 32, num_splits=3)
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="int32"):
        kv_attention_decode(q, kc, vc, torch.tensor([3], device=DEVICE), 4, 32)


@pytest.mark.parametrize("length", [1, 9, 33, 48])
@pytest.mark.parametrize("splits", [None, 2])
def test_device_length_with_padding_and_default_splits(length, splits):
    """A tensor length with left padding (a sample all padding) and the default split heuristic, which then
    sizes the grid by the capacity: the int length's output."""
    q, kc, vc, ks = _case(3, 4, 2, 1, length, 48, 64, 4, 32, torch.float32, True, seed=length)
    ks[1] = length  # every key of sample 1 is padding
    q, ks = q.to(DEVICE), ks.to(DEVICE)
    kc, vc = tuple(x.to(DEVICE) for x in kc), tuple(x.to(DEVICE) for x in vc)
    want = kv_attention_decode(q, kc, vc, length, 4, 32, kv_start=ks, num_splits=splits)
    length_t = torch.tensor([length], dtype=torch.int32, device=DEVICE)
    got = kv_attention_decode(q, kc, vc, length_t, 4, 32, kv_start=ks, num_splits=splits)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert not got[1].any() and torch.isfinite(got).all()


def test_layers_with_different_lengths_share_nothing():
    """Two layers' caches of different lengths: each call sees only its own ``length`` positions."""
    q, kc, vc, _ = _case(2, 4, 2, 1, 64, 64, 64, 4, 32, torch.bfloat16, False, seed=8)
    out_long, _ = _check(q, kc, vc, 64, 4, 32, None)
    out_short, _ = _check(q, kc, vc, 23, 4, 32, None)  # a pruned layer
    assert (out_long.float() - out_short.float()).abs().max() > 1e-2


def test_fully_padded_sample_gives_zero():
    q, kc, vc, _ = _case(2, 2, 2, 1, 16, 16, 64, 4, 32, torch.float32, False, seed=2)
    ks = torch.tensor([16, 3], dtype=torch.int32, device=q.device)  # sample 0: every position is padding
    out, _ = _check(q, kc, vc, 16, 4, 32, ks)
    assert not out[0].any() and out[1].abs().sum() > 0


def test_invalid_arguments():
    q, kc, vc, _ = _case(1, 3, 2, 1, 8, 8, 64, 4, 32, torch.float32, False, seed=1)
    kc, vc = tuple(x.to(DEVICE) for x in kc), tuple(x.to(DEVICE) for x in vc)
    with pytest.raises(ValueError, match="multiple"):
        kv_attention_decode(q.to(DEVICE), kc, vc, 8, 4, 32)
    q2 = q[:, :2].to(DEVICE)
    with pytest.raises(ValueError, match="length"):
        kv_attention_decode(q2, kc, vc, 9, 4, 32)
    with pytest.raises(ValueError, match="kv_start"):
        kv_attention_decode(q2, kc, vc, 8, 4, 32, kv_start=torch.zeros(1, dtype=torch.int64, device=DEVICE))
    with pytest.raises(ValueError, match="one query"):
        kv_attention_decode(torch.zeros(1, 2, 3, 64, device=DEVICE), kc, vc, 8, 4, 32)


@gpu
@requires_cuda
@pytest.mark.parametrize(
    "hq,hkv,length,bits,asm_dequant",
    [(32, 32, 4096, 4, True), (32, 8, 4097, 4, True), (32, 8, 1000, 8, True), (32, 32, 2048, 4, False)],
)
def test_gpu_decode_large(hq, hkv, length, bits, asm_dequant):
    q, kc, vc, ks = _case(4, hq, hkv, 1, length, length + 5, 128, bits, 64, torch.bfloat16, True, seed=length)
    _check(q, kc, vc, length, bits, 64, ks, asm_dequant=asm_dequant)


@gpu
@requires_cuda
@pytest.mark.parametrize("hq,hkv,t,length", [(32, 32, 577, 600), (28, 4, 300, 1200)])
def test_gpu_prefill_large(hq, hkv, t, length):
    q, kc, vc, ks = _case(2, hq, hkv, t, length, length, 128, 4, 64, torch.bfloat16, True, seed=t)
    _check(q, kc, vc, length, 4, 64, ks, sm_scale=1 / math.sqrt(128), decode=False)


# ----------------------------------------------------------------------------- the bandwidth-bound decode kernel

FMA = {"MMA": False, "BLOCK_N": 8, "num_warps": 1, "STAGES": 1}  # CUDA cores: 4-D tiles, FMA per head
MMA = {"MMA": True, "BLOCK_N": 16, "num_warps": 1, "STAGES": 1}  # tensor cores (fp32 dots, fp16 dots for fp16 q)

SPLITK = [  # b, hq, hkv, length, s_cap, d, gs, dtype, padded: lengths off the blocks, GQA 1/3/4, D 64/96/128
    (1, 1, 1, 1, 8, 64, 32, torch.bfloat16, False),  # a 1-token cache
    (3, 4, 1, 37, 40, 64, 16, torch.float32, True),  # GQA 4, rows with different starts
    (2, 6, 2, 70, 80, 96, 32, torch.float16, True),  # GQA 3, three groups (padded to 4), fp16 dots
    (2, 8, 8, 23, 32, 128, 64, torch.bfloat16, True),  # MHA, two groups
    (1, 8, 2, 50, 50, 128, 128, torch.float16, False),  # GQA 4, one group of 128
]


def _splitk_check(case, config, num_splits, seed):
    b, hq, hkv, length, s_cap, d, gs, dtype, padded = case
    q, kc, vc, ks = _case(b, hq, hkv, 1, length, s_cap, d, 4, gs, dtype, padded, seed=seed)
    if padded and b > 2:
        ks[2] = length  # a row whose every position is padding
    out = kv_decode_splitk(q, kc, vc, length, gs, kv_start=ks, num_splits=num_splits, config=config,
                           out=poison_like(torch.empty(q.shape, dtype=dtype, device=q.device)))  # fmt: skip
    k, v = dequantize_cache(kc, length, 4), dequantize_cache(vc, length, 4)
    ref = attention_reference(q, k, v, None, ks, torch.float64)
    assert_twice_torch_error(out, ref, attention_reference(q, k, v, None, ks, dtype))
    if padded and b > 2:
        assert not out[2].any()
    return q, kc, vc, ks, out


@pytest.mark.parametrize("case", SPLITK)
@pytest.mark.parametrize("config", [FMA, MMA], ids=["fma", "mma"])
@pytest.mark.parametrize("num_splits", [1, 3])
def test_splitk_decode(case, config, num_splits):
    """Both bodies of the split kernel against float64 attention over the dequantized cache (tolerance: twice
    plain PyTorch's error at q's dtype), one split (normalized in the kernel) and several (the merge kernel)."""
    _splitk_check(case, config, num_splits, seed=case[3] + case[1])


def test_splitk_reference_is_float32_attention():
    q, kc, vc, ks = _case(2, 4, 2, 1, 30, 32, 64, 4, 32, torch.float32, True, seed=5)
    want = kv_attention_reference(q, kc, vc, 30, 4, 32, None, ks)
    torch.testing.assert_close(kv_decode_reference(q, kc, vc, 30, 32, None, ks), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("config", [FMA, MMA], ids=["fma", "mma"])
def test_splitk_default_splits_and_blocks(config):
    """The default split count, a custom scale, and blocks of 16 (three of them partial at 45 positions)."""
    q, kc, vc, ks = _case(2, 4, 2, 1, 45, 48, 64, 4, 32, torch.float32, True, seed=3)
    out = kv_decode_splitk(q, kc, vc, 45, 32, sm_scale=0.2, kv_start=ks, config={**config, "BLOCK_N": 16})
    k, v = dequantize_cache(kc, 45, 4), dequantize_cache(vc, 45, 4)
    ref = attention_reference(q, k, v, 0.2, ks, torch.float64)
    assert_twice_torch_error(out, ref, attention_reference(q, k, v, 0.2, ks, torch.float32))


@pytest.mark.parametrize("config", [FMA, MMA], ids=["fma", "mma"])
@pytest.mark.parametrize("length", [1, 33])
def test_splitk_length_read_from_device_memory(config, length):
    """A tensor length (what a CUDA graph replays) gives the int length's output bit for bit when the chunks
    are the same (3 splits of 16 over the capacity of 48), and reads nothing back to the host."""
    q, kc, vc, ks = _case(3, 4, 2, 1, length, 48, 64, 4, 32, torch.float16, True, seed=length)
    want = kv_decode_splitk(q, kc, vc, length, 32, kv_start=ks, num_splits=3, config=config)
    length_t = torch.tensor([length], dtype=torch.int32, device=q.device)
    with forbid_host_sync():
        got = kv_decode_splitk(q, kc, vc, length_t, 32, kv_start=ks, num_splits=3, config=config)
    assert torch.equal(got, want)


def test_splitk_hadamard_keys():
    """Keys written Hadamard-rotated and the query rotated the same way (what ``QuantizedKVStore.attend`` does):
    attention over the unrotated keys."""
    g = torch.Generator().manual_seed(11)
    b, hq, hkv, length, d, gs = 2, 4, 2, 29, 64, 32
    keys, values = torch.randn((b, hkv, length, d), generator=g) * 3, torch.randn((b, hkv, length, d), generator=g)
    kc, vc = allocate_kv_cache(b, hkv, length, d, 4, gs), allocate_kv_cache(b, hkv, length, d, 4, gs)
    kv_cache_write_reference(keys, *kc, 0, 4, gs, hadamard=True)
    kv_cache_write_reference(values, *vc, 0, 4, gs)
    q = torch.randn((b, hq, 1, d), generator=g)
    out = kv_decode_splitk(rotate_by_hadamard(q), kc, vc, length, gs, config=MMA)
    k = apply_block_hadamard(dequantize_cache(kc, length, 4).double(), d)  # H is symmetric: H H = I
    v = dequantize_cache(vc, length, 4)
    ref = attention_reference(q, k, v, None, None, torch.float64)
    assert rel_err(out, ref) < 1e-5


def test_splitk_dispatch_and_arguments():
    """``kv_attention_decode`` runs the split-K kernel by default (``auto``) on the caches it reads and the first
    kernel on the others (8 bits, groups of 4), both within float32 rounding of each other; bad arguments are
    one-line errors."""
    q, kc, vc, _ = _case(1, 2, 1, 1, 20, 24, 64, 4, 32, torch.float32, False, seed=2)
    new = kv_attention_decode(q, kc, vc, 20, 4, 32, kernel="splitk")
    assert torch.equal(new, kv_decode_splitk(q, kc, vc, 20, 32))
    assert torch.equal(kv_attention_decode(q, kc, vc, 20, 4, 32), new)
    q8, kc8, vc8, _ = _case(1, 2, 1, 1, 20, 24, 64, 8, 32, torch.float32, False, seed=2)
    assert torch.equal(kv_attention_decode(q8, kc8, vc8, 20, 8, 32), kv_attention_decode(q8, kc8, vc8, 20, 8, 32, kernel="v1"))
    q4, kc4, vc4, _ = _case(1, 2, 1, 1, 20, 24, 64, 4, 4, torch.float32, False, seed=2)
    assert torch.equal(kv_attention_decode(q4, kc4, vc4, 20, 4, 4), kv_attention_decode(q4, kc4, vc4, 20, 4, 4, kernel="v1"))
    torch.testing.assert_close(kv_attention_decode(q, kc, vc, 20, 4, 32, kernel="v1"), new, rtol=1e-5, atol=1e-5)
    assert not splitk.supports(8, 64, 32) and not splitk.supports(4, 64, 4) and splitk.supports(4, 64, 8)
    with pytest.raises(ValueError, match="kernel must be"):
        kv_attention_decode(q, kc, vc, 20, 4, 32, kernel="v2")
    with pytest.raises(ValueError, match="group_size"):
        kv_decode_splitk(q, kc, vc, 20, 4)
    with pytest.raises(ValueError, match="length"):
        kv_decode_splitk(q, kc, vc, 25, 32)
    with pytest.raises(ValueError, match="one query"):
        kv_decode_splitk(q.expand(1, 2, 2, 64), kc, vc, 20, 32)
    shifted = torch.zeros(kc[0].numel() + 1, dtype=torch.uint8, device=q.device)[1:].view(kc[0].shape)  # codes read as int32 words
    with pytest.raises(ValueError, match="4-byte"):
        kv_decode_splitk(q, (shifted, *kc[1:]), (shifted, *vc[1:]), 20, 32)


def test_decode_splits_heuristic():
    """Shape-only, chunks a multiple of the alignment covering the sequence, at least MIN_CHUNK positions; at a
    16k context and batch 16 on 132 SMs, enough programs for several waves."""
    for b, hkv, length, gq in [(16, 32, 16384, 1), (16, 8, 16384, 4), (1, 8, 1000, 4), (4, 2, 1, 1), (2, 2, 300, 2)]:
        splits, chunk = splitk.decode_splits(b, hkv, length, 132, None, gq, 128)
        assert chunk % splitk.CHUNK_ALIGN == 0 and (splits - 1) * chunk < length <= splits * chunk
        assert splits == 1 or chunk >= splitk.MIN_CHUNK
        assert (splits, chunk) == splitk.decode_splits(b, hkv, length, 132, None, gq, 128)
    assert 16 * 32 * splitk.decode_splits(16, 32, 16384, 132, None, 1, 128)[0] >= 4 * 16 * 132
    assert splitk.decode_splits(2, 2, 100, 132, 3)[0] == 3 or splitk.CHUNK_ALIGN > 34


@gpu
@requires_cuda
@pytest.mark.parametrize("hq,hkv,length", [(32, 32, 4096), (32, 8, 4097), (28, 4, 1000)])
@pytest.mark.parametrize("config", [None, FMA, {**MMA, "STAGES": 3}, {**MMA, "BLOCK_N": 32, "STAGES": 4}],
                         ids=["tuned", "fma", "mma16", "mma32"])  # fmt: skip
def test_gpu_splitk_large(hq, hkv, length, config):
    q, kc, vc, ks = _case(4, hq, hkv, 1, length, length + 5, 128, 4, 64, torch.bfloat16, True, seed=length)
    on = lambda c: tuple(x.to(DEVICE) for x in c)  # noqa: E731
    out = kv_decode_splitk(q.to(DEVICE), on(kc), on(vc), length, 64, kv_start=ks.to(DEVICE), config=config)
    k, v = dequantize_cache(kc, length, 4), dequantize_cache(vc, length, 4)
    ref = attention_reference(q, k, v, None, ks, torch.float64)
    assert_twice_torch_error(out, ref, attention_reference(q, k, v, None, ks, torch.bfloat16))


@gpu
@requires_cuda
def test_gpu_splitk_cuda_graph_replays_device_length():
    """Captured once with the length in device memory, replayed at three lengths: the eager outputs."""
    q, kc, vc, ks = _case(4, 32, 8, 1, 3000, 3000, 128, 4, 64, torch.bfloat16, True, seed=9)
    q, ks = q.to(DEVICE), ks.to(DEVICE)
    kc, vc = tuple(x.to(DEVICE) for x in kc), tuple(x.to(DEVICE) for x in vc)
    length_t = torch.tensor([3000], dtype=torch.int32, device=DEVICE)
    out = torch.empty_like(q)
    kv_decode_splitk(q, kc, vc, length_t, 64, kv_start=ks, out=out)  # autotunes outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        kv_decode_splitk(q, kc, vc, length_t, 64, kv_start=ks, out=out)
    for length in (2000, 2999, 1500):
        length_t.fill_(length)
        graph.replay()
        want = kv_decode_splitk(q, kc, vc, torch.tensor([length], dtype=torch.int32, device=DEVICE), 64,
                                kv_start=ks)  # fmt: skip
        torch.testing.assert_close(out, want, rtol=0, atol=0)
