"""The runtime's kernel KV path: a QuantizedKVStore holds int4 codes written by kv_cache_write, and attention
runs in kv_attention_prefill/decode over them. It must agree with the simulated path (fake-quantized K/V
inside SDPA) on a tiny quantized Llava, with pruning and a left-padded batch."""

import pytest
import torch

from quota.quant.config import QuantConfig
from quota.quantize.model import quantize_model
from quota.runtime.generate import PrunedRunner
from quota.runtime.graphs import StaticDecoder, StaticPrefill, forbid_host_sync
from quota.runtime.kv.quantized import QuantizedKVStore
from tests.kernels.kernel_checks import DEVICE, gpu, requires_cuda
from tests.runtime.models import left_pad, n_visual, pixels, prompt, tiny_llava

EOS = {"eos_token_id": 2, "pad_token_id": 0}


def quantized_tiny_llava(**kv):
    """The tiny Llava with full-precision linears and a quantized KV cache (``kv``: QuantConfig fields), a left-padded
    batch of two prompts and its images, and the visual-token count."""
    torch.manual_seed(0)
    model = tiny_llava()
    n = n_visual(model)
    ids, mask = left_pad([prompt(n, 3, 5, 0), prompt(n, 1, 2, 1)])
    pv = pixels(2, seed=3)
    calib = [{"input_ids": ids, "attention_mask": mask, "pixel_values": pv}]
    q = quantize_model(model, QuantConfig(kv_group_size=16, weight_method="rtn", a_bits=16, w_bits=16, **kv), calib)
    return q.to(DEVICE), ids.to(DEVICE), mask.to(DEVICE), pv.to(DEVICE), n


@pytest.fixture(scope="module")
def setup():
    return quantized_tiny_llava()


