"""The runtime's input checks: each malformed input is one ValueError naming the argument and its shape."""

import pytest
import torch

from quota.runtime.apply import PrunedModel
from quota.runtime.generate import PrunedRunner
from quota.runtime.masks import check_prompt
from quota.runtime.positions import InputError, NotSupportedError, PaddingError
from tests.runtime.models import n_visual, pixels, prompt

PAD = 0


def _runner(llava, pruned: bool = True) -> PrunedRunner:
    n = n_visual(llava)
    return PrunedRunner(llava, (n, n // 2, n // 2, n // 4) if pruned else (n,) * 4, {"attn_last": 1.0, "magnitude": 0.5})


def _right_pad(rows, pad_id=PAD):
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def test_right_padding_with_a_mask_is_one_value_error(llava, batch3):
    _, _, pv, rows = batch3
    ids, mask = _right_pad(rows)
    with pytest.raises(ValueError, match=r"attention_mask rows \[0, 1\] end with 0: inputs must be left-padded"):
        _runner(llava).prefill(ids, mask, pv)
    with pytest.raises(NotSupportedError):  # still a NotSupportedError for callers that caught that before
        _runner(llava).prefill(ids, mask, pv)


def test_right_padding_without_a_mask_is_caught_by_the_pad_id(llava, batch3):
    """Without a mask, a row ending in the pad id looks right-padded: refused, where it used to answer wrongly."""
    _, _, pv, rows = batch3
    ids, _ = _right_pad(rows)
    runner = _runner(llava)
    with pytest.raises(PaddingError, match=r"input_ids rows \[0, 1\] end with the pad token id 0"):
        runner.generate(ids, None, pv, max_new_tokens=2, pad_token_id=PAD)
    llava.config.text_config.pad_token_id = PAD  # the model's own pad id is used when generate is given none
    try:
        with pytest.raises(PaddingError, match="looks like right padding"):
            runner.prefill(ids, None, pv)
        with pytest.raises(PaddingError, match="looks like right padding"):
            PrunedModel(llava, runner).generate(ids, pixel_values=pv, max_new_tokens=2)
    finally:
        llava.config.text_config.pad_token_id = None


def test_left_padding_without_a_mask_is_refused_when_rows_differ(llava, batch3):
    ids, mask, pv, _ = batch3
    with pytest.raises(PaddingError, match=r"rows start with \[5, 10, 0\] pad tokens \(id 0\) but no attention_mask"):
        _runner(llava).generate(ids, None, pv, max_new_tokens=1, pad_token_id=PAD)


def test_unpadded_batch_without_a_mask_equals_the_masked_one(llava):
    """Rows of one length need no mask: the all-ones mask is taken and the answer is the masked one's."""
    n = n_visual(llava)
    ids = torch.tensor([prompt(n, 3, 4, 0), prompt(n, 3, 4, 1)])
    pv = pixels(2, seed=1)
    runner = _runner(llava)
    got = runner.generate(ids, None, pv, max_new_tokens=3, pad_token_id=PAD)
    ref = runner.generate(ids, torch.ones_like(ids), pv, max_new_tokens=3, pad_token_id=PAD)
    assert torch.equal(got, ref) and got.shape == (2, 3)


def test_a_mask_of_the_wrong_shape_names_both_shapes(llava, batch3):
    ids, mask, pv, _ = batch3
    runner = _runner(llava)
    with pytest.raises(InputError, match=r"attention_mask must have input_ids' shape \[B, S\] = \(3, 29\), got \(3, 28\)"):
        runner.prefill(ids, mask[:, 1:], pv)
    with pytest.raises(InputError, match=r"got \(29,\)"):
        runner.generate(ids, mask[0], pv, max_new_tokens=2)
    with pytest.raises(InputError, match=r"only 0 and 1 \[B, S\], got values \[2\]"):
        runner.prefill(ids, mask * 2, pv)


def test_empty_or_misshapen_input_ids(llava, batch3):
    ids, mask, pv, _ = batch3
    runner = _runner(llava)
    with pytest.raises(InputError, match=r"input_ids must be \[B, S\] with B >= 1 and S >= 1, got shape \(0, 29\)"):
        runner.prefill(ids[:0], mask[:0], pv[:0])
    with pytest.raises(InputError, match=r"got shape \(3, 0\)"):
        runner.generate(ids[:, :0], mask[:, :0], pv)
    with pytest.raises(InputError, match=r"got shape \(29,\)"):
        runner.prefill(ids[0], mask[0], pv[:1])
    with pytest.raises(InputError, match="integer tensor"):
        runner.prefill(ids.float(), mask, pv)
    with pytest.raises(InputError, match=r"pixel_values must hold one image per prompt, \[B, C, H, W\] with B = 3"):
        runner.prefill(ids, mask, pv[:2])


def test_max_new_tokens_must_be_a_non_negative_integer(llava, batch3):
    ids, mask, pv, _ = batch3
    runner = _runner(llava)
    for bad in (-1, 2.0, True, None):
        with pytest.raises(InputError, match=f"max_new_tokens must be an integer >= 0, got {bad!r}"):
            runner.generate(ids, mask, pv, max_new_tokens=bad)
    runner.kept_indices = None
    assert runner.generate(ids, mask, pv, max_new_tokens=0).shape == (3, 0)
    assert runner.kept_indices is None  # 0 new tokens runs nothing
    out = PrunedModel(llava, runner).generate(ids, mask, pv, max_new_tokens=0)
    assert torch.equal(out, ids)
    with pytest.raises(InputError, match="end with 0"):  # the inputs are still checked
        runner.generate(ids, torch.flip(mask, dims=[1]), pv, max_new_tokens=0)


def test_check_prompt_accepts_what_it_cannot_tell_from_text():
    """Without a pad id, or with rows that all start alike, a batch is taken as unpadded (documented)."""
    ids = torch.tensor([[0, 5, 6], [0, 7, 8]])
    assert torch.equal(check_prompt(ids, None, None), torch.ones_like(ids))
    assert torch.equal(check_prompt(ids, None, 0), torch.ones_like(ids))  # both rows start with one pad id
    ids = torch.tensor([[5, 6, 0]])
    assert torch.equal(check_prompt(ids, torch.ones_like(ids), 0), torch.ones_like(ids))  # a mask overrides the guess
    with pytest.raises(PaddingError):
        check_prompt(ids, None, 0)
    bool_mask = torch.tensor([[False, True, True]])
    assert check_prompt(ids, bool_mask, 0) is bool_mask
