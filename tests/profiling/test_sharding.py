"""Sharding the profile grid: two gloo processes give the same result as one, and resume skips work."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from quota.profiling.sharding import run_sharded

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
    assert len(json.loads(next(tmp_path.glob("grid.rank0of1.partial.json")).read_text())) == 4
    recomputed = []

    def resumed(item):
        recomputed.append(item)
        return value(item)["damage"]

    out = run_sharded(ITEMS, resumed, stem, resume=True)
    assert len(out) == len(ITEMS) and out[json.dumps([2, 0])] == 3.0
    assert recomputed == ITEMS[4:]  # the four finished items are not computed again


SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch.distributed as dist
    from quota.profiling.sharding import init_from_env, run_shared, run_sharded, world
    assert init_from_env("gloo")
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
