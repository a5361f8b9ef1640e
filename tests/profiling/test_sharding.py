"""Sharding the profile grid: two gloo processes give the same result as one, and resume skips work."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from quota.atomic import ResumeMismatchError
from quota.profiling.sharding import check_partials, run_sharded

ITEMS = [(layer, k) for layer in range(3) for k in (0, 4, 8, 16)]


def value(item):
    layer, k = item
    return {"damage": (layer + 1) * (16 - k) ** 2 / 256, "rank_pid": os.getpid()}


def test_single_process_and_resume(tmp_path):
    calls = []

    def compute(item):
        calls.append(item)
        if len(calls) == 5:
            raise KeyboardInterrupt  # interrupted after four finished items
        return value(item)["damage"]

    stem = tmp_path / "grid"
    try:
        run_sharded(ITEMS, compute, stem)
    except KeyboardInterrupt:
        pass
    assert len(json.loads(next(tmp_path.glob("grid.rank0of1.partial.json")).read_text())["items"]) == 4
    recomputed = []

    def resumed(item):
        recomputed.append(item)
        return value(item)["damage"]

    out = run_sharded(ITEMS, resumed, stem, resume=True)
    assert len(out) == len(ITEMS) and out[json.dumps([2, 0])] == 3.0
    assert recomputed == ITEMS[4:]  # the four finished items are not computed again


SETTINGS = {"model_hash": "ab" * 32, "quant": {"w_bits": 4, "a_bits": 4}, "grid": [0, 4, 8, 16]}


def _interrupted_run(stem, settings, finished=4):
    """A run of ITEMS under ``settings`` interrupted after ``finished`` items (its partial file stays)."""
    calls = []

    def compute(item):
        if len(calls) == finished:
            raise KeyboardInterrupt
        calls.append(item)
        return value(item)["damage"]

    with pytest.raises(KeyboardInterrupt):
        run_sharded(ITEMS, compute, stem, settings=settings)


def test_partial_files_record_their_settings_and_other_settings_are_refused_in_one_line(tmp_path):
    stem = tmp_path / "grid"
    _interrupted_run(stem, SETTINGS)
    stored = json.loads((tmp_path / "grid.rank0of1.partial.json").read_text())
    assert stored["settings"] == SETTINGS and len(stored["items"]) == 4
    other = {**SETTINGS, "quant": {"w_bits": 8, "a_bits": 4}}
    computed = []
    with pytest.raises(ResumeMismatchError) as err:
        run_sharded(ITEMS, lambda it: computed.append(it), stem, resume=True, settings=other)
    assert str(err.value) == ("cannot resume: the partial results in grid.rank0of1.partial.json were measured with "
                              "quant.w_bits=4, this run has 8 (rerun with --resume=recompute to discard them)")
    assert computed == [] and err.value.field == "quant.w_bits"
    with pytest.raises(ResumeMismatchError, match="grid="):  # the early check compares what is known
        check_partials(stem, {"grid": [0, 576]}, "strict")
    check_partials(stem, {"model_hash": SETTINGS["model_hash"]}, True)  # a subset that matches passes
    check_partials(stem, other, "recompute")  # recompute never refuses


def test_recompute_discards_other_settings_and_strict_resume_reuses_matching_ones(tmp_path):
    stem = tmp_path / "grid"
    _interrupted_run(stem, SETTINGS)
    recomputed = []

    def compute(item):
        recomputed.append(item)
        return -1.0

    other = {**SETTINGS, "grid": [0, 8, 16]}
    out = run_sharded(ITEMS, compute, stem, resume="recompute", settings=other)
    assert recomputed == ITEMS and set(out.values()) == {-1.0}  # nothing of the other settings is reused
    stored = json.loads((tmp_path / "grid.rank0of1.partial.json").read_text())
    assert stored["settings"] == other
    again = []
    out = run_sharded(ITEMS, lambda it: again.append(it), stem, resume=True, settings=other)
    assert again == [] and set(out.values()) == {-1.0}


def test_partials_of_another_world_size_and_of_the_first_format_are_judged_too(tmp_path):
    stem = tmp_path / "grid"
    stale = tmp_path / "grid.rank1of2.partial.json"
    stale.write_text(json.dumps({"type": "quota.partial", "version": 2, "settings": {**SETTINGS, "device": "gpu"},
                                 "items": {json.dumps([0, 0]): 99.0}}))
    with pytest.raises(ResumeMismatchError, match=r"grid\.rank1of2\.partial\.json were measured with device=gpu, this run has no device"):
        run_sharded(ITEMS, lambda it: 0.0, stem, resume=True, settings={**SETTINGS})
    out = run_sharded(ITEMS, lambda it: 0.0, stem, resume="recompute", settings=SETTINGS)
    assert out[json.dumps([0, 0])] == 0.0 and not stale.exists()  # discarded, not reused
    first_format = tmp_path / "old.rank0of1.partial.json"
    first_format.write_text(json.dumps({json.dumps([0, 0]): 5.0}))
    with pytest.raises(ResumeMismatchError, match="record no settings"):
        run_sharded(ITEMS, lambda it: 0.0, tmp_path / "old", resume=True, settings=SETTINGS)
    # a caller that keeps no record (settings=None) resumes from anything, as before
    assert run_sharded(ITEMS, lambda it: 0.0, tmp_path / "old", resume=True)[json.dumps([0, 0])] == 5.0


SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch.distributed as dist
    from quota.profiling.sharding import RanksDisagreeError, check_ranks_agree, init_from_env, run_shared, run_sharded, world
    assert init_from_env("gloo")
    check_ranks_agree(100.0 + 1e-5 * world()[0], "a shared value")  # within the relative tolerance
    try:
        check_ranks_agree(1.0 + world()[0], "a per-rank value")
        message = ""
    except RanksDisagreeError as err:
        message = str(err)
    json.dump({"message": message}, open(sys.argv[2] + f".agree{world()[0]}", "w"))
    items = [(layer, k) for layer in range(3) for k in (0, 4, 8, 16)]
    out = run_sharded(items, lambda it: {"damage": (it[0] + 1) * (16 - it[1]) ** 2 / 256, "rank": world()[0]},
                      sys.argv[1])
    if world()[0] == 0:
        json.dump(out, open(sys.argv[2], "w"))
    shared = run_shared(items[:5], lambda it: {"value": it[0] * 100 + it[1], "rank": world()[0]})
    json.dump(shared, open(sys.argv[2] + f".shared{world()[0]}", "w"))
    dist.destroy_process_group()
    """
)


