"""M-RoPE (tiny random Qwen2-VL): positions, the full schedule, pruning against the masked reference,
and batch invariance."""

import pytest
import torch

from quota.runtime.generate import PrunedRunner
from quota.runtime.positions import decode_positions, mrope_positions, next_position
from tests.runtime.models import QWEN_IMAGE, qwen_inputs, tiny_qwen2vl
from tests.runtime.reference import alive_masks, reference_attention

GRID = 8
N = GRID * GRID // 4
EOS = {"eos_token_id": 2, "pad_token_id": 0}


@pytest.fixture(scope="module")
def qwen():
    return tiny_qwen2vl()


@pytest.fixture(scope="module")
def inputs():
    return qwen_inputs(GRID, [(2, 4), (0, 2), (3, 7)])


def _model_positions(model, ids, mask, thw):
    mm = (ids == QWEN_IMAGE).int()
    try:
        pos, _ = model.model.get_rope_index(ids, mm_token_type_ids=mm, image_grid_thw=thw, attention_mask=mask)
    except TypeError:  # older transformers: no mm_token_type_ids
        pos, _ = model.model.get_rope_index(ids, image_grid_thw=thw, attention_mask=mask)
    return pos.masked_fill((mask == 0)[None], 0)


def _model_kwargs(ids, mask, pv, thw):
    return dict(input_ids=ids, attention_mask=mask, pixel_values=pv, image_grid_thw=thw,
                mm_token_type_ids=(ids == QWEN_IMAGE).int())


def test_positions_match_the_model(qwen, inputs):
    ids, mask, _, thw, _ = inputs
    span = (ids == QWEN_IMAGE).int().argmax(-1)
    ours = mrope_positions(mask, span, N, (GRID // 2, GRID // 2))
    assert torch.equal(ours, _model_positions(qwen, ids, mask, thw))
    step2 = decode_positions(next_position(ours), 2, 3)  # [3, B, 1]
    valid_len = mask.sum(-1)
    assert torch.equal(step2[0, :, 0], valid_len - N + GRID // 2 + 2)


def test_full_schedule_matches_model(qwen, inputs):
    ids, mask, pv, thw, _ = inputs
    runner = PrunedRunner(qwen, [N] * 4)
    logits, _ = runner.prefill(ids, mask, pv, image_grid_thw=thw)
    pos = _model_positions(qwen, ids, mask, thw)
    ref = qwen(**_model_kwargs(ids, mask, pv, thw), position_ids=pos).logits[:, -1]
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    hf = qwen.generate(**_model_kwargs(ids, mask, pv, thw), max_new_tokens=5, do_sample=False, **EOS)
    assert torch.equal(runner.generate(ids, mask, pv, 5, image_grid_thw=thw, **EOS), hf[:, ids.shape[1]:])


def test_pruning_equals_masked_reference_and_batch(qwen, inputs):
    ids, mask, pv, thw, rows = inputs
    schedule = (N - 2, 8, 8, 3)
    runner = PrunedRunner(qwen, schedule, {"attn_text": 1.0, "magnitude": 0.5})
    logits, _ = runner.prefill(ids, mask, pv, image_grid_thw=thw)
    kept = [k.clone() for k in runner.kept_indices]
    span = (ids == QWEN_IMAGE).int().argmax(-1)
    pos = _model_positions(qwen, ids, mask, thw)
    with reference_attention(qwen, alive_masks(kept, span, N, ids.shape[1])):
        ref = qwen(**_model_kwargs(ids, mask, pv, thw), position_ids=pos).logits[:, -1]
        hf = qwen.generate(**_model_kwargs(ids, mask, pv, thw), max_new_tokens=5, do_sample=False, **EOS)
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    tokens = runner.generate(ids, mask, pv, 5, image_grid_thw=thw, **EOS)
    assert torch.equal(tokens, hf[:, ids.shape[1]:])
    per_image = GRID * GRID
    for i, row in enumerate(rows):
        one = torch.tensor([row])
        one_logits, _ = runner.prefill(one, torch.ones_like(one), pv[i * per_image : (i + 1) * per_image],
                                       image_grid_thw=thw[i : i + 1])
        assert all(torch.equal(runner.kept_indices[l][0], kept[l][i]) for l in range(4))
        torch.testing.assert_close(one_logits[0], logits[i], rtol=1e-5, atol=1e-5)
