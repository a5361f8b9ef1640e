"""The comparison suite on the CPU: the two-layer testbed, one or two questions per task, bf16 and low-bit rows
(round-to-nearest, or GPTQ without the clipping searches, which are the slow part of calibrating, and without
the rotation). Rows record
their settings: a resume never mixes rows of other settings (issue 22, R1), and row files never collide."""

import json

import pytest

import quota.eval.suite as suite
from quota.atomic import ResumeMismatchError
from quota.eval.harness import summarize
from quota.eval.suite import SuiteRow, run_suite, suite_rows
from quota.quant.config import QuantConfig
from quota.testbed.splits import test_split

# cheap configs: the suite's bookkeeping is under test here, not the quality of the quantization
RTN = QuantConfig(weight_method="rtn", w_clip_search=False, a_clip_search=False, rotate=False, kv_group_size=64)
GPTQ = QuantConfig(kv_group_size=64, w_clip_search=False, a_clip_search=False, rotate=False)  # still calibrated


def test_rows_and_names():
    rows = suite_rows(["fastv", "recipe:r.json"], [64, 192])
    names = [r.name for r in rows]
    assert names[:2] == ["bf16/all", "lowbit/all"]
    assert "bf16/fastv@64" in names and "lowbit/fastv@192" in names and "lowbit/recipe:r.json" in names
    stem = SuiteRow("bf16", "fastv", 64.0).file_stem
    assert stem.startswith("bf16__fastv_at_64-") and len(stem) == len("bf16__fastv_at_64-") + 10
    assert SuiteRow("bf16", "fastv", 64.0).legacy_file_stem == "bf16__fastv_at_64"


def test_row_files_never_collide_and_are_plain_names():
    rows = [SuiteRow("lowbit", "recipe:a/b.json"), SuiteRow("lowbit", "recipe:a__b.json"),
            SuiteRow("lowbit", "recipe:a_b.json"), SuiteRow("bf16", "fastv", 64.0), SuiteRow("bf16", "fastv", 64.5),
            SuiteRow("lowbit", "recipe:../x y/r.json")]
    assert rows[0].legacy_file_stem == rows[1].legacy_file_stem  # what the first naming did
    stems = [r.file_stem for r in rows]
    assert len(set(stems)) == len(stems)
    assert all("/" not in s and " " not in s and not s.startswith(".") for s in stems)


def test_rows_of_one_precision_still_end_with_both_references():
    names = [r.name for r in suite_rows(["fastv"], [64], precisions=["lowbit"])]
    assert names == ["lowbit/all", "lowbit/fastv@64", "bf16/all"]


@pytest.fixture
def answers_spy(monkeypatch):
    """Counts the rows the suite evaluates (one ``answer_questions`` call per row)."""
    calls = []
    real = suite.answer_questions

    def spy(model, tokenizer, questions, *args, **kwargs):
        calls.append(len(questions))
        return real(model, tokenizer, questions, *args, **kwargs)

    monkeypatch.setattr(suite, "answer_questions", spy)
    return calls


