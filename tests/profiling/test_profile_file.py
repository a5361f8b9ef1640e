import json

import numpy as np
import pytest

from quota.profiling.profile import Profile, ProfileError
from tests.synthetic_profile import synthetic_profile


def test_round_trip(tmp_path):
    p = synthetic_profile()
    q = Profile.load(p.save(tmp_path / "p.json"))
    assert q.grid == p.grid and np.array_equal(q.damage["kl"], p.damage["kl"])
    assert sorted(q.per_task) == ["counting", "reading"] and np.array_equal(q.costs["latency"], p.costs["latency"])


def corrupt(tmp_path, edit):
    d = synthetic_profile().to_dict()
    edit(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d).replace("NaN", "NaN"))
    return path


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda d: d["damage"]["kl"][2].__setitem__(3, float("nan")), r"damage.kl\[2\]\[3\] is nan"),
        (lambda d: d["costs"]["flops"][1].__setitem__(4, 0.0), "costs.flops is not non-decreasing .* layer 1"),
        (lambda d: d["costs"]["kv"][0].__setitem__(0, -1.0), r"costs.kv\[0\]\[0\] = -1.0 is negative"),
        (lambda d: d.__setitem__("grid", d["grid"][:-1]), "grid must lie"),
        (lambda d: d.__setitem__("version", 9), "version 9 is not supported"),
        (lambda d: d.pop("costs"), "missing field 'costs'"),
        (lambda d: d["damage"].__setitem__("kl", [[0.0]]), r"damage.kl has shape \[1, 1\]"),
    ],
)
def test_bad_profiles_name_field_and_value(tmp_path, edit, match):
    with pytest.raises(ProfileError, match=match):
        Profile.load(corrupt(tmp_path, edit))


def test_truncated_json(tmp_path):
    path = synthetic_profile().save(tmp_path / "p.json")
    path.write_text(path.read_text()[:100])
    with pytest.raises(ProfileError, match="not valid JSON"):
        Profile.load(path)


@pytest.mark.parametrize("name", ["testbed_cpu.json"])
def test_profiles_written_before_the_versioned_convention_still_load(name):
    """The shipped profiles carry ``schema``/``schema_version``; they load, and re-save under ``type``/``version``."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "profiles" / name
    assert "schema" in json.loads(path.read_text())
    profile = Profile.load(path)
    again = Profile.from_dict(profile.to_dict())
    assert again.to_dict()["type"] == "quota.profiling" and again.grid == profile.grid
    assert np.array_equal(again.damage["kl"], profile.damage["kl"])


@pytest.mark.parametrize(
    "edit,match",
    [(lambda d: d.__setitem__("score_weigths", {}), r"unknown field\(s\) \['score_weigths'\]"),
     (lambda d: d.__setitem__("score_weights", {"bogus": 1.0}), "score_weights.bogus: unknown score signal"),
     (lambda d: d.__setitem__("score_weights", {"attn_last": float("nan")}), "score_weights.attn_last = nan")],
)
def test_misspelled_fields_and_unknown_signals_are_refused(tmp_path, edit, match):
    with pytest.raises(ProfileError, match=match):
        Profile.load(corrupt(tmp_path, edit))
