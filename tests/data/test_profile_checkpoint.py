"""``quota profile --model DIR --data calib.jsonl``: a checkpoint folder profiled on the user's records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from quota.cli.main import main
from quota.data.profile import data_version, load_records, profile_checkpoint
from quota.models.checkpoint import checkpoint_hash, load_checkpoint
from quota.profiling.measure import ProfileSettings
from quota.profiling.profile import Profile
from quota.quant.config import QuantConfig
from tests.checkpoints import write_checkpoint
from tests.data.datasets import write_dataset

RTN = QuantConfig(impl="reference", weight_method="rtn", a_clip_search=False)
FAST = dict(grid_steps=4, batch_size=8, latency=False,
            score_candidates=[{"attn_last": 0.9, "magnitude": 0.1}, {"vision_attn": 0.9, "magnitude": 0.1}])


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _no_quantized_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("QUOTA_QUANT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    data = write_dataset(root / "data")
    return {f: write_checkpoint(f, root / f) for f in ("llava", "llava_next")}, data


def test_a_fixed_resolution_checkpoint_profiles_on_its_records(folders, tmp_path):
    ck, data = folders
    out = tmp_path / "llava.json"
    prof = profile_checkpoint(ck["llava"], data, RTN, ProfileSettings(**FAST), output=out, device="cpu")
    assert Profile.load(out).to_dict() == prof.to_dict()
    assert prof.model_id == "llava" and prof.model_hash == checkpoint_hash(ck["llava"])
    assert prof.n_visual_tokens == 16 and prof.grid == (0, 4, 8, 12, 16) and prof.n_layers == 2
    assert prof.data_version == data_version(data, load_records(data))
    assert np.asarray(prof.damage["kl"]).shape == (2, 5)
    from_layer = np.asarray(prof.extra["kl_prune_from_layer"])  # [L, G]: damage of pruning from layer l
    assert np.all(from_layer[:, -1] == 0) and from_layer[0, 0] > 0  # all tokens: none; none kept: some
    assert set(prof.per_task) == {"attribute", "counting", "existence", "reading", "spatial"}
    assert prof.score_search["candidates"][1]["weights"] == {"vision_attn": 0.9, "magnitude": 0.1}  # LLaVA-1.5 has it
    # the float checkpoint's answers came first: the KL to them, beyond what quantization alone costs
    teacher_from = np.asarray(prof.extra["kl_teacher_prune_from_layer"])
    assert np.allclose(np.asarray(prof.damage["kl_teacher"]).sum(axis=0), teacher_from[0])
    assert np.all(teacher_from[:, -1] == 0) and prof.extra["teacher"]["kl_all_tokens"] > 0
    plain = profile_checkpoint(ck["llava"], data, RTN, ProfileSettings(**FAST), device="cpu", teacher=False)
    assert "kl_teacher" not in plain.damage and np.allclose(plain.damage["kl"], prof.damage["kl"])


def test_a_dynamic_resolution_checkpoint_profiles_over_its_largest_image(folders):
    ck, data = folders
    loaded = load_checkpoint(ck["llava_next"])
    sizes = [loaded.visual_tokens((r_h, r_w)) for r_h, r_w in
             [(32, 32), (40, 64), (64, 40), (48, 48), (32, 48)]]  # the five images of write_dataset
    prof = profile_checkpoint(ck["llava_next"], data, RTN, ProfileSettings(**FAST), device="cpu")
    assert prof.n_visual_tokens == max(sizes) and "kl_teacher" in prof.damage
    assert [c["weights"] for c in prof.score_search["candidates"]] == [{"attn_last": 0.9, "magnitude": 0.1}]
    assert "vision_attn" in json.dumps(prof.score_search["skipped"])  # anyres tiles are not tokens: refused, said why


def test_a_folder_needs_data_and_the_testbed_refuses_it(folders, tmp_path, capsys):
    ck, data = folders
    assert main(["profile", "--model", str(ck["llava"]), "-o", str(tmp_path / "p.json")]) == 2
    assert "--data FILE" in capsys.readouterr().err
    assert main(["profile", "--data", str(data), "-o", str(tmp_path / "p.json")]) == 2
    assert "--data is for a checkpoint folder" in capsys.readouterr().err
    assert main(["profile", "--model", str(tmp_path / "nowhere"), "--data", str(data)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_bad_records_are_listed_by_line_before_anything_is_written(folders, tmp_path, capsys):
    ck, data = folders
    bad = tmp_path / "bad.jsonl"
    lines = data.read_text().splitlines()
    lines[1] = lines[1].replace('"answer": "3"', '"answer": ""')
    lines.append(json.dumps({"image": "nope.png", "question": "q?", "answer": "a"}))
    bad.write_text("\n".join(lines) + "\n")
    (tmp_path / "images").symlink_to(data.parent / "images")
    out = tmp_path / "p.json"
    assert main(["profile", "--model", str(ck["llava"]), "--data", str(bad), "-o", str(out), "--no-latency"]) == 2
    err = capsys.readouterr().err
    assert "line 2: empty answer" in err and "line 6: image file nope.png not found" in err
    assert not out.exists() and not list(tmp_path.glob("p.*partial*"))
