"""The runtime on the testbed architecture (SmolLM2 cut to two layers, 576 visual tokens, its prompt format)."""

import pytest
import torch

from quota.runtime.baselines import fastv
from quota.runtime.generate import PrunedRunner
from tests.runtime.reference import alive_masks, positions_of, reference_attention

pytestmark = pytest.mark.slow


def test_fastv_on_the_testbed_equals_masked_reference(small_testbed):
    from quota.testbed.model import IMAGE_TOKEN_ID, N_VISUAL_TOKENS, encode_batch

    model, tok = small_testbed
    batch = encode_batch(tok, ["How many red squares are there?", "Colour?"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pv = torch.randn(2, 3, 192, 192, generator=torch.Generator().manual_seed(0))
    plan = fastv(192, N_VISUAL_TOKENS, 2, k_layer=1, form="keep")
    runner = PrunedRunner.from_plan(model, plan)
    logits, state = runner.prefill(ids, mask, pv)
    assert state.cache.lengths == [ids.shape[1], ids.shape[1] - N_VISUAL_TOKENS + 192]
    span = (ids == IMAGE_TOKEN_ID).int().argmax(-1)
    with reference_attention(model, alive_masks(runner.kept_indices, span, N_VISUAL_TOKENS, ids.shape[1])):
        ref = model(input_ids=ids, attention_mask=mask, pixel_values=pv, position_ids=positions_of(mask)).logits[:, -1]
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-3)
