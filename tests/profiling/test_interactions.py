"""Interaction terms between adjacent pruning points (issue 17 item 4, measurement side): the profiler measures
the two-step schedules of a subgrid when asked, stores ``J = measured - additive prediction`` interpolated over
the whole grid, the profile file carries it (version 2, only when present), and the additivity check ranks the
same schedules with and without it."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from scipy.interpolate import RegularGridInterpolator

from quota.profiling.additivity import check_additivity, predicted_damage
from quota.profiling.measure import ProfileSettings, profile_model
from quota.profiling.profile import Profile, ProfileError
from quota.profiling.damage_terms import interaction_subgrid, interaction_terms, per_layer_contributions
from quota.profiling.sensitivity import DamageMeter, ScheduleDamage, pair_items, two_step_schedule
from quota.quant.config import QuantConfig
from quota.quantize.gptq import one_cpu_thread
from tests.profiling.fake_testbed import N_VISUAL, fake_batches
from tests.runtime.models import tiny_llava
from tests.synthetic_profile import synthetic_profile


class Question:
    def __init__(self, task):
        self.task = task


QUANT = QuantConfig(weight_method="rtn", a_clip_search=False)


@pytest.fixture(scope="module")
def measured():
    """A tiny model (3 layers, 16 visual tokens) profiled on grid [0, 4, 8, 12, 16] with subgrid [0, 8, 16]."""
    with one_cpu_thread(torch.device("cpu")):  # one thread for the module's tests, restored after
        model = tiny_llava(layers=3)
        batches = fake_batches(None, [Question("counting"), Question("reading")], 2, "cpu", torch.float32)
        settings = ProfileSettings(grid_steps=4, batch_size=2, latency=False, interaction_steps=2,
                                   score_candidates=[{"attn_last": 0.9, "magnitude": 0.1}], pre_llm_candidates=[])
        prof = profile_model(model, batches, QUANT, model_id="t", model_hash="0" * 64, data_version="v",
                             settings=settings)
        yield model, batches, prof


def test_subgrid_is_even_deterministic_and_keeps_both_ends():
    assert interaction_subgrid(5, 2) == (0, 2, 4)
    assert interaction_subgrid(33, 8) == (0, 4, 8, 12, 16, 20, 24, 28, 32)
    assert interaction_subgrid(5, 100) == (0, 1, 2, 3, 4)
    sub = interaction_subgrid(20, 3)
    assert sub[0] == 0 and sub[-1] == 19 and len(sub) == 4
    with pytest.raises(ValueError, match="interaction steps must be a positive integer"):
        interaction_subgrid(5, 0)


def test_cost_is_layers_minus_one_times_pairs_below_n():
    grid = tuple(range(0, 33))
    for steps, m in ((2, 3), (8, 9)):
        assert len(pair_items(30, grid, interaction_subgrid(33, steps))) == 29 * (m - 1) * (m - 2) // 2


def test_profile_measures_interactions_with_the_right_shape_and_zeros(measured):
    _, _, prof = measured
    assert prof.grid == (0, 4, 8, 12, 16)
    j = prof.interactions
    assert j.shape == (2, 5, 5) and np.isfinite(j).all()
    assert np.all(np.triu(j[0]) == 0) and np.all(np.triu(j[1]) == 0)  # a <= b: exactly 0
    assert np.all(j[:, 4, :] == 0)  # grid[a] = N: the prune-from-next-layer schedule, additive by construction
    assert prof.extra["interaction_subgrid"] == [0, 8, 16]
    assert prof.timing["interaction_schedules"] == 2 and len(prof.extra["kl_two_step"]) == 2
    assert prof.timing["schedules_measured"] == 3 * 4 + 1 + 2
    assert np.any(j != 0)


def test_j_at_subgrid_points_is_the_measured_two_step_damage_less_the_additive_prediction(measured):
    model, batches, prof = measured
    meter = DamageMeter(model, batches, prof.scoring, reference_tokens=N_VISUAL)  # as the profile measured
    from_layer = np.asarray(prof.extra["kl_prune_from_layer"])
    h = prof.damage["kl"]
    assert np.allclose(h, per_layer_contributions(from_layer))
    for layer in (0, 1):
        schedule = two_step_schedule(3, N_VISUAL, layer, 8, 0)
        direct = meter.measure(schedule, N_VISUAL).kl
        expected = direct - (h[layer, 2] + from_layer[layer + 1, 0])
        assert prof.interactions[layer, 2, 0] == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_between_subgrid_points_j_is_bilinear(measured):
    _, _, prof = measured
    sub = np.array([0, 2, 4])
    for layer in (0, 1):
        corners = np.zeros((3, 3))
        corners[2 - 1, 0] = prof.interactions[layer, 2, 0]
        interp = RegularGridInterpolator((sub, sub), corners)
        a, b = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
        expected = interp(np.stack([a, b], -1).reshape(-1, 2)).reshape(5, 5) * (a > b)
        assert np.allclose(prof.interactions[layer], expected)
    assert prof.interactions[0, 1, 0] == pytest.approx(prof.interactions[0, 2, 0] / 2)
    assert prof.interactions[0, 3, 1] == pytest.approx(prof.interactions[0, 2, 0] / 4)


def test_interaction_terms_on_a_known_nonadditive_damage():
    """D(s) = additive part + c * [k_l - k_{l+1}] at the step: J is that step's term at the subgrid points."""
    grid = np.array([0, 4, 8, 12, 16])
    from_layer = np.array([[3.0, 2.0, 1.0, 0.5, 0.0], [2.0, 1.5, 0.7, 0.2, 0.0], [1.0, 0.6, 0.3, 0.1, 0.0]])
    h = per_layer_contributions(from_layer)
    sub = (0, 2, 4)
    measured = {(l, a, b): h[l, a] + from_layer[l + 1, b] + 0.01 * (grid[a] - grid[b]) * (l + 1)
                for _, l, a, b in pair_items(3, tuple(grid), sub)}
    j = interaction_terms(from_layer, measured, sub)
    assert j[0, 2, 0] == pytest.approx(0.08) and j[1, 2, 0] == pytest.approx(0.16)
    assert j[1, 1, 0] == pytest.approx(0.08) and j[1, 2, 1] == pytest.approx(0.08)  # halfway to the 0 diagonal


