import numpy as np
import pytest

from quota.profiling.profile import Profile
from quota.profiling.sensitivity import ScheduleDamage
from quota.profiling.additivity import check_additivity, predicted_damage, random_schedules
from tests.synthetic_profile import synthetic_profile


def test_random_schedules_are_feasible_distinct_and_seeded():
    p = synthetic_profile()
    s = random_schedules(p, 40, seed=1)
    assert len(set(s)) == 40 and s == random_schedules(p, 40, seed=1)
    for sched in s:
        assert list(sched) == sorted(sched, reverse=True) and all(k in p.grid for k in sched)
        assert 0.1 <= sum(sched) / (p.n_layers * p.n_visual_tokens) <= 0.6


class AdditiveMeter:
    """A stand-in for DamageMeter whose damage is the profile's prediction plus noise of a given size."""

    def __init__(self, profile, noise, seed=0):
        self.profile, self.noise, self.rng = profile, noise, np.random.default_rng(seed)

    def measure(self, schedule, n_visual):
        kl = predicted_damage(self.profile, schedule) + self.rng.normal(0, self.noise)
        return ScheduleDamage(kl, kl, {})


@pytest.mark.parametrize("noise,low,high", [(0.0, 0.999, 1.0), (100.0, -0.6, 0.6)])
def test_spearman_reflects_how_additive_the_measurements_are(noise, low, high):
    p = synthetic_profile()
    report = check_additivity(p, AdditiveMeter(p, noise), count=30)
    assert len(report.measured) == 30 and low <= report.spearman <= high


class TwoDamageMeter:
    """KL follows the profile's KL prediction; task loss runs against it (so the two rankings must differ)."""

    def __init__(self, profile):
        self.profile = profile

    def measure(self, schedule, n_visual):
        kl = predicted_damage(self.profile, schedule)
        return ScheduleDamage(kl, -kl, {})


def test_the_other_damage_is_ranked_on_the_same_measurements():
    from scipy.stats import spearmanr

    from quota.profiling.additivity import predictions

    p = synthetic_profile()
    report = check_additivity(p, TwoDamageMeter(p), count=12)
    assert set(report.others) == {"task_loss"}  # no teacher: no kl_teacher measured
    other = report.others["task_loss"]
    assert other["measured"] == [-m for m in report.measured]
    assert other["predicted"] == predictions(p, report.schedules, "task_loss")
    assert other["spearman"] == spearmanr(other["predicted"], other["measured"])[0]
    assert report.spearman > 0.99 and other["spearman"] != report.spearman
    assert set(report.to_dict()["others"]) == {"task_loss"}
    no_task = Profile.from_dict({**p.to_dict(), "damage": {"kl": p.damage["kl"].tolist()}})
    assert check_additivity(no_task, TwoDamageMeter(no_task), count=5).others is None
    with pytest.raises(ValueError, match="no 'kl_teacher' damage curve"):
        check_additivity(p, TwoDamageMeter(p), count=5, damage="kl_teacher")
    with_curve = Profile.from_dict({**p.to_dict(), "damage": {**{k: v.tolist() for k, v in p.damage.items()},
                                                              "kl_teacher": p.damage["kl"].tolist()}})
    with pytest.raises(ValueError, match="kl_teacher needs a teacher"):
        check_additivity(with_curve, TwoDamageMeter(with_curve), count=5, damage="kl_teacher")
