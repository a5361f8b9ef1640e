"""The comparison suite on the CPU: the two-layer testbed, one question per task, bf16 and low-bit rows."""

import json

from quota.eval.suite import SuiteRow, run_suite, suite_rows
from quota.quant.config import QuantConfig


def test_rows_and_names():
    rows = suite_rows(["fastv", "recipe:r.json"], [64, 192])
    names = [r.name for r in rows]
    assert names[:2] == ["bf16/all", "lowbit/all"]
    assert "bf16/fastv@64" in names and "lowbit/fastv@192" in names and "lowbit/recipe:r.json" in names
    assert SuiteRow("bf16", "fastv", 64.0).file_stem == "bf16__fastv_at_64"


def test_suite_runs_writes_and_resumes(small_testbed, tmp_path):
    model, tok = small_testbed
    quant = QuantConfig(weight_method="rtn", a_clip_search=False, kv_group_size=64)
    kw = dict(plans=["random"], budgets=[64], quant=quant, limit=1, tasks=["counting"], batch_size=2,
              device="cpu", model=model, tokenizer=tok)
    results = run_suite(tmp_path, **kw)
    assert set(results) == {"bf16/all", "lowbit/all", "bf16/random@64", "lowbit/random@64"}
    assert results["bf16/random@64"].meta["equivalent_tokens"] == 64
    assert "ret. vs bf16" in (tmp_path / "suite.md").read_text()
    stored = json.loads((tmp_path / "lowbit__random_at_64.json").read_text())
    assert stored["meta"]["quant"] == "W4A4-KV4"
    again = run_suite(tmp_path, resume=True, **kw)  # every row is read back, nothing recomputed
    assert again["lowbit/random@64"].average == results["lowbit/random@64"].average


def test_rows_of_one_precision_still_end_with_both_references():
    names = [r.name for r in suite_rows(["fastv"], [64], precisions=["lowbit"])]
    assert names == ["lowbit/all", "lowbit/fastv@64", "bf16/all"]


def test_report_only_writes_the_table_of_present_rows_and_names_the_missing(small_testbed, tmp_path):
    model, tok = small_testbed
    kw = dict(plans=["random"], budgets=[64], limit=1, tasks=["counting"], batch_size=2, device="cpu",
              model=model, tokenizer=tok, precisions=["bf16"], calibration_limit=2)
    run_suite(tmp_path, **kw)  # the low-bit reference row comes too, calibrated on 2 questions
    (tmp_path / "suite.md").unlink()
    report = run_suite(tmp_path, plans=["random", "fastv"], budgets=[64], precisions=["bf16"], report_only=True)
    assert set(report) == {"bf16/all", "bf16/random@64", "lowbit/all"}  # both references are always rows
    text = (tmp_path / "suite.md").read_text()
    assert "bf16/random@64" in text and "Not measured (1 row): bf16/fastv@64." in text
    assert set(report["bf16/random@64"].meta["retention"]) == {"bf16_all_tokens", "lowbit_all_tokens"}


def test_suite_calibrates_on_the_first_n_questions_and_refuses_a_bad_count(small_testbed, tmp_path, monkeypatch):
    import pytest

    import quota.eval.suite as suite

    model, tok = small_testbed
    seen = []
    real = suite.calibration_inputs

    def spy(tokenizer, device, dtype, batch_size=32, questions=None):
        seen.append(len(questions))
        return real(tokenizer, device, dtype, batch_size, questions)

    monkeypatch.setattr(suite, "calibration_inputs", spy)
    kw = dict(plans=[], budgets=[], quant=QuantConfig(kv_group_size=64), limit=1, tasks=["counting"], batch_size=2,
              device="cpu", model=model, tokenizer=tok, precisions=["lowbit"])
    with pytest.raises(ValueError, match="--calibration"):
        run_suite(tmp_path, calibration_limit=0, **kw)
    assert not list(tmp_path.glob("*.json"))  # refused before any row was written
    results = run_suite(tmp_path, calibration_limit=2, **kw)
    assert seen == [2] and results["lowbit/all"].meta["calibration_questions"] == 2