def test_suite_runs_writes_and_resumes(small_testbed, tmp_path, answers_spy):
    model, tok = small_testbed
    kw = dict(plans=["random"], budgets=[64], quant=RTN, tasks=["counting"], batch_size=2, device="cpu", model=model,
              tokenizer=tok)
    results = run_suite(tmp_path, limit=1, **kw)  # a model given in memory is identified by its state's digest
    digest = suite.state_digest(model)
    kw["model_hash"] = digest  # the same identity, without hashing the model again in every run below
    assert set(results) == {"bf16/all", "lowbit/all", "bf16/random@64", "lowbit/random@64"}
    assert results["bf16/random@64"].meta["equivalent_tokens"] == 64
    assert "ret. vs bf16" in (tmp_path / "suite.md").read_text()
    stored = json.loads((tmp_path / f"{SuiteRow('lowbit', 'random', 64.0).file_stem}.json").read_text())
    assert stored["meta"]["quant"] == "W4A4-KV4"
    settings = stored["settings"]
    assert settings["row"] == "lowbit/random@64" and settings["questions_per_task"] == {"counting": 1}
    assert settings["quant"] == RTN.to_dict() and settings["device"] == "cpu" and settings["model_hash"] == digest
    assert set(settings["versions"]) == {"torch", "transformers", "triton", "quota"}
    assert "quant" not in json.loads((tmp_path / f"{SuiteRow('bf16', 'all').file_stem}.json").read_text())["settings"]
    assert len(answers_spy) == 4

    again = run_suite(tmp_path, limit=1, resume=True, **kw)  # every row is read back, nothing recomputed
    assert again["lowbit/random@64"].average == results["lowbit/random@64"].average and len(answers_spy) == 4
    (tmp_path / f"{SuiteRow('bf16', 'random', 64.0).file_stem}.json").unlink()  # as if killed before that row
    run_suite(tmp_path, limit=1, resume=True, **kw)
    assert len(answers_spy) == 5  # only the missing row

    before = {p.name: p.read_text() for p in tmp_path.glob("*.json")}
    with pytest.raises(ResumeMismatchError) as err:  # issue 22: a row of n=1 must never sit beside rows of n=2
        run_suite(tmp_path, limit=2, resume=True, **kw)
    assert str(err.value).startswith("cannot resume: the results of row bf16/all in bf16__all-")
    assert str(err.value).endswith("were measured with questions_per_task.counting=1, this run has 2 "
                                   "(rerun with --resume=recompute to evaluate it again)")
    assert len(answers_spy) == 5 and {p.name: p.read_text() for p in tmp_path.glob("*.json")} == before

    run_suite(tmp_path, limit=2, resume="recompute", **{**kw, "plans": []})  # the two references only
    assert answers_spy[5:] == [2, 2]
    table = json.loads((tmp_path / "suite.json").read_text())
    assert set(table) == {"bf16/all", "lowbit/all"}
    assert {t["n"] for r in table.values() for t in r["tasks"].values()} == {2}
    with pytest.raises(ResumeMismatchError, match="questions_per_task.counting=2, row bf16/random@64 with 1"):
        run_suite(tmp_path, plans=["random"], budgets=[64], report_only=True)  # the n=1 rows left in the folder


def _row_file(folder, row: SuiteRow, n: int, settings: dict | None, legacy: bool = False) -> None:
    """A row file as the suite writes it (or as suites wrote it before rows recorded their settings)."""
    result = summarize(test_split("counting", n), ["0"] * n, {"row": row.name})
    data = result.to_dict() if settings is None else {**result.to_dict(), "settings": settings}
    stem = row.legacy_file_stem if legacy else row.file_stem
    (folder / f"{stem}.json").write_text(json.dumps(data))


def _settings(row: SuiteRow, n: int, model_hash: str = "ab" * 32, quant: QuantConfig = GPTQ, calibration: int = 256):
    return suite.row_settings(row, suite.suite_settings(model_hash, test_split("counting", n), "cpu", quant, calibration))


def test_report_only_writes_the_table_of_present_rows_and_names_the_missing(tmp_path):
    rows = [SuiteRow("bf16", "all"), SuiteRow("bf16", "random", 64.0), SuiteRow("lowbit", "all")]
    for row in rows:
        _row_file(tmp_path, row, 1, _settings(row, 1))
    report = run_suite(tmp_path, plans=["random", "fastv"], budgets=[64], precisions=["bf16"], report_only=True)
    assert set(report) == {"bf16/all", "bf16/random@64", "lowbit/all"}  # both references are always rows
    text = (tmp_path / "suite.md").read_text()
    assert "bf16/random@64" in text and "Not measured (1 row): bf16/fastv@64." in text
    assert set(report["bf16/random@64"].meta["retention"]) == {"bf16_all_tokens", "lowbit_all_tokens"}


