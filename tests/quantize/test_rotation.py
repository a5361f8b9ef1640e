import copy

import pytest
import torch

from quota.models.registry import spec_for
from quota.quantize.rotation import fold_norms, rotate_language_model
from tests.tiny_models import tiny_llama, tiny_qwen2


@pytest.mark.parametrize("make", [tiny_llama, tiny_qwen2])
@pytest.mark.parametrize("mix", [True, False])
def test_rotated_model_equals_original_in_full_precision(make, mix):
    model = make(dtype=torch.float64)
    ids = torch.randint(0, 128, (2, 13))
    ref = model(ids).logits
    rotated = copy.deepcopy(model)
    rotate_language_model(rotated, spec_for(rotated), seed=1, mix_blocks=mix)
    out = rotated(ids).logits
    # RMSNorm computes in float32 inside transformers, so float32 rounding is the floor here
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5), float((out - ref).abs().max())
    assert not torch.allclose(rotated.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_rotation_unties_lm_head_and_resets_norms():
    model = tiny_llama(tie=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    rotate_language_model(model, spec_for(model))
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert not model.config.tie_word_embeddings
    for layer in model.model.layers:
        assert torch.equal(layer.input_layernorm.weight, torch.ones_like(layer.input_layernorm.weight))


def test_fold_norms_alone_preserves_logits():
    model = tiny_llama(dtype=torch.float64, tie=False)
    ids = torch.randint(0, 128, (1, 9))
    ref = model(ids).logits
    fold_norms(model, spec_for(model))
    assert torch.allclose(model(ids).logits, ref, atol=1e-5)


def test_rotation_spreads_massive_activations(smollm2):
    """On SmolLM2 the rotated model matches the original, and the residual stream's outlier channel is gone."""
    model, tok = smollm2
    ids = tok("The capital of France is Paris. The capital of Italy is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = model(ids, output_hidden_states=True)
        rotated = copy.deepcopy(model)
        rotate_language_model(rotated, spec_for(rotated), seed=0)
        out = rotated(ids, output_hidden_states=True)
    rel = (out.logits - ref.logits).norm() / ref.logits.norm()
    assert rel < 1e-4, float(rel)
    assert torch.equal(out.logits[0, -1].argmax(), ref.logits[0, -1].argmax())
    h_ref, h_rot = ref.hidden_states[10][0], out.hidden_states[10][0]  # [S, 576]
    peak = lambda h: float((h.abs().amax(-1) / h.pow(2).mean(-1).sqrt()).max())  # noqa: E731
    assert peak(h_ref) > 15  # massive activation: one channel towers over the token's RMS
    assert peak(h_rot) < peak(h_ref) / 4


def test_rotated_vlm_sees_the_same_image():
    """The visual tokens replace image-token embeddings inside the rotated stream, so the projector's output
    must be rotated too: with images, the rotated VLM gives the logits of the original."""
    from quota.quantize.rotation import RotatedOutput
    from tests.runtime.models import left_pad, n_visual, pixels, prompt, tiny_llava

    model = tiny_llava().double()
    n = n_visual(model)
    ids, mask = left_pad([prompt(n, 2, 3, 0), prompt(n, 1, 1, 1)])
    pv = pixels(2, seed=5).double()
    ref = model(input_ids=ids, attention_mask=mask, pixel_values=pv).logits
    other = model(input_ids=ids, attention_mask=mask, pixel_values=pixels(2, seed=6).double()).logits
    rotated = copy.deepcopy(model)
    info = rotate_language_model(rotated, spec_for(rotated), seed=3)
    assert info.projector_rotated and isinstance(rotated.model.multi_modal_projector, RotatedOutput)
    out = rotated(input_ids=ids, attention_mask=mask, pixel_values=pv).logits
    err = float((out - ref).abs().max())
    assert err < 1e-4 < float((other - ref).abs().max()), err  # float32 rotation of the visual tokens
    with pytest.raises(ValueError, match="twice"):
        rotate_language_model(rotated, spec_for(rotated))
