"""The full-precision teacher behind ``kl_teacher``: KL(teacher || pruned) - KL(teacher || all tokens), measured by
the DamageMeter and profiled as its own curve (the testbed architecture cut to two decoder layers, on the CPU)."""

import numpy as np
import pytest
import torch

from quota.profiling.measure import ProfileSettings, profile_model
from quota.profiling.sensitivity import DamageMeter, answer_logprobs, damage, teacher_answers
from quota.quant.config import QuantConfig
from quota.quantize.model import quantize_model
from quota.runtime.generate import PrunedRunner
from quota.recipe import ScoringSpec
from quota.testbed.batches import make_batches

SCORING = {"attn_last": 1.0}
RTN = QuantConfig(weight_method="rtn", a_clip_search=False)


@pytest.fixture
def setup(small_testbed):
    from quota.testbed.splits import calibration_split

    model, tok = small_testbed
    batches = make_batches(tok, calibration_split()[:3], 2, "cpu", torch.float32)  # two batches: 2 + 1 questions
    teacher = teacher_answers(model, batches, 576)  # before quantizing: the float model's answers
    return model, quantize_model(model, RTN, None), batches, teacher


def test_kl_teacher_is_the_extra_distance_to_the_teacher(setup):
    model, qmodel, batches, teacher = setup
    assert [t.shape[0] for t in teacher] == [2, 1]
    meter = DamageMeter(qmodel, batches, SCORING, teacher=teacher)
    schedule = (576, 144)
    got = meter.measure(schedule, 576)
    runner = PrunedRunner.from_scoring(qmodel, schedule, ScoringSpec(SCORING))
    full = PrunedRunner.from_scoring(qmodel, (576, 576), ScoringSpec(SCORING))
    by_hand = np.concatenate([damage(t, answer_logprobs(runner, b), b)[0] - damage(t, answer_logprobs(full, b), b)[0]
                              for t, b in zip(teacher, batches)])
    assert got.kl_teacher == pytest.approx(float(by_hand.mean()), abs=1e-5)
    assert meter.measure((576, 576), 576).kl_teacher == pytest.approx(0.0, abs=1e-6)
    own = DamageMeter(qmodel, batches, SCORING)  # the meter's own reference as the teacher: kl_teacher is kl
    own_teacher = DamageMeter(qmodel, batches, SCORING, teacher=own.reference(576, 2))
    d = own_teacher.measure(schedule, 576)
    assert d.kl_teacher == pytest.approx(d.kl, abs=1e-5)
    assert DamageMeter(qmodel, batches, SCORING).measure(schedule, 576).kl_teacher is None


def test_a_profile_with_a_teacher_has_the_kl_teacher_curve(setup, tmp_path):
    _, qmodel, batches, teacher = setup
    settings = ProfileSettings(grid_steps=2, batch_size=2, latency=False, score_candidates=[{"attn_last": 1.0}])
    prof = profile_model(qmodel, batches, RTN, model_id="t", model_hash="0" * 64, data_version="v",
                         settings=settings, output=tmp_path / "p.json", teacher=teacher)
    from_layer = np.asarray(prof.extra["kl_teacher_prune_from_layer"])  # [L, G]
    assert from_layer.shape == (2, 3) and np.allclose(prof.damage["kl_teacher"].sum(axis=0), from_layer[0])
    meter = DamageMeter(qmodel, batches, prof.scoring, teacher=teacher)
    assert from_layer[1, 1] == pytest.approx(meter.measure((576, 288), 576).kl_teacher, abs=1e-5)
    gap = np.concatenate([damage(t, r, b)[0] for t, r, b in zip(teacher, meter.reference(576, 2), batches)])
    assert prof.extra["teacher"]["kl_all_tokens"] == pytest.approx(float(gap.mean()), abs=1e-5)
    assert prof.extra["teacher"]["kl_all_tokens"] > 0  # round-to-nearest W4A4 moves the answers
    plain = profile_model(qmodel, batches, RTN, model_id="t", model_hash="0" * 64, data_version="v",
                          settings=settings)
    assert "kl_teacher" not in plain.damage and "teacher" not in plain.extra


def test_a_teacher_needs_one_answer_tensor_per_batch(setup):
    _, qmodel, batches, teacher = setup
    with pytest.raises(ValueError, match="one answer tensor per batch"):
        DamageMeter(qmodel, batches, SCORING, teacher=teacher[:1])
    with pytest.raises(ValueError, match="no teacher"):
        DamageMeter(qmodel, batches, SCORING).teacher_gap()
