"""``quota profile --interactions S`` on the tiny stand-in testbed: the two-step schedules run through the same
sharded runner as the grid (each reported as a grid item), the profile carries ``interactions`` [L-1, G, G], and a
bad S is refused in one line. Without the option the profile has no such field (as before)."""

import json
from pathlib import Path

import pytest

from quota.cli.main import main
from quota.quant.config import QuantConfig
from tests.profiling import fake_testbed

X = QuantConfig(weight_method="rtn", w_clip_search=False, a_clip_search=False, kv_group_size=16)


@pytest.fixture
def fake(monkeypatch):
    for module, name, value in fake_testbed.patches():
        monkeypatch.setattr(module, name, value)


def _args(folder: Path, *extra: str) -> list[str]:
    (folder / "X.json").write_text(json.dumps(X.to_dict()))
    return ["profile", "-o", str(folder / "a.json"), "--limit", "2", "--grid-steps", "2", "--no-latency",
            "--quant", str(folder / "X.json"), "--batch-size", "1", "--device", "cpu", *extra]


def test_profile_with_interactions(tmp_path, fake, capsys):
    assert main(_args(tmp_path, "--interactions", "2")) == 0
    err = capsys.readouterr().err
    items = [line for line in err.splitlines() if line.startswith("grid item")]
    assert len(items) == 3 * 2 + 2  # 3 layers x keep counts 0, 8; then (8, 0) at layers 0 and 1
    assert items[-2:] == ["grid item ['pair', 0, 1, 0]", "grid item ['pair', 1, 1, 0]"]
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["version"] == 3 and len(data["interactions"]) == 2  # its selection search makes it 3
    assert all(len(row) == 3 and all(len(r) == 3 for r in row) for row in data["interactions"])
    assert data["extra"]["interaction_subgrid"] == [0, 8, 16] and data["timing"]["interaction_schedules"] == 2
    assert not list(tmp_path.glob("*.partial.json"))


def test_profile_without_interactions_has_no_such_field(tmp_path, fake, capsys):
    assert main(_args(tmp_path)) == 0
    data = json.loads((tmp_path / "a.json").read_text())
    assert "interactions" not in data and "interaction_steps" not in json.dumps(data) and "interaction_subgrid" not in data["extra"]


@pytest.mark.parametrize("value", ["0", "-3"])
def test_bad_interaction_steps_are_refused_in_one_line(tmp_path, fake, capsys, value):
    assert main(_args(tmp_path, "--interactions", value)) == 2
    err = capsys.readouterr().err
    assert err == f"quota profile: error: --interactions must be a positive integer (subgrid steps), got {value}\n"


class Killed(BaseException):
    """Stands for the process being killed: nothing catches it."""


def test_a_run_killed_among_the_two_step_schedules_resumes_with_only_the_rest(tmp_path, fake, capsys, monkeypatch):
    import quota.profiling.measure as measure

    counting = measure.run_sharded

    def dies_at_the_last_pair(items, compute, *args, **kwargs):
        def wrapped(item):
            if tuple(item) == ("pair", 1, 1, 0):
                raise Killed
            return compute(item)
        return counting(items, wrapped, *args, **kwargs)

    args = _args(tmp_path, "--interactions", "2")
    monkeypatch.setattr(measure, "run_sharded", dies_at_the_last_pair)
    with pytest.raises(Killed):
        main(args)
    assert not (tmp_path / "a.json").exists()
    partial = json.loads((tmp_path / "a.rank0of1.partial.json").read_text())
    assert len(partial["items"]) == 7 and partial["settings"]["interaction_steps"] == 2  # the grid's kept too
    capsys.readouterr()
    monkeypatch.setattr(measure, "run_sharded", counting)
    assert main(args + ["--resume"]) == 0
    redone = [line for line in capsys.readouterr().err.splitlines() if line.startswith("grid item")]
    assert redone == ["grid item ['pair', 1, 1, 0]"]
    assert len(json.loads((tmp_path / "a.json").read_text())["interactions"]) == 2


def test_selections_choose_the_candidates_searched_and_a_bad_name_is_refused(tmp_path, fake, capsys):
    # the stand-in testbed searches (topk, topk+merge2); --selections picks among them, in the order given
    assert main(_args(tmp_path, "--selections", "topk+merge2,topk")) == 0
    data = json.loads((tmp_path / "a.json").read_text())
    searched = [(c["selection"], c["merge"], c["merge_rule"]) for c in data["selection_search"]["candidates"]]
    assert searched == [("topk", 2, "context"), ("topk", 0, "context")]
    for bad in ("topk,dpp", "topk,topk"):
        assert main(_args(tmp_path, "--selections", bad)) == 2
        err = capsys.readouterr().err.splitlines()[-1]
        assert err.startswith("quota profile: error: --selections: ")
        assert "choose distinct names among topk, topk+merge2" in err
