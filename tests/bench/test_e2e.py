import json

from quota.cli.main import main


def test_e2e_bench_on_a_tiny_llava(tmp_path, capsys):
    assert main(["bench", "e2e", "--arch", "tiny-llava", "--batches", "1", "2", "--new-tokens", "4",
                 "--repeats", "1", "--budget", "0.5", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bench_e2e_tiny-llava.json").read_text())["rows"]
    assert [(r["variant"].split(",")[0], r["batch"]) for r in rows] == [
        ("bf16", 1), ("bf16", 2), ("W4A4+KV4", 1), ("W4A4+KV4", 1), ("W4A4+KV4", 2), ("W4A4+KV4", 2)]
    full, pruned = rows[2], rows[3]
    assert full["schedule_mean"] == 16 and pruned["schedule_mean"] <= 8.5
    assert pruned["kv_cache_mib"] < full["kv_cache_mib"]  # fewer visual tokens in the caches
    for r in rows:  # the prompt's cache, then 3 more tokens per layer (4 new tokens, the last never written)
        assert 0 < r["kv_prompt_mib"] < r["kv_cache_mib"]
    assert pruned["kv_prompt_mib"] / full["kv_prompt_mib"] < pruned["kv_cache_mib"] / full["kv_cache_mib"]
    assert all(r["ttft_ms"] > 0 and r["decode_tokens_per_s"] > 0 for r in rows)
    assert all(0 < r["vision_ms"] < r["ttft_ms"] for r in rows)  # the image encoder is a part of the prefill
    for r in rows:  # each row's ratio to the bf16 all-token row of its batch
        base = next(x for x in rows if x["batch"] == r["batch"] and x["variant"].startswith("bf16"))
        assert r["ttft_vs_bf16"] == r["ttft_ms"] / base["ttft_ms"]
        assert r["decode_vs_bf16"] == r["decode_tokens_per_s"] / base["decode_tokens_per_s"]
    captured = capsys.readouterr()
    assert "TTFT ms" in captured.out


def test_e2e_bench_on_a_cpu_says_its_timings_mean_nothing_for_a_gpu(tmp_path, capsys, monkeypatch):
    import torch

    from quota.bench.e2e import CPU_NOTE

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "e2e", "--arch", "tiny-llava", "--batches", "1", "--new-tokens", "4", "--repeats", "1",
                 "--eager", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.count(CPU_NOTE) == 1 and "say nothing about speed on a GPU" in CPU_NOTE
    assert "nan" not in captured.out + captured.err
    assert "peak n/a," in captured.err  # the per-row progress lines
    rows = [line for line in captured.out.splitlines() if line.startswith("| bf16")]
    assert rows and all(line.split(" | ")[8] == "n/a" for line in rows)  # the peak GiB column
    # ratios against the bf16 row of the batch ("-" against FP8: no FP8 row on a CPU), and the image encoder's share
    assert all(line.split(" | ")[4] == "1.00x / -" and line.split(" | ")[6] == "1.00x / -" for line in rows)
    assert all(line.split(" | ")[7].endswith("%)") for line in rows)
    md = (tmp_path / "bench_e2e_tiny-llava.md").read_text()
    assert CPU_NOTE in md
    saved = json.loads((tmp_path / "bench_e2e_tiny-llava.json").read_text())["rows"]
    assert all(r["peak_memory_gib"] is None for r in saved)  # JSON has no NaN


def test_e2e_bench_on_a_tiny_qwen2_vl(tmp_path):
    assert main(["bench", "e2e", "--arch", "tiny-qwen2-vl", "--batches", "2", "--new-tokens", "5",
                 "--repeats", "1", "--budget", "0.5", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench_e2e_tiny-qwen2-vl.json").read_text())
    assert result["arch"] == "tiny-qwen2-vl"
    full, pruned = result["rows"][1], result["rows"][2]
    assert full["schedule_mean"] == 16 and pruned["schedule_mean"] <= 8.5
    assert pruned["kv_cache_mib"] < full["kv_cache_mib"]


def test_qwen2_vl_7b_config_matches_the_published_numbers():
    from quota.bench.e2e import VISUAL_TOKENS, qwen2_vl_7b_config

    c = qwen2_vl_7b_config()
    t, v = c.text_config, c.vision_config
    assert (t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads) == (
        3584, 18944, 28, 28, 4)
    assert (v.depth, v.embed_dim, v.patch_size, v.spatial_merge_size) == (32, 1280, 14, 2)
    assert VISUAL_TOKENS["qwen2-vl-7b"] == 576


def test_resample_schedule_keeps_ratios_by_relative_depth():
    import pytest

    from quota.bench.e2e import resample_schedule

    src = [576, 576, 432, 288, 144, 72, 0]
    out = resample_schedule(src, 14, 16, 576)
    assert len(out) == 14 and out[:4] == [16, 16, 16, 16] and out[-2:] == [0, 0]
    assert all(a >= b for a, b in zip(out, out[1:]))
    assert resample_schedule(src, 7, 576, 576) == src
    with pytest.raises(ValueError, match="outside|lie in"):
        resample_schedule([600], 4, 16, 576)


def test_e2e_bench_takes_a_testbed_recipe(tmp_path):
    recipe = tmp_path / "recipe.json"
    assert main(["solve", "--budget", "0.3", "--solver", "dp", "-o", str(recipe)]) == 0
    assert main(["bench", "e2e", "--arch", "tiny-llava", "--batches", "1", "--new-tokens", "4", "--eager",
                 "--repeats", "1", "--recipe", str(recipe), "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bench_e2e_tiny-llava.json").read_text())["rows"]
    assert rows[1]["schedule_mean"] == 16 and rows[2]["schedule_mean"] < 16 * 0.5


def test_e2e_bench_takes_a_checkpoint_folders_architecture(tmp_path, capsys):
    from tests.checkpoints import write_checkpoint

    from quota.recipe import PruningPlan, Recipe

    folder = write_checkpoint("llava", tmp_path / "ck")
    Recipe.from_plan(PruningPlan("half", (16, 8)), 16).save(tmp_path / "r.json")  # its two layers
    assert main(["bench", "e2e", "--model", str(folder), "--batches", "1", "--new-tokens", "4", "--repeats", "1",
                 "--prompt-tokens", "4", "--out", str(tmp_path), "--eager", "--recipe", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "bench_e2e_ck.json").read_text())["rows"]
    assert [r["schedule_mean"] for r in rows] == [16.0, 16.0, 12.0]  # the folder's N: (32 px / 8 px patches)^2
    idefics = write_checkpoint("idefics3", tmp_path / "idefics")
    assert main(["bench", "e2e", "--model", str(idefics), "--batches", "1"]) == 2
    assert "builds speed inputs for llava, qwen2_vl" in capsys.readouterr().err
