"""StaticDecoder: decode steps from static buffers and device-held lengths (what a CUDA graph replays) give the
eager decode_step's logits; the step never synchronizes with the host; eager decoding resumes after it."""

import pytest
import torch

from quota.runtime.generate import PrunedRunner
from quota.runtime.graphs import HostSyncError, StaticDecoder, forbid_host_sync
from tests.runtime.models import n_visual


def _eager(runner, ids, mask, pv, steps, reserve):
    logits, state = runner.prefill(ids, mask, pv, reserve=reserve)
    out, token = [logits], logits.argmax(-1)
    for _ in range(steps):
        logits = runner.decode_step(token, state)
        out.append(logits)
        token = logits.argmax(-1)
    return out, state


@pytest.fixture(scope="module")
def pruned(llava):
    n = n_visual(llava)
    return PrunedRunner(llava, (n, n // 2, n // 2, 3), {"attn_last": 1.0}, impl="reference")


def test_static_steps_equal_eager_steps(pruned, batch3):
    ids, mask, pv, _ = batch3
    want, _ = _eager(pruned, ids, mask, pv, steps=5, reserve=5)
    logits, state = pruned.prefill(ids, mask, pv, reserve=5)
    prompt_lengths = state.cache.lengths
    got, token = [logits], logits.argmax(-1)
    with StaticDecoder(pruned, state, steps=5, graph=False) as dec:
        for _ in range(5):
            logits = dec(token).clone()
            got.append(logits)
            token = logits.argmax(-1)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert state.steps == 5 and state.cache.lengths == [n + 5 for n in prompt_lengths]


def test_eager_decoding_resumes_after_static_steps(pruned, batch3):
    ids, mask, pv, _ = batch3
    want, want_state = _eager(pruned, ids, mask, pv, steps=4, reserve=4)
    logits, state = pruned.prefill(ids, mask, pv, reserve=4)
    token = logits.argmax(-1)
    dec = StaticDecoder(pruned, state, steps=2, graph=False)
    for _ in range(2):
        token = dec(token).argmax(-1)
    with pytest.raises(RuntimeError, match="static mode"):
        pruned.decode_step(token, state)  # not while the decoder is open
    dec.close()
    for _ in range(2):
        logits = pruned.decode_step(token, state)
        token = logits.argmax(-1)
    torch.testing.assert_close(logits, want[-1], rtol=1e-5, atol=1e-5)
    assert state.cache.lengths == want_state.cache.lengths
    assert all(torch.equal(a, b) for a, b in zip(state.key_valid, want_state.key_valid))


def test_static_step_does_not_synchronize(pruned, batch3):
    ids, mask, pv, _ = batch3
    logits, state = pruned.prefill(ids, mask, pv, reserve=2)
    with StaticDecoder(pruned, state, steps=2, graph=False) as dec, forbid_host_sync():
        dec(logits.argmax(-1))
    with pytest.raises(HostSyncError):  # the eager step reads nothing back either, but the check itself bites
        with forbid_host_sync():
            bool(logits.sum() > 0)


def test_reserve_too_small_and_steps_used_up(pruned, batch3):
    ids, mask, pv, _ = batch3
    logits, state = pruned.prefill(ids, mask, pv, reserve=0)
    with pytest.raises(ValueError, match="reserve >= 3"):
        StaticDecoder(pruned, state, steps=3, graph=False)
    logits, state = pruned.prefill(ids, mask, pv, reserve=1)
    dec = StaticDecoder(pruned, state, steps=1, graph=False)
    token = dec(logits.argmax(-1)).argmax(-1)
    with pytest.raises(RuntimeError, match="used up"):
        dec(token)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            StaticDecoder(pruned, state, steps=0, graph=True)


@pytest.mark.parametrize("weights", [{"attn_last": 1.0}, {"attn_text": 1.0, "magnitude": 0.2, "risk": 0.1}])
def test_unchecked_prefill_reads_nothing_back_and_equals_the_checked_one(llava, batch3, weights):
    """What StaticPrefill records: prefill_language without checks (attn_text then scores a static number of
    text queries, the extra ones weighted 0) gives the checked prefill's kept tokens and logits."""
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    runner = PrunedRunner(llava, (n, n // 2, n // 4, 3), weights, impl="reference")
    want, _ = runner.prefill(ids, mask, pv, reserve=2)
    want_kept = runner.kept_indices
    feats = runner.encode_images(pv, ids.shape[0], {})
    with forbid_host_sync():
        got, state = runner.prefill_language(ids, mask, feats, pv, 2, None, checks=False)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(runner.kept_indices, want_kept))
    with pytest.raises(HostSyncError):
        with forbid_host_sync():
            runner.prefill(ids, mask, pv)  # the checked path does read back


def test_unchecked_prefill_of_qwen2_vl_reads_nothing_back():
    from tests.runtime.models import qwen_inputs, tiny_qwen2vl

    model = tiny_qwen2vl()
    ids, mask, pv, thw, _ = qwen_inputs(8, [(2, 3), (0, 5)])
    runner = PrunedRunner(model, (16, 8, 8, 3), {"attn_last": 1.0, "attn_text": 0.5}, impl="reference")
    want, _ = runner.prefill(ids, mask, pv, image_grid_thw=thw)
    grid_hw, feats = runner.mrope_grid({"image_grid_thw": thw}), runner.encode_images(pv, 2, {"image_grid_thw": thw})
    with forbid_host_sync():
        got, _ = runner.prefill_language(ids, mask, feats, pv, 0, grid_hw, checks=False)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_static_prefill_without_graphs_is_the_eager_prefill(pruned, batch3):
    from quota.runtime.graphs import StaticPrefill

    ids, mask, pv, _ = batch3
    want, _ = pruned.prefill(ids, mask, pv, reserve=3)
    static = StaticPrefill(pruned, reserve=3, graph=False)
    got, state = static(ids, mask, pv)
    torch.testing.assert_close(got, want)
    assert min(state.cache.capacity(l) - n for l, n in enumerate(state.cache.lengths)) >= 3


def test_static_generate_gives_the_eager_tokens(pruned, batch3):
    ids, mask, pv, _ = batch3
    eager = pruned.generate(ids, mask, pv, max_new_tokens=6, eos_token_id=2, pad_token_id=0)
    static = pruned.generate(ids, mask, pv, max_new_tokens=6, eos_token_id=2, pad_token_id=0, static=True)
    assert torch.equal(static, eager) and eager.shape[1] >= 2


def test_static_steps_of_qwen2_vl_follow_m_rope_positions():
    """Qwen2-VL (M-RoPE, 3 position rows): static steps equal eager ones, with pruning and left padding."""
    from tests.runtime.models import qwen_inputs, tiny_qwen2vl

    model = tiny_qwen2vl()
    ids, mask, pv, thw, _ = qwen_inputs(8, [(2, 3), (0, 5)])
    runner = PrunedRunner(model, (16, 8, 8, 3), {"attn_last": 1.0}, impl="reference")
    eager = runner.generate(ids, mask, pv, max_new_tokens=5, image_grid_thw=thw)
    logits, state = runner.prefill(ids, mask, pv, reserve=4, image_grid_thw=thw)
    want = [runner.decode_step(t, state) for t in eager[:, :4].T]
    logits, state = runner.prefill(ids, mask, pv, reserve=4, image_grid_thw=thw)
    with StaticDecoder(runner, state, steps=4, graph=False) as dec:
        for t, w in zip(eager[:, :4].T, want):
            with forbid_host_sync():
                got = dec(t).clone()
            torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-5)


def test_static_step_reads_no_host_side_count(pruned, batch3):
    """A recorded step replays whatever the host believes: corrupting the host-side step count and lengths
    (within the capacity) between static steps must not change what the steps compute."""
    ids, mask, pv, _ = batch3
    want, _ = _eager(pruned, ids, mask, pv, steps=3, reserve=6)
    logits, state = pruned.prefill(ids, mask, pv, reserve=6)
    token, prompt = logits.argmax(-1), state.cache.lengths
    with StaticDecoder(pruned, state, steps=3, graph=False) as dec:
        for i in range(3):
            state.steps, state.cache._lengths = 999, [n + i + 2 for n in prompt]  # the truth: n + i
            logits = dec(token).clone()
            torch.testing.assert_close(logits, want[i + 1], rtol=1e-5, atol=1e-5)
            token = logits.argmax(-1)


def test_one_static_decoder_per_cache(pruned, batch3):
    ids, mask, pv, _ = batch3
    logits, state = pruned.prefill(ids, mask, pv, reserve=4)
    first = StaticDecoder(pruned, state, steps=2, graph=False)
    with pytest.raises(RuntimeError, match="already in static mode"):
        StaticDecoder(pruned, state, steps=2, graph=False)
    first.close()
    second = StaticDecoder(pruned, state, steps=2, graph=False)
    first.close()  # closing again (or late) leaves the newer decoder's static mode alone
    assert state.cache.static
    second.close()
    assert not state.cache.static


def test_forbid_host_sync_catches_what_a_capture_refuses():
    x = torch.arange(6.0)
    m = x > 2
    for read_back in (lambda: x[m], lambda: torch.equal(x, x), lambda: torch.nonzero(m), lambda: bool(m.any()),
                      lambda: torch.repeat_interleave(torch.tensor([1, 2])), lambda: x.max().item()):
        with pytest.raises(HostSyncError):
            with forbid_host_sync():
                read_back()
    with forbid_host_sync():  # what a recorded region does do
        y = torch.where(m, x, -x).cumsum(0)[torch.tensor([0, 2])]
    assert y.tolist() == [0.0, -3.0]


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@requires_cuda
def test_graphs_over_the_full_precision_cache_on_cuda(llava, batch3):
    """The bf16 rows' path: StaticPrefill and a graph-replayed StaticDecoder over the full-precision cache give
    the eager prefill and steps, for a request recorded first and for another one of the same shape (other
    images and text) replayed after it."""
    from quota.runtime.graphs import StaticPrefill

    model = llava.to("cuda")
    try:
        ids, mask, pv, _ = (x.to("cuda") if isinstance(x, torch.Tensor) else x for x in batch3)
        n = n_visual(model)
        runner = PrunedRunner(model, (n, n // 2, n // 2, 3), {"attn_last": 1.0}, impl="reference")
        static = StaticPrefill(runner, reserve=4)
        static(ids, mask, pv)  # eager, then recorded
        ids2 = torch.where(ids == ids.max(), ids, (ids * 7 + 3) % 100)  # other text, same image tokens
        for request in ((ids2, mask, pv.flip(0)), (ids, mask, pv)):
            want, want_state = runner.prefill(*request, reserve=4)
            want_steps, token = [], want.argmax(-1)
            for _ in range(3):
                want_steps.append(runner.decode_step(token, want_state))
                token = want_steps[-1].argmax(-1)
            got, state = static(*request)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            token = got.argmax(-1)
            with StaticDecoder(runner, state, steps=3) as dec:
                for w in want_steps:
                    logits = dec(token)
                    torch.testing.assert_close(logits, w, rtol=1e-4, atol=1e-4)
                    token = logits.argmax(-1)
            assert state.cache.lengths == want_state.cache.lengths
    finally:
        llava.to("cpu")
