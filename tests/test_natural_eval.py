"""``quota eval --data-version natural``: results and suite rows record their data version, and a resumed suite never
mixes rows of two data versions (checked on row files and the command line; no model is run)."""

import json

import pytest

import quota.eval.suite as suite
from quota.atomic import ResumeMismatchError
from quota.eval.harness import summarize
from quota.eval.suite import SuiteRow, run_suite
from quota.quant.config import QuantConfig
from quota.testbed.splits import NATURAL, STRESS, test_split

GPTQ = QuantConfig(kv_group_size=64, w_clip_search=False, a_clip_search=False, rotate=False)


def _write_row(folder, row: SuiteRow, version: str | None, model_hash: str = "ab" * 32) -> None:
    questions = test_split("counting", 1, version)
    result = summarize(questions, ["0"], {"row": row.name})
    settings = suite.row_settings(row, suite.suite_settings(model_hash, questions, "cpu", GPTQ, 256, version))
    (folder / f"{row.file_stem}.json").write_text(json.dumps(suite.row_document(result, settings)))


def test_results_record_the_data_version_of_their_questions():
    assert summarize(test_split("counting", 1), ["0"]).data_version == STRESS
    assert summarize(test_split("counting", 1, "natural"), ["0"]).data_version == NATURAL
    settings = suite.suite_settings("ab" * 32, test_split("counting", 1, "natural"), "cpu", GPTQ, 256, "natural")
    assert settings["common"]["data_version"] == NATURAL
    assert suite.suite_settings("ab" * 32, [], "cpu", GPTQ, 256)["common"]["data_version"] == STRESS


def test_a_resume_never_mixes_rows_of_two_data_versions(tmp_path):
    rows = [SuiteRow("bf16", "all"), SuiteRow("lowbit", "all")]
    for row in rows:
        _write_row(tmp_path, row, "stress")
    natural = suite.suite_settings("ab" * 32, test_split("counting", 1, "natural"), "cpu", GPTQ, 256, "natural")
    with pytest.raises(ResumeMismatchError, match="data_version"):
        suite.reusable_rows(tmp_path, rows, natural, "strict")
    assert suite.reusable_rows(tmp_path, rows, natural, "recompute") == {}  # evaluated again, never reused
    stress = suite.suite_settings("ab" * 32, test_split("counting", 1), "cpu", GPTQ, 256)
    assert set(suite.reusable_rows(tmp_path, rows, stress, "strict")) == {"bf16/all", "lowbit/all"}
    _write_row(tmp_path, SuiteRow("bf16", "fastv", 64.0), "natural")
    with pytest.raises(ResumeMismatchError, match="data_version"):  # nor does a report
        run_suite(tmp_path, plans=["fastv"], budgets=[64], precisions=["bf16"], report_only=True)


def test_cli_data_version_reaches_the_suite_before_loading(tmp_path, monkeypatch, capsys):
    from quota.cli.main import main
    from quota.testbed import model as testbed

    def no_load(*args, **kwargs):
        raise AssertionError("the testbed was loaded before the settings were checked")

    monkeypatch.setattr(testbed, "load", no_load)
    _write_row(tmp_path, SuiteRow("bf16", "all"), "stress", model_hash=testbed.model_hash())
    argv = ["eval", "--suite", str(tmp_path), "--plans", "random", "--budgets", "64", "--tasks", "counting",
            "--limit", "1", "--device", "cpu", "--precisions", "bf16", "--resume", "--data-version", "natural"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "data_version" in err and NATURAL in err


def test_cli_eval_passes_the_data_version(monkeypatch):
    import quota.eval.run as run
    from quota.cli.main import main

    seen = {}

    def fake_evaluate(*args, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(run, "evaluate", fake_evaluate)
    with pytest.raises(SystemExit):
        main(["eval", "--data-version", "natural", "--limit", "1", "--device", "cpu"])
    assert seen["version"] == "natural"
