"""PrunedRunner against the unmodified model and against the masked reference."""

import pytest
import torch

from quota.runtime.generate import PrunedRunner
from quota.runtime.scoring import combine, select_topk
from tests.runtime.models import left_pad, n_visual
from tests.runtime.reference import alive_masks, positions_of, reference_attention

EOS = {"eos_token_id": 2, "pad_token_id": 0}
WEIGHTS = {"attn_last": 1.0, "magnitude": 0.5, "risk": 0.25}


def _schedule(n):  # prunes before layers 0, 1 and 3
    return (n - 2, n // 2, n // 2, n // 4)


def _span(ids):
    return (ids == 127).int().argmax(-1)


def test_full_schedule_matches_model_logits_and_generate(llava, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    runner = PrunedRunner(llava, [n] * 4)
    logits, state = runner.prefill(ids, mask, pv)
    ref = llava(input_ids=ids, attention_mask=mask, pixel_values=pv, position_ids=positions_of(mask)).logits[:, -1]
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    assert state.cache.lengths == [ids.shape[1]] * 4
    assert all(torch.equal(k, torch.arange(n).expand(3, n)) for k in runner.kept_indices)
    got = runner.generate(ids, mask, pv, max_new_tokens=6, **EOS)
    hf = llava.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, max_new_tokens=6, do_sample=False, **EOS)
    assert torch.equal(got, hf[:, ids.shape[1]:])


def test_model_config_is_restored(llava, batch3):
    ids, mask, pv, _ = batch3
    before = llava.config.text_config._attn_implementation
    PrunedRunner(llava, _schedule(n_visual(llava)), WEIGHTS).prefill(ids, mask, pv)
    assert llava.config.text_config._attn_implementation == before
    assert not any("quota_probe" in layer.self_attn.__dict__ for layer in llava.model.language_model.layers)


def test_pruning_equals_masked_reference(llava, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    runner = PrunedRunner(llava, _schedule(n), WEIGHTS)
    logits, state = runner.prefill(ids, mask, pv)
    assert state.cache.lengths == [ids.shape[1] - n + k for k in _schedule(n)]
    runner.decode_step(logits.argmax(-1), state)  # one decode step appends one token to every layer
    assert state.cache.lengths == [ids.shape[1] - n + k + 1 for k in _schedule(n)]
    assert [v.shape[1] for v in state.key_valid] == state.cache.lengths
    alive = alive_masks(runner.kept_indices, _span(ids), n, ids.shape[1])
    with reference_attention(llava, alive):
        ref = llava(input_ids=ids, attention_mask=mask, pixel_values=pv, position_ids=positions_of(mask)).logits[:, -1]
        hf = llava.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, max_new_tokens=6, do_sample=False,
                            **EOS)
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    full = llava(input_ids=ids, attention_mask=mask, pixel_values=pv, position_ids=positions_of(mask)).logits[:, -1]
    assert (full - ref).abs().max() > 1e-3  # the pruning changes the output: the comparison is not vacuous
    got = runner.generate(ids, mask, pv, max_new_tokens=6, **EOS)
    assert torch.equal(got, hf[:, ids.shape[1]:])


def test_selection_follows_reference_signals(llava, batch3):
    """Kept indices equal top-k of signals computed independently from the masked reference's forward."""
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    schedule = _schedule(n)
    weights = {"attn_last": 1.0, "magnitude": 0.5}
    runner = PrunedRunner(llava, schedule, weights)
    runner.prefill(ids, mask, pv)
    span = _span(ids)
    alive = alive_masks(runner.kept_indices, span, n, ids.shape[1])
    cols = span[:, None] + torch.arange(n)[None]  # [B, N]
    for l in (1, 3):  # pruning points with a previous layer
        with reference_attention(llava, alive, record_layer=l - 1) as records:
            out = llava(input_ids=ids, attention_mask=mask, pixel_values=pv, position_ids=positions_of(mask),
                        output_hidden_states=True)
        prev = runner.kept_indices[l - 1]  # [B, k_{l-1}] alive before pruning at l
        vis = cols.gather(1, prev)  # sequence indices of those tokens
        probs = records[0][:, :, -1].mean(1)  # [B, S] last query, mean over heads
        signals = {
            "attn_last": probs.gather(1, vis),
            "magnitude": out.hidden_states[l].gather(1, vis[..., None].expand(-1, -1, 64)).norm(dim=-1),
        }
        kept_rel = select_topk(combine(signals, weights), schedule[l])
        assert torch.equal(prev.gather(1, kept_rel), runner.kept_indices[l])


def test_exact_counts_order_and_determinism(llava, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    schedule = (n, n - 3, 5, 0)
    runner = PrunedRunner(llava, schedule, {"attn_last": 1.0})
    runner.prefill(ids, mask, pv)
    first = [k.clone() for k in runner.kept_indices]
    for l, k in enumerate(schedule):
        assert first[l].shape == (3, k)
        assert bool((first[l][:, 1:] > first[l][:, :-1]).all())  # ascending, distinct
        if l:
            assert bool(torch.isin(first[l], first[l - 1]).all())  # dropped tokens stay dropped
    runner.prefill(ids, mask, pv)
    assert all(torch.equal(a, b) for a, b in zip(first, runner.kept_indices))


def test_constant_scores_keep_lowest_indices(llava, batch3, monkeypatch):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    runner = PrunedRunner(llava, (n - 5, n - 5, 4, 4), {"magnitude": 1.0})
    monkeypatch.setattr("quota.runtime.generate.activation_magnitude", lambda h: torch.ones(h.shape[:2]))
    runner.prefill(ids, mask, pv)
    assert torch.equal(runner.kept_indices[0], torch.arange(n - 5).expand(3, -1))
    assert torch.equal(runner.kept_indices[2], torch.arange(4).expand(3, -1))


def test_batch_equals_single(llava, batch3):
    ids, mask, pv, rows = batch3
    n = n_visual(llava)
    runner = PrunedRunner(llava, _schedule(n), {"attn_text": 1.0, "attn_last": 0.5, "outlier": 0.1})
    logits, _ = runner.prefill(ids, mask, pv)
    kept = [k.clone() for k in runner.kept_indices]
    tokens = runner.generate(ids, mask, pv, max_new_tokens=5)
    for i, row in enumerate(rows):
        one_ids, one_mask = left_pad([row])
        one_logits, _ = runner.prefill(one_ids, one_mask, pv[i : i + 1])
        for l in range(4):
            assert torch.equal(runner.kept_indices[l][0], kept[l][i]), (i, l)
        torch.testing.assert_close(one_logits[0], logits[i], rtol=1e-5, atol=1e-5)
        assert torch.equal(runner.generate(one_ids, one_mask, pv[i : i + 1], max_new_tokens=5)[0], tokens[i])


def test_eos_stops_and_pads(llava, batch3):
    ids, mask, pv, _ = batch3
    runner = PrunedRunner(llava, _schedule(n_visual(llava)), WEIGHTS)
    free = runner.generate(ids, mask, pv, max_new_tokens=6)
    eos = int(free[0, 1])
    got = runner.generate(ids, mask, pv, max_new_tokens=6, eos_token_id=eos, pad_token_id=0)
    first = (free == eos).int().argmax(1)
    for b in range(3):
        if bool((free[b] == eos).any()):
            f = int(first[b])
            assert torch.equal(got[b, : f + 1], free[b, : f + 1])
            assert bool((got[b, f + 1 :] == 0).all())


def test_invalid_inputs(llava, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    with pytest.raises(ValueError, match="non-increasing"):
        PrunedRunner(llava, (n, n - 1, n, n))
    with pytest.raises(ValueError, match="decoder layers"):
        PrunedRunner(llava, (n, n))
    with pytest.raises(ValueError, match="N = 16"):
        PrunedRunner(llava, (n + 1,) * 4).prefill(ids, mask, pv)
    with pytest.raises(ValueError, match="before layer 0"):
        PrunedRunner(llava, (n - 1,) * 4, {"attn_last": 1.0}).prefill(ids, mask, pv)
    right = torch.flip(mask, dims=[1])
    with pytest.raises(NotImplementedError, match="left-padded"):
        PrunedRunner(llava, (n,) * 4).prefill(ids, right, pv)


def test_vision_attention_prunes_at_any_layer_by_the_towers_ranking(llava, batch3):
    """vision_attn is computed once per image and ranks the alive tokens at every layer by their original
    index: pruning to k before layer 2 keeps the top k of the vision tower's attention."""
    from quota.models.registry import spec_for
    from quota.runtime.scoring import select_topk
    from quota.runtime.vision import vision_attention

    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    k = n // 3
    runner = PrunedRunner(llava, (n, n, k, k), {"vision_attn": 1.0})
    runner.prefill(ids, mask, pv)
    expected = select_topk(vision_attention(llava, spec_for(llava), pv), k)  # [B, k], ascending
    assert torch.equal(runner.kept_indices[1], torch.arange(n).expand(ids.shape[0], n))
    assert torch.equal(runner.kept_indices[2], expected) and torch.equal(runner.kept_indices[3], expected)
