"""Issue 22, R1: a resumed profile never mixes runs. ``quota profile`` is killed (SIGKILL) part way through
its grid; resuming it with another quantization config is refused in one line (exit status 2) before any
model is loaded, and ``--resume=recompute`` measures everything again under the new config. The testbed is
replaced by a tiny model (:mod:`tests.profiling.fake_testbed`); everything else is the real command."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from quota.cli.main import main
from quota.quant.config import QuantConfig
from tests.profiling import fake_testbed

REPO = Path(__file__).resolve().parents[2]
X = QuantConfig(weight_method="rtn", w_clip_search=False, a_clip_search=False, kv_group_size=16)
Y = X.replace(w_bits=8)


@pytest.fixture
def fake(monkeypatch):
    for module, name, value in fake_testbed.patches():
        monkeypatch.setattr(module, name, value)


def _args(folder: Path, quant: str, *extra: str) -> list[str]:
    return ["profile", "-o", str(folder / "a.json"), "--limit", "2", "--grid-steps", "1", "--no-latency",
            "--quant", str(folder / quant), "--batch-size", "1", "--device", "cpu", *extra]


def _killed_run(folder: Path, quant: str, kill_after: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "QUOTA_TEST_KILL_AFTER": str(kill_after), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tests.profiling.fake_testbed", *_args(folder, quant)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO)


def _grid_items(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("grid item")]


def test_killed_profile_refuses_a_resume_with_another_quant_and_recomputes_on_request(tmp_path, fake, capsys):
    (tmp_path / "X.json").write_text(json.dumps(X.to_dict()))
    (tmp_path / "Y.json").write_text(json.dumps(Y.to_dict()))
    killed = _killed_run(tmp_path, "X.json", kill_after=2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(_grid_items(killed.stderr)) == 2 and not (tmp_path / "a.json").exists()
    partial = json.loads((tmp_path / "a.rank0of1.partial.json").read_text())
    assert len(partial["items"]) == 2 and partial["settings"]["quant"]["w_bits"] == 4
    assert partial["settings"]["grid"] == [0, 16] and partial["settings"]["questions"] == 2

    assert main(_args(tmp_path, "Y.json", "--resume")) == 2
    err = capsys.readouterr().err
    assert err == ("quota profile: error: cannot resume: the partial results in a.rank0of1.partial.json were "
                   "measured with quant.w_bits=4, this run has 8 (rerun with --resume=recompute to discard them)\n")
    assert json.loads((tmp_path / "a.rank0of1.partial.json").read_text()) == partial  # refused, nothing touched
    more = _args(tmp_path, "X.json", "--resume")
    more[more.index("--limit") + 1] = "3"
    assert main(more) == 2
    err = capsys.readouterr().err
    assert "measured with questions=2, this run has 3" in err and "testbed loaded" not in err  # before loading
    finer = _args(tmp_path, "X.json", "--resume")
    finer[finer.index("--grid-steps") + 1] = "2"
    assert main(finer) == 2
    assert "measured with grid=[0, 16], this run has [0, 8, 16]" in capsys.readouterr().err

    assert main(_args(tmp_path, "Y.json", "--resume=recompute")) == 0
    err = capsys.readouterr().err
    assert len(_grid_items(err)) == 3  # all three items of the grid measured again, none taken from X's run
    profile = json.loads((tmp_path / "a.json").read_text())
    assert profile["quant"]["w_bits"] == 8 and not list(tmp_path.glob("*.partial.json"))


def test_resume_with_the_same_settings_measures_only_what_is_missing(tmp_path, fake, capsys):
    (tmp_path / "X.json").write_text(json.dumps(X.to_dict()))
    killed = _killed_run(tmp_path, "X.json", kill_after=1)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert main(_args(tmp_path, "X.json", "--resume")) == 0
    assert len(_grid_items(capsys.readouterr().err)) == 2  # item 1 came from the killed run
    assert json.loads((tmp_path / "a.json").read_text())["quant"]["w_bits"] == 4
