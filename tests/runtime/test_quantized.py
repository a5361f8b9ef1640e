"""The runtime on top of quantize_model: W4A4 linears (QuantLinear), KV4 inside attention, rotation."""

import pytest
import torch

from quota.quant.config import QuantConfig
from quota.quantize.linear import QuantLinear
from quota.quantize.model import quantize_model
from quota.runtime.generate import PrunedRunner
from quota.runtime.scoring import activation_quantizer_of
from tests.runtime.models import n_visual, tiny_plans
from tests.runtime.reference import alive_masks, positions_of, reference_attention

EOS = {"eos_token_id": 2, "pad_token_id": 0}


@pytest.fixture(scope="module")
def quantized(llava, batch3):
    ids, mask, pv, _ = batch3
    calib = [{"input_ids": ids, "attention_mask": mask, "pixel_values": pv}]
    return quantize_model(llava, QuantConfig(kv_group_size=16), calib)


def test_full_schedule_matches_quantized_model(quantized, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(quantized)
    runner = PrunedRunner(quantized, [n] * 4)
    logits, _ = runner.prefill(ids, mask, pv)
    ref = quantized(input_ids=ids, attention_mask=mask, pixel_values=pv, position_ids=positions_of(mask)).logits[:, -1]
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)
    hf = quantized.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, max_new_tokens=5, do_sample=False,
                            **EOS)
    assert torch.equal(runner.generate(ids, mask, pv, max_new_tokens=5, **EOS), hf[:, ids.shape[1]:])


def test_pruned_quantized_equals_masked_reference(quantized, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(quantized)
    layer = quantized.model.language_model.layers[1]
    assert isinstance(layer.self_attn.q_proj, QuantLinear) and layer.self_attn.quota_kv.bits == 4
    assert activation_quantizer_of(layer.self_attn.q_proj)[0] == 4
    runner = PrunedRunner(quantized, (n, n // 2, n // 2, 3), {"attn_last": 1.0, "risk": 0.5, "outlier": 0.25})
    logits, _ = runner.prefill(ids, mask, pv)
    span = (ids == 127).int().argmax(-1)
    with reference_attention(quantized, alive_masks(runner.kept_indices, span, n, ids.shape[1])):
        out = quantized(input_ids=ids, attention_mask=mask, pixel_values=pv, position_ids=positions_of(mask))
        ref = out.logits[:, -1]
        hf = quantized.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, max_new_tokens=5,
                                do_sample=False, **EOS)
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(runner.generate(ids, mask, pv, max_new_tokens=5, **EOS), hf[:, ids.shape[1]:])


def test_quantized_selection_follows_reference_signals(quantized, batch3):
    """attn_last (after the KV quantizer) and risk (the deployed q_proj quantizer), computed from the masked
    reference's forward, reproduce the runner's kept indices."""
    from quota.quant.quantizers import fake_quantize_activation
    from quota.runtime.scoring import combine, select_topk

    ids, mask, pv, _ = batch3
    n = n_visual(quantized)
    schedule, weights = (n, n // 2, n // 2, 3), {"attn_last": 1.0, "risk": 0.5}
    runner = PrunedRunner(quantized, schedule, weights)
    runner.prefill(ids, mask, pv)
    span = (ids == 127).int().argmax(-1)
    alive = alive_masks(runner.kept_indices, span, n, ids.shape[1])
    cols = span[:, None] + torch.arange(n)[None]
    for l in (1, 3):
        with reference_attention(quantized, alive, record_layer=l - 1) as records:
            out = quantized(input_ids=ids, attention_mask=mask, pixel_values=pv, position_ids=positions_of(mask),
                            output_hidden_states=True)
        prev = runner.kept_indices[l - 1]
        vis = cols.gather(1, prev)
        layer = quantized.model.language_model.layers[l]
        x = layer.input_layernorm(out.hidden_states[l].gather(1, vis[..., None].expand(-1, -1, 64)))
        q = layer.self_attn.q_proj
        risk = (fake_quantize_activation(x, q.a_bits, q.a_clip_ratio) - x).norm(dim=-1) / x.norm(dim=-1)
        signals = {"attn_last": records[0][:, :, -1].mean(1).gather(1, vis), "risk": risk}
        assert torch.equal(prev.gather(1, select_topk(combine(signals, weights), schedule[l])), runner.kept_indices[l])


def test_baselines_run_on_the_quantized_model(quantized, batch3):
    ids, mask, pv, _ = batch3
    for plan in tiny_plans(n_visual(quantized)):
        runner = PrunedRunner.from_plan(quantized, plan)
        assert runner.generate(ids, mask, pv, max_new_tokens=2).shape == (3, 2)
        assert [k.shape[1] for k in runner.kept_indices] == list(plan.schedule), plan.name
