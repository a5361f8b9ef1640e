import json

from quota.cli.main import main


def test_e2e_bench_on_a_tiny_llava(tmp_path, capsys):
    assert main(["bench", "e2e", "--arch", "tiny-llava", "--batches", "1", "2", "--new-tokens", "4",
                 "--repeats", "1", "--budget", "0.5", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bench_e2e.json").read_text())["rows"]
    assert [(r["variant"].split(",")[0], r["batch"]) for r in rows] == [
        ("bf16", 1), ("bf16", 2), ("W4A4+KV4", 1), ("W4A4+KV4", 1), ("W4A4+KV4", 2), ("W4A4+KV4", 2)]
    full, pruned = rows[2], rows[3]
    assert full["schedule_mean"] == 16 and pruned["schedule_mean"] <= 8.5
    assert pruned["kv_cache_mib"] < full["kv_cache_mib"]  # fewer visual tokens in the caches
    assert all(r["ttft_ms"] > 0 and r["decode_tokens_per_s"] > 0 for r in rows)
    assert "TTFT ms" in capsys.readouterr().out
