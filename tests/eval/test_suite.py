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
from quota.versioned import VersionError

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


def test_suite_runs_writes_and_resumes(small_testbed, tmp_path, answers_spy, capsys):
    model, tok = small_testbed
    kw = dict(plans=["random"], budgets=[64], quant=RTN, tasks=["counting"], batch_size=2, device="cpu", model=model,
              tokenizer=tok)
    results = run_suite(tmp_path, limit=1, **kw)  # a model given in memory is identified by its state's digest
    digest = suite.state_digest(model)
    kw["model_hash"] = digest  # the same identity, without hashing the model again in every run below
    assert set(results) == {"bf16/all", "lowbit/all", "bf16/random@64", "lowbit/random@64"}
    timed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[quota eval] ")]
    assert sorted(line.split(":")[0][13:] for line in timed) == sorted(results)  # one timing line per row
    assert all(" 1 questions in " in line for line in timed)
    assert results["bf16/random@64"].meta["equivalent_tokens"] == 64
    assert "ret. vs bf16" in (tmp_path / "suite.md").read_text()
    stored = json.loads((tmp_path / f"{SuiteRow('lowbit', 'random', 64.0).file_stem}.json").read_text())
    assert stored["meta"]["quant"] == "W4A4-KV4"
    settings = stored["settings"]
    assert settings["row"] == "lowbit/random@64" and settings["questions_per_task"] == {"counting": 1}
    assert settings["quant"] == RTN.to_dict() and settings["device"] == "cpu" and settings["model_hash"] == digest
    assert set(settings["versions"]) == {"torch", "transformers", "triton", "quota"}
    assert (stored["type"], stored["version"]) == ("quota.suite_row", 2)  # with every question's outcome
    (prediction,) = stored["predictions"]
    assert set(prediction) == {"qid", "task", "answer", "prediction", "correct"}
    assert prediction["qid"] == test_split("counting", 1)[0].qid and prediction["task"] == "counting"
    assert "paired Δ (95% CI)" in (tmp_path / "suite.md").read_text()
    assert "predictions" not in json.loads((tmp_path / "suite.json").read_text())["lowbit/random@64"]
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


# ----------------------------------------------------------------------------- the paired column (issue 17)


def _result(row: SuiteRow, answers, n: int | None = None, eq: float | None = None, task: str = "counting"):
    """A row's result on the first questions of ``task`` (``answers``: True for right, False for wrong)."""
    questions = test_split(task, n or len(answers))
    meta = {"row": row.name, "precision": row.precision, "plan": row.plan, "tokens": row.tokens,
            "equivalent_tokens": row.tokens if eq is None else eq}
    return summarize(questions, [q.answer if ok else "wrong" for q, ok in zip(questions, answers)], meta)


def _write_new_row(folder, row: SuiteRow, answers, eq: float | None = None, reverse: bool = False) -> None:
    """A row file as this quota writes it: versioned, with its predictions (stored reversed with ``reverse``)."""
    result = _result(row, answers, eq=eq)
    if reverse:
        result.predictions.reverse()
    (folder / f"{row.file_stem}.json").write_text(json.dumps(suite.row_document(result, _settings(row, len(answers)))))


HALF = [i % 2 == 0 for i in range(20)]


def test_identical_rows_pair_to_exactly_zero_while_their_unpaired_intervals_are_wide(tmp_path):
    rows = [SuiteRow("bf16", "all"), SuiteRow("lowbit", "all"), SuiteRow("lowbit", "fastv", 64.0),
            SuiteRow("lowbit", "random", 64.0)]
    for row in rows:
        _write_new_row(tmp_path, row, [True] * 20 if row.plan == "all" else HALF, reverse=row.plan == "random")
    report = run_suite(tmp_path, plans=["fastv", "random"], budgets=[64], precisions=["lowbit"], report_only=True)
    same = report["lowbit/random@64"]
    low, high = same.average_ci
    assert 100 * (high - low) > 20  # unpaired: each row alone is uncertain
    paired = same.meta["paired"]  # paired by question id (stored in reverse order): no uncertainty at all
    assert paired["against"] == "lowbit/fastv@64" and (paired["mean"], paired["low"], paired["high"]) == (0, 0, 0)
    assert paired["n"] == 20 and paired["only_a"] == paired["only_b"] == 0
    text = (tmp_path / "suite.md").read_text()
    assert "| lowbit/random@64 | 64.0 | 50.0 | 50.0 (" in text and "| +0.0 (+0.0 to +0.0) | lowbit/fastv@64 |" in text
    assert "| lowbit/fastv@64 | 64.0 | 50.0 | 50.0 (" in text and "| reference | - |" in text
    stored = json.loads((tmp_path / "suite.json").read_text())
    assert stored["lowbit/random@64"]["meta"]["paired"]["high"] == 0 and "predictions" not in stored["lowbit/all"]

    lowbit_all = run_suite(tmp_path, plans=["fastv", "random"], budgets=[64], precisions=["lowbit"],
                           report_only=True, paired_against="lowbit/all")["lowbit/random@64"].meta["paired"]
    assert lowbit_all["against"] == "lowbit/all" and lowbit_all["chosen"] == "given"
    assert lowbit_all["mean"] == -50 and lowbit_all["low"] < -50 < lowbit_all["high"] < 0
    assert "Reference: row lowbit/all." in (tmp_path / "suite.md").read_text()