@pytest.mark.parametrize("hadamard", [True])
def test_kernel_kv_path_matches_simulated_path(setup, hadamard):
    model, ids, mask, pv, n = setup
    schedule = (n, n // 2, n // 2, 3)
    weights = {"attn_last": 1.0}
    sim = PrunedRunner(model, schedule, weights, impl="reference")
    kern = PrunedRunner(model, schedule, weights, impl="triton")
    assert not sim.uses_kv_kernels(ids.device) and kern.uses_kv_kernels(ids.device)
    logits_sim, _ = sim.prefill(ids, mask, pv)
    logits_kern, state = kern.prefill(ids, mask, pv, reserve=4)
    assert isinstance(state.cache, QuantizedKVStore)
    assert state.cache.lengths == [int(mask.shape[1] - n + k) for k in schedule]  # each layer its own length
    kept_sim, kept_kern = sim.kept_indices, kern.kept_indices
    kern.prefill(ids, mask, pv, reserve=4)
    assert all(torch.equal(a, b) for a, b in zip(kept_kern, kern.kept_indices))  # deterministic
    # The two paths round differently, so a near-tie at the top-k boundary may fall either way: at most one
    # token swapped per layer and sample. Samples whose every decision agrees must agree in logits and text.
    same = []
    for i in range(ids.shape[0]):
        for a, b in zip(kept_sim, kept_kern):
            assert len(set(a[i].tolist()) ^ set(b[i].tolist())) <= 2
        same.append(all(torch.equal(a[i], b[i]) for a, b in zip(kept_sim, kept_kern)))
    assert any(same)
    rows = torch.tensor(same)
    torch.testing.assert_close(logits_kern[rows], logits_sim[rows], rtol=2e-3, atol=2e-3)
    gen_sim = sim.generate(ids, mask, pv, max_new_tokens=4, **EOS)
    gen_kern = kern.generate(ids, mask, pv, max_new_tokens=4, **EOS)
    assert torch.equal(gen_kern[rows], gen_sim[rows])


@pytest.mark.parametrize("store", ["setup", "mixed_kv"])
def test_static_decoder_over_the_store_equals_eager_steps(store, request):
    """Static decode steps (device-held lengths, what a CUDA graph replays) over the int4 store, and over a store
    whose full-precision layers sit beside quantized ones, give the eager steps' logits; on CUDA the steps after
    the first are replayed from a captured graph."""
    model, ids, mask, pv, n = request.getfixturevalue(store)
    kern = PrunedRunner(model, (n, n // 2, n // 2, 3), {"attn_last": 1.0}, impl="triton")
    logits, state = kern.prefill(ids, mask, pv, reserve=4)
    want, token = [], logits.argmax(-1)
    for _ in range(4):
        want.append(kern.decode_step(token, state))
        token = want[-1].argmax(-1)
    logits, state = kern.prefill(ids, mask, pv, reserve=4)
    token = logits.argmax(-1)
    with StaticDecoder(kern, state, steps=4) as dec:
        assert dec.graph_wanted == (DEVICE == "cuda")
        for i in range(4):
            with forbid_host_sync():
                got = dec(token).clone()
            torch.testing.assert_close(got, want[i], rtol=1e-4, atol=1e-4)
            token = got.argmax(-1)
    assert state.cache.lengths == [int(mask.shape[1] - n + k) + 4 for k in (n, n // 2, n // 2, 3)]


def test_store_uses_a_fraction_of_bf16_bytes(setup):
    model, ids, mask, pv, n = setup
    kern = PrunedRunner(model, (n,) * 4, {"attn_last": 1.0}, impl="triton")
    _, state = kern.prefill(ids, mask, pv)
    layers = model.model.language_model.layers
    kv_heads, head_dim = layers[0].self_attn.k_proj.out_features // 16, 16
    bf16 = sum(2 * ids.shape[0] * kv_heads * length * head_dim * 2 for length in state.cache.lengths)
    assert state.cache.nbytes() < 0.6 * bf16  # int4 codes plus float32 scale and zero per 16-wide group


def test_unchecked_prefill_over_the_store_reads_nothing_back(setup):
    model, ids, mask, pv, n = setup
    kern = PrunedRunner(model, (n, n // 2, n // 2, 3), {"attn_last": 1.0, "attn_text": 0.5}, impl="triton")
    want, _ = kern.prefill(ids, mask, pv, reserve=2)
    feats = kern.encode_images(pv, ids.shape[0], {})
    with forbid_host_sync():
        got, _ = kern.prefill_language(ids, mask, feats, pv, 2, None, checks=False)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@gpu
@requires_cuda
def test_static_prefill_replays_each_request_as_the_eager_prefill(setup):
    """A recorded prefill replayed for a new request (other images) gives that request's eager logits and kept
    tokens, and decoding continues from its state; the first request replayed again is unchanged."""
    model, ids, mask, pv, n = setup
    kern = PrunedRunner(model, (n, n // 2, n // 2, 3), {"attn_last": 1.0, "attn_text": 0.5}, impl="triton")
    static = StaticPrefill(kern, reserve=3)
    first, _ = static(ids, mask, pv)  # eager, then recorded
    assert static.vision_recorded
    pv2 = pv.flip(0) * 1.5
    want, want_state = kern.prefill(ids, mask, pv2, reserve=3)
    want_kept, want_next = kern.kept_indices, kern.decode_step(want.argmax(-1), want_state)
    got, state = static(ids, mask, pv2)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    assert all(torch.equal(a, b) for a, b in zip(kern.kept_indices, want_kept))
    with StaticDecoder(kern, state, steps=1) as dec:
        torch.testing.assert_close(dec(got.argmax(-1)), want_next, rtol=1e-3, atol=1e-3)
    again, _ = static(ids, mask, pv)
    torch.testing.assert_close(again, first, rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def mixed_kv():
    """The tiny Llava with KV caches of 16, 4, 16 and 8 bits by layer (a mixed-precision recipe's)."""
    return quantized_tiny_llava(layer_kv_bits=(16, 4, 16, 8))


def test_full_precision_layers_share_the_store_with_the_kernel_layers(mixed_kv):
    """Layers that keep 16-bit KV sit in the same store as the quantized ones (values as they come, read by SDPA
    with the kernels' masking), and the whole prefill and its decode steps agree with the simulated path."""
    model, ids, mask, pv, n = mixed_kv
    schedule = (n, n, n // 2, n // 2)
    sim = PrunedRunner(model, schedule, {"attn_last": 1.0}, impl="reference")
    kern = PrunedRunner(model, schedule, {"attn_last": 1.0}, impl="triton")
    assert kern.uses_kv_kernels(ids.device)
    logits_sim, state_sim = sim.prefill(ids, mask, pv, reserve=3)
    logits_kern, state = kern.prefill(ids, mask, pv, reserve=3)
    store = state.cache
    assert isinstance(store, QuantizedKVStore)
    assert [store.full_precision(l) for l in range(4)] == [True, False, True, False]
    assert len(store.layer(0)[0]) == 1 and store.layer(0)[0][0].dtype == ids.new_zeros((), dtype=torch.float32).dtype
    assert len(store.layer(1)[0]) == 3 and store.layer(1)[0][0].dtype == torch.uint8  # codes, scale, zero
    same = [all(torch.equal(a[i], b[i]) for a, b in zip(sim.kept_indices, kern.kept_indices)) for i in range(2)]
    assert any(same)
    rows = torch.tensor(same)
    torch.testing.assert_close(logits_kern[rows], logits_sim[rows], rtol=2e-3, atol=2e-3)
    token = logits_kern.argmax(-1)
    for _ in range(2):  # eager decode steps over both kinds of layer
        step_kern = kern.decode_step(token, state)
        step_sim = sim.decode_step(token, state_sim)
        torch.testing.assert_close(step_kern[rows], step_sim[rows], rtol=2e-3, atol=2e-3)
        token = step_kern.argmax(-1)