def test_report_only_reads_suite_folders_of_the_first_naming(tmp_path):
    rows = [SuiteRow("bf16", "all"), SuiteRow("bf16", "random", 64.0), SuiteRow("lowbit", "all")]
    for row in rows:
        _row_file(tmp_path, row, 1, None, legacy=True)
    report = run_suite(tmp_path, plans=["random"], budgets=[64], precisions=["bf16"], report_only=True)
    assert set(report) == {r.name for r in rows}
    with pytest.raises(ResumeMismatchError, match="record no settings"):  # but a strict resume cannot trust them
        suite.reusable_rows(tmp_path, rows, suite.suite_settings("ab" * 32, test_split("counting", 1), "cpu", GPTQ, 2),
                            "strict")


def test_report_only_refuses_rows_of_other_settings(tmp_path):
    all_bf16, fastv, lowbit = SuiteRow("bf16", "all"), SuiteRow("bf16", "fastv", 64.0), SuiteRow("lowbit", "all")
    _row_file(tmp_path, all_bf16, 3, None, legacy=True)
    _row_file(tmp_path, fastv, 1, None, legacy=True)
    with pytest.raises(ResumeMismatchError, match=r"row bf16/all was measured with questions_per_task.counting=3, "
                                                  r"row bf16/fastv@64 with 1"):
        run_suite(tmp_path, plans=["fastv"], budgets=[64], report_only=True)
    _row_file(tmp_path, fastv, 3, _settings(fastv, 3))
    _row_file(tmp_path, lowbit, 3, _settings(lowbit, 3))
    assert set(run_suite(tmp_path, plans=["fastv"], budgets=[64], report_only=True)) == {
        "bf16/all", "bf16/fastv@64", "lowbit/all"}  # the current file wins over the first naming's
    _row_file(tmp_path, SuiteRow("lowbit", "fastv", 64.0), 3, _settings(SuiteRow("lowbit", "fastv", 64.0), 3,
                                                                         calibration=16))
    with pytest.raises(ResumeMismatchError, match="calibration_questions=256, row lowbit/fastv@64 with 16"):
        run_suite(tmp_path, plans=["fastv"], budgets=[64], report_only=True)


def test_cli_resume_with_another_limit_is_refused_in_one_line_before_loading(tmp_path, monkeypatch, capsys):
    from quota.cli.main import main
    from quota.testbed import model as testbed

    def no_load(*args, **kwargs):
        raise AssertionError("the testbed was loaded before the settings were checked")

    monkeypatch.setattr(testbed, "load", no_load)
    row = SuiteRow("bf16", "all")
    _row_file(tmp_path, row, 1, _settings(row, 1, model_hash=testbed.model_hash()))
    code = main(["eval", "--suite", str(tmp_path), "--plans", "random", "--budgets", "64", "--tasks", "counting",
                 "--limit", "3", "--device", "cpu", "--precisions", "bf16", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("quota eval: error: cannot resume: the results of row bf16/all in bf16__all-")
    assert "measured with questions_per_task.counting=1, this run has 3 (rerun with --resume=recompute" in err


def test_suite_calibrates_on_the_first_n_questions_and_refuses_a_bad_count(small_testbed, tmp_path, monkeypatch):
    model, tok = small_testbed
    seen = []
    real = suite.calibration_inputs

    def spy(tokenizer, device, dtype, batch_size=32, questions=None):
        seen.append(len(questions))
        return real(tokenizer, device, dtype, batch_size, questions)

    monkeypatch.setattr(suite, "calibration_inputs", spy)
    kw = dict(plans=[], budgets=[], quant=GPTQ, limit=1, tasks=["counting"], batch_size=2,
              device="cpu", model=model, tokenizer=tok, precisions=["lowbit"])
    with pytest.raises(ValueError, match="--calibration"):
        run_suite(tmp_path, calibration_limit=0, **kw)
    with pytest.raises(ValueError, match="--limit"):
        run_suite(tmp_path, calibration_limit=2, **{**kw, "limit": 0})
    assert not list(tmp_path.glob("*.json"))  # refused before any row was written
    results = run_suite(tmp_path, calibration_limit=2, **kw)
    assert seen == [2] and results["lowbit/all"].meta["calibration_questions"] == 2
    stored = json.loads((tmp_path / f"{SuiteRow('lowbit', 'all').file_stem}.json").read_text())
    assert stored["settings"]["calibration_questions"] == 2