def test_the_default_reference_is_the_best_stage_wise_row_at_the_recipe_s_tokens():
    n = 10
    rows = {
        SuiteRow("lowbit", "all"): _result(SuiteRow("lowbit", "all"), [True] * n),
        SuiteRow("lowbit", "fastv", 64.0): _result(SuiteRow("lowbit", "fastv", 64.0), [i < 3 for i in range(n)]),
        SuiteRow("lowbit", "visionzip", 64.0): _result(SuiteRow("lowbit", "visionzip", 64.0), [i < 5 for i in range(n)]),
        SuiteRow("lowbit", "fastv", 128.0): _result(SuiteRow("lowbit", "fastv", 128.0), [i < 8 for i in range(n)]),
        SuiteRow("lowbit", "visionzip", 128.0): _result(SuiteRow("lowbit", "visionzip", 128.0), [i < 6 for i in range(n)]),
        SuiteRow("lowbit", "recipe:k64.json"): _result(SuiteRow("lowbit", "recipe:k64.json"), [i < 7 for i in range(n)],
                                                       eq=57.6),  # spent less than 64 on its grid
        SuiteRow("lowbit", "recipe:k100.json"): _result(SuiteRow("lowbit", "recipe:k100.json"), [True] * n, eq=100.0),
        SuiteRow("bf16", "fastv", 64.0): _result(SuiteRow("bf16", "fastv", 64.0), [True] * n),
    }
    results = {row.name: r for row, r in rows.items()}
    column = suite.paired_column(results)
    against = {name: record["against"] for name, record in column.items()}
    assert against == {
        "lowbit/all": None, "lowbit/fastv@64": "lowbit/visionzip@64", "lowbit/visionzip@64": "lowbit/visionzip@64",
        "lowbit/fastv@128": "lowbit/fastv@128", "lowbit/visionzip@128": "lowbit/fastv@128",
        "lowbit/recipe:k64.json": "lowbit/visionzip@64",  # the best at 64, not a bf16 row
        "lowbit/recipe:k100.json": None,  # no stage-wise budget within 12.5% of 100 tokens
        "bf16/fastv@64": "bf16/fastv@64"}
    recipe = column["lowbit/recipe:k64.json"]
    assert recipe["mean"] == pytest.approx(20.0) and recipe["low"] >= 0  # right on 2 more, wrong on none more
    assert column["lowbit/visionzip@64"]["reference"] and "mean" not in column["lowbit/all"]
    text = suite.markdown(results)
    assert f"| +20.0 (+{recipe['low']:.1f} to +{recipe['high']:.1f}) | lowbit/visionzip@64 |" in text
    assert "No paired Δ for lowbit/recipe:k100.json: no stage-wise row of its precision within 12.5%" in text


def test_rows_of_other_questions_are_paired_on_the_common_ones_only():
    row, ref = SuiteRow("lowbit", "random", 64.0), SuiteRow("lowbit", "fastv", 64.0)
    results = {ref.name: _result(ref, [False] * 4), row.name: _result(row, [True] * 4 + [False] * 2)}
    results[ref.name].average = 1.0  # the best stage-wise row, whatever its scores
    record = suite.paired_column(results)[row.name]
    assert (record["mean"], record["low"], record["high"]) == (100, 100, 100)  # not 66.7: the last two are left out
    assert (record["n"], record["only_a"], record["only_b"]) == (4, 2, 0)
    assert ("lowbit/random@64 vs lowbit/fastv@64: 4 questions in common; left out 2 only lowbit/random@64 answered "
            "and 0 only lowbit/fastv@64 answered.") in suite.markdown(results)


