"""A folder written by ``quota quantize`` works where a checkpoint folder does: ``quota profile --model QDIR`` and
``quota eval --model QDIR`` run it as saved (no calibration again), under the source model's identity."""

from __future__ import annotations

import json

import pytest
import torch

from quota.cli.main import main
from quota.models.checkpoint import checkpoint_hash
from quota.quantize.gptq import one_cpu_thread
from quota.recipe import PruningPlan, Recipe
from tests.checkpoints import write_checkpoint
from tests.data.datasets import write_dataset


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_cmds")
    folder = write_checkpoint("llava", root / "llava")
    data = write_dataset(root / "data")
    Recipe.from_plan(PruningPlan("half", (16, 8)), 16, model_id="llava").save(root / "r.json")
    with one_cpu_thread(torch.device("cpu")):
        assert main(["quantize", "--model", str(folder), "--quant", "rtn", "--recipe", str(root / "r.json"),
                     "--out", str(root / "q"), "--device", "cpu"]) == 0
    return folder, data, root / "q", root


def test_profile_a_saved_checkpoint_under_the_source_identity(saved, tmp_path, capsys):
    folder, data, qdir, _ = saved
    (tmp_path / "weights.json").write_text('{"attn_last": 1.0}')
    out = tmp_path / "p.json"
    assert main(["profile", "--model", str(qdir), "--data", str(data), "--grid-steps", "4", "--no-latency",
                 "--batch-size", "8", "--device", "cpu", "-o", str(out)]) == 0, capsys.readouterr().err
    prof = json.loads(out.read_text())
    assert prof["model_id"] == "llava" and prof["model_hash"] == checkpoint_hash(folder)
    assert prof["quant"]["weight_method"] == "rtn"
    assert main(["profile", "--model", str(qdir), "--data", str(data), "--quant", str(tmp_path / "weights.json"),
                 "-o", str(tmp_path / "p2.json")]) == 2
    assert "already quantized" in capsys.readouterr().err


def test_eval_a_saved_checkpoint_with_its_stored_recipe(saved, tmp_path, capsys):
    _, data, qdir, root = saved
    out = tmp_path / "e.json"
    assert main(["eval", "--model", str(qdir), "--data", str(data), "--device", "cpu", "--max-new-tokens", "2",
                 "-o", str(out)]) == 0, capsys.readouterr().err
    meta = json.loads(out.read_text())["meta"]
    assert meta["schedule"] == [16, 8] and meta["quant"] == "W4A4-KV4" and meta["recipe"] == "stored"
    assert main(["eval", "--model", str(qdir), "--data", str(data), "--recipe", str(root / "r.json")]) == 2
    assert "saved quantized checkpoint" in capsys.readouterr().err


def test_apply_a_recipe_to_a_checkpoint_folder(saved, tmp_path, capsys):
    from quota.quant.config import QuantConfig

    folder, data, _, root = saved
    Recipe.from_plan(PruningPlan("half", (16, 8)), 16, QuantConfig(), model_id="llava").save(tmp_path / "r.json")
    assert main(["apply", str(tmp_path / "r.json"), "--model", str(folder), "--data", str(data), "--questions", "3",
                 "--quant", "rtn", "--device", "cpu", "--json"]) == 0
    import json as _json

    summary = _json.loads(capsys.readouterr().out)
    assert summary["questions"] == 3 and summary["kept_per_layer_last_batch"] == [16, 8]
    assert summary["quant"] == "W4A4-KV4" and len(summary["answers"]) == 3
    assert main(["apply", str(tmp_path / "r.json"), "--model", str(folder), "--questions", "3"]) == 2
    assert "--data FILE" in capsys.readouterr().err
    assert main(["apply", str(tmp_path / "r.json"), "--model", str(folder), "--data", str(data)]) == 2
    assert "--calibration-data FILE" in capsys.readouterr().err
