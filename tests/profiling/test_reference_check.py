"""The all-token reference of damage measurements is taken only once two successive passes agree."""

import pytest
import torch

from quota.profiling.sensitivity import (
    REFERENCE_TOLERANCE, CalibrationBatch, UnstableReferenceError, reference_digest, stable_reference,
)


def passes(*offsets: float):
    """A ``compute`` whose i-th call returns one ``[2, 3, 5]`` batch of log-probabilities shifted by ``offsets[i]``."""
    base = torch.log_softmax(torch.arange(30, dtype=torch.float32).view(2, 3, 5) / 7, -1)
    calls = iter(offsets)
    return lambda: [base + next(calls)]


def test_a_repeated_first_pass_is_used_after_two_passes():
    ref, check = stable_reference(passes(0.0, 0.0, 5.0))
    assert check == {"passes": 2, "first_pass_max_abs_diff": 0.0}
    assert torch.equal(ref[0], passes(0.0)()[0])


def test_a_first_pass_that_differs_is_dropped_when_the_next_two_agree():
    ref, check = stable_reference(passes(3.0, 0.0, REFERENCE_TOLERANCE / 2))
    assert check["passes"] == 3 and check["first_pass_max_abs_diff"] == pytest.approx(3.0)
    assert torch.allclose(ref[0], passes(REFERENCE_TOLERANCE / 2)()[0])


def test_a_reference_that_never_repeats_is_refused():
    with pytest.raises(UnstableReferenceError, match="does not repeat: passes 1-2 differ by up to 3 and passes 2-3 by 1"):
        stable_reference(passes(3.0, 0.0, 1.0))


def test_the_digest_sums_the_answer_tokens_log_likelihood_where_the_mask_is_on():
    logp = torch.log_softmax(torch.randn(2, 2, 4, generator=torch.Generator().manual_seed(0)), -1)  # [B, A, V]
    answers = torch.tensor([[1, 3], [2, 0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    batch = CalibrationBatch(torch.zeros(2, 1), torch.ones(2, 1), torch.zeros(2, 1), answers, mask, ["a", "b"])
    want = float(logp[0, 0, 1] + logp[0, 1, 3] + logp[1, 0, 2])
    assert reference_digest([logp], [batch]) == pytest.approx(want)