def test_rows_without_predictions_are_reported_with_a_dash_and_a_note(tmp_path):
    evaluated, old = SuiteRow("lowbit", "fastv", 64.0), SuiteRow("lowbit", "random", 64.0)
    _write_new_row(tmp_path, SuiteRow("lowbit", "all"), [True] * 20)
    as_eval_writes = _result(evaluated, HALF).to_dict(with_predictions=True)  # `quota eval -o`: no type, predictions
    (tmp_path / f"{evaluated.legacy_file_stem}.json").write_text(json.dumps(as_eval_writes))
    _row_file(tmp_path, old, 20, None, legacy=True)  # a row of an earlier quota: no type, no predictions
    _row_file(tmp_path, SuiteRow("bf16", "all"), 20, _settings(SuiteRow("bf16", "all"), 20))
    report = run_suite(tmp_path, plans=["fastv", "random"], budgets=[64], precisions=["lowbit"], report_only=True,
                       paired_against="lowbit/all")
    assert report[old.name].meta["paired"]["without_predictions"] == [old.name]
    assert report[evaluated.name].meta["paired"]["mean"] == -50
    text = (tmp_path / "suite.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("| lowbit/random@64 |"))
    assert "| - | lowbit/all |" in line and "%" in line  # reported, its retention too
    assert "stores no per-question predictions" in text
    assert "written before suite rows kept them do: bf16/all, lowbit/random@64;" in text


def test_an_unknown_paired_reference_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="--paired-against 'lowbit/fastv@65' is not a row of this suite"):
        run_suite(tmp_path, plans=["fastv"], budgets=[64], paired_against="lowbit/fastv@65", report_only=True)
    assert not list(tmp_path.iterdir())


def test_row_files_are_versioned(tmp_path):
    row = SuiteRow("lowbit", "all")
    _write_new_row(tmp_path, row, HALF)
    path = tmp_path / f"{row.file_stem}.json"
    result, settings = suite.read_row(path)
    assert len(result.predictions) == 20 and settings["row"] == "lowbit/all"
    doc = json.loads(path.read_text())
    wrong = dict(doc, predictions=doc["predictions"][:19])
    path.write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match="predictions of task counting \\(19 questions\\) do not match its score"):
        suite.read_row(path)
    path.write_text(json.dumps(dict(doc, predictions=[])))
    with pytest.raises(ValueError, match="quota.suite_row version 2 row without predictions"):
        suite.read_row(path)
    path.write_text(json.dumps(dict(doc, version=3)))
    with pytest.raises(VersionError, match="quota.suite_row version 3 is not supported"):
        run_suite(tmp_path, plans=[], budgets=[], precisions=["lowbit"], report_only=True)
    settings = suite.suite_settings("ab" * 32, test_split("counting", 20), "cpu", GPTQ, 256)
    with pytest.raises(ResumeMismatchError, match="version 3 is not supported .*--resume=recompute"):
        suite.reusable_rows(tmp_path, [row], settings, "strict")
    assert suite.reusable_rows(tmp_path, [row], settings, "recompute") == {}


def test_a_resume_does_not_reuse_rows_without_predictions(tmp_path):
    row = SuiteRow("lowbit", "all")
    settings = suite.suite_settings("ab" * 32, test_split("counting", 20), "cpu", GPTQ, 256)
    _row_file(tmp_path, row, 20, _settings(row, 20))  # settings recorded, but no predictions: unpaired forever
    with pytest.raises(ResumeMismatchError, match="store no per-question predictions .*--resume=recompute"):
        suite.reusable_rows(tmp_path, [row], settings, "strict")
    assert suite.reusable_rows(tmp_path, [row], settings, "recompute") == {}
    _write_new_row(tmp_path, row, HALF)
    (kept,) = suite.reusable_rows(tmp_path, [row], settings, "strict").values()
    assert len(kept.predictions) == 20 and kept.average == 0.5


def test_baseline_rows_record_what_their_plan_runs():
    """A preset whose meaning changes (VisionZip gaining merging) no longer matches rows measured before."""
    from quota.eval.suite import SuiteRow, plan_digest

    merged, plain = plan_digest(SuiteRow("lowbit", "visionzip", 64.0)), plan_digest(SuiteRow("lowbit", "visionzip_nomerge", 64.0))
    assert merged and plain and merged != plain
    assert plan_digest(SuiteRow("lowbit", "visionzip", 64.0)) == merged  # deterministic
    assert plan_digest(SuiteRow("lowbit", "visionzip", 128.0)) != merged
    assert plan_digest(SuiteRow("bf16", "all")) is None