def test_round_trip_and_old_files_unchanged(tmp_path, measured):
    _, _, prof = measured
    q = Profile.load(prof.save(tmp_path / "p.json"))
    assert np.array_equal(q.interactions, prof.interactions)
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["version"] == 3 and "pre_llm_weights" not in data and "selection_search" in data  # searched
    plain = synthetic_profile()
    d = plain.to_dict()
    assert d["version"] == 1 and "interactions" not in d and Profile.from_dict(d).interactions is None
    assert json.dumps(Profile.from_dict(d).to_dict()) == json.dumps(d)


@pytest.mark.parametrize("edit,match", [
    (lambda j: j[:-1].tolist(), r"^profile: interactions has shape \[4, 17, 17\], expected \[5, 17, 17\]"),
    (lambda j: j.__setitem__((1, 3, 2), float("nan")) or j.tolist(), r"^profile: interactions\[1\]\[3\]\[2\] is nan"),
    (lambda j: "x", r"^profile: interactions is not a numeric array$"),
])
def test_bad_interactions_are_refused_in_one_line(edit, match):
    d = synthetic_profile().to_dict()
    d["version"] = 2
    d["interactions"] = edit(np.zeros((5, 17, 17)))
    with pytest.raises(ProfileError, match=match) as err:
        Profile.from_dict(d)
    assert "\n" not in str(err.value)


def test_version_1_files_may_not_carry_interactions():
    d = synthetic_profile().to_dict()
    d["interactions"] = np.zeros((5, 17, 17)).tolist()
    with pytest.raises(ProfileError, match=r"unknown field\(s\) \['interactions'\] \(version 1\)"):
        Profile.from_dict(d)


def with_interactions(seed=0, scale=0.3):
    p = synthetic_profile()
    g = len(p.grid)
    j = np.random.default_rng(seed).normal(scale=scale, size=(p.n_layers - 1, g, g)) * np.tril(np.ones((g, g)), -1)
    return dataclasses.replace(p, interactions=j)


class PairMeter:
    """Damage = the additive prediction plus the interaction terms (a stand-in for DamageMeter)."""

    def __init__(self, profile):
        self.profile = profile

    def measure(self, schedule, n_visual):
        kl = predicted_damage(self.profile, schedule, "kl", interactions=True)
        return ScheduleDamage(kl, kl, {})


def test_additivity_reports_both_spearman_values_on_the_same_schedules():
    p = with_interactions()
    report = check_additivity(p, PairMeter(p), count=30)
    plain = check_additivity(dataclasses.replace(p, interactions=None), PairMeter(p), count=30)
    assert report.schedules == plain.schedules and report.measured == plain.measured
    assert report.spearman == pytest.approx(plain.spearman)
    assert report.spearman_with_interactions == pytest.approx(1.0) and report.spearman < 1.0
    d = report.to_dict()
    assert len(d["predicted_with_interactions"]) == 30 and "spearman_with_interactions" in d
    assert "spearman_with_interactions" not in plain.to_dict()
    task = check_additivity(p, PairMeter(p), count=5, damage="task_loss")
    assert task.spearman_with_interactions is None