def test_two_gloo_processes_gather_on_rank0(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    result = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531", str(script),
         str(tmp_path / "grid"), str(result)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(result.read_text())
    assert len(out) == len(ITEMS)
    assert {v["rank"] for v in out.values()} == {0, 1}  # both ranks did work
    for item in ITEMS:
        assert out[json.dumps(list(item))]["damage"] == value(item)["damage"]
    assert len(list(tmp_path.glob("grid.rank*of2.partial.json"))) == 2
    # run_shared: every rank holds every result, computed once, shared out over both ranks
    shared = [json.loads(Path(f"{result}.shared{r}").read_text()) for r in (0, 1)]
    assert shared[0] == shared[1] and len(shared[0]) == 5
    assert {v["rank"] for v in shared[0].values()} == {0, 1}
    assert [v["value"] for v in shared[0].values()] == [layer * 100 + k for layer, k in ITEMS[:5]]
    # check_ranks_agree: values within the tolerance pass; different ones raise on every rank, naming each value
    for r in (0, 1):
        message = json.loads(Path(f"{result}.agree{r}").read_text())["message"]
        assert "a per-rank value" in message and "rank 0: 1," in message and "rank 1: 2;" in message


def test_recompute_removes_a_ranks_own_stale_file_even_when_it_has_nothing_left_to_compute(tmp_path):
    stem = tmp_path / "grid"
    done = {json.dumps(list(it)): 1.0 for it in ITEMS}
    (tmp_path / "grid.rank0of2.partial.json").write_text(json.dumps(
        {"type": "quota.partial", "version": 2, "settings": SETTINGS, "items": done}))  # everything, matching
    own = tmp_path / "grid.rank0of1.partial.json"
    own.write_text(json.dumps({"type": "quota.partial", "version": 2, "settings": {**SETTINGS, "grid": [0]},
                               "items": {}}))
    out = run_sharded(ITEMS, lambda it: 0.0, stem, resume="recompute", settings=SETTINGS)
    assert set(out.values()) == {1.0} and not own.exists()
