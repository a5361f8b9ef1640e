import json
import os

import pytest

from quota.atomic import write_json_atomic, write_text_atomic


def test_write_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "r.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert os.listdir(path.parent) == ["r.json"]


def test_failed_write_keeps_old_content_and_leaves_no_temp(tmp_path):
    path = tmp_path / "r.json"
    write_text_atomic(path, "old")
    with pytest.raises(TypeError):
        write_json_atomic(path, {"x": object()})  # not serializable: fails before anything is written
    with pytest.raises(TypeError):
        write_text_atomic(path, 123)  # fails while writing the temporary file
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.json"]


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def test_new_files_get_the_mode_of_the_umask_not_0600(tmp_path, umask):
    umask(0o022)
    assert os.stat(write_text_atomic(tmp_path / "a.txt", "x")).st_mode & 0o777 == 0o644
    umask(0o077)
    assert os.stat(write_text_atomic(tmp_path / "b.txt", "x")).st_mode & 0o777 == 0o600


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = write_text_atomic(tmp_path / "a.txt", "old")
    os.chmod(path, 0o640)
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and os.stat(path).st_mode & 0o777 == 0o640


def test_an_error_inside_atomic_path_removes_the_temporary_file_and_keeps_the_target(tmp_path):
    from quota.atomic import atomic_path

    path = write_text_atomic(tmp_path / "w.bin", "old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("killed while writing")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["w.bin"]


def test_stale_temporaries_of_the_same_target_are_swept_and_nothing_else(tmp_path):
    import time

    target = tmp_path / "r.json"
    hour_ago = time.time() - 3700
    stale = tmp_path / ".r.json.k3j_x9q2.tmp"  # a killed writer's temporary file (mkstemp naming)
    fresh = tmp_path / ".r.json.a8b7c6d5.tmp"  # a writer that may still be running
    others = [tmp_path / ".other.json.k3j_x9q2.tmp", tmp_path / ".r.json.notours.tmp", tmp_path / "r.json.tmp",
              tmp_path / ".r.json.k3j_x9q2.tmp.keep"]
    for p in [stale, fresh, *others]:
        p.write_text("x")
        if p is not fresh:
            os.utime(p, (hour_ago, hour_ago))
    write_json_atomic(target, {"a": 1})
    assert not stale.exists()
    assert fresh.exists() and all(p.exists() for p in others)


def test_sweeping_every_target_of_a_folder_keeps_fresh_and_foreign_files(tmp_path):
    import time

    from quota.atomic import sweep_stale_temporaries

    hour_ago = time.time() - 3700
    stale = [tmp_path / ".a.safetensors.abcdefgh.tmp", tmp_path / ".b.json.12345678.tmp"]
    kept = [tmp_path / "a.safetensors", tmp_path / "notes.tmp", tmp_path / ".c.json.zzzzzzzz.tmp"]
    for p in stale + kept:
        p.write_text("x")
        if p.name != ".c.json.zzzzzzzz.tmp":
            os.utime(p, (hour_ago, hour_ago))
    assert sorted(sweep_stale_temporaries(tmp_path, all_targets=True)) == sorted(stale)
    assert all(p.exists() for p in kept)


def test_bytes_and_figures_are_written_atomically(tmp_path):
    from quota.atomic import savefig_atomic, write_bytes_atomic

    assert write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    with pytest.raises(TypeError):
        write_bytes_atomic(tmp_path / "b.bin", "text")

    class Figure:  # the one method savefig_atomic uses
        def __init__(self, fail=False):
            self.fail, self.calls = fail, []

        def savefig(self, path, format=None, **kwargs):
            self.calls.append((format, kwargs))
            Path(path).write_bytes(b"PNG half")
            if self.fail:
                raise OSError("disk full")

    from pathlib import Path

    fig = Figure()
    savefig_atomic(fig, tmp_path / "s.png", dpi=110)
    assert fig.calls == [("png", {"dpi": 110})] and (tmp_path / "s.png").read_bytes() == b"PNG half"
    (tmp_path / "s.png").write_bytes(b"old figure")
    with pytest.raises(OSError, match="disk full"):
        savefig_atomic(Figure(fail=True), tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes() == b"old figure"
    assert sorted(os.listdir(tmp_path)) == ["b.bin", "s.png"]
    with pytest.raises(ValueError, match="format"):
        savefig_atomic(Figure(), tmp_path / "no_suffix")


def test_first_difference_names_the_dotted_field():
    from quota.atomic import MISSING_TEXT, first_difference

    stored = {"model_hash": "a", "quant": {"w_bits": 4, "a_bits": 4}, "grid": [0, 288, 576]}
    assert first_difference(stored, {"model_hash": "a", "quant": {"w_bits": 4, "a_bits": 4}, "grid": (0, 288, 576)}) is None
    assert first_difference(stored, {**stored, "quant": {"w_bits": 8, "a_bits": 4}}) == ("quant.w_bits", 4, 8)
    assert first_difference(stored, {**stored, "grid": [0, 576]}) == ("grid", [0, 288, 576], [0, 576])
    assert first_difference(stored, {**stored, "device": "cpu"}) == ("device", MISSING_TEXT, "cpu")
    assert first_difference({**stored, "x": 1}, stored) == ("x", 1, MISSING_TEXT)
    assert first_difference({**stored, "x": 1}, stored, only_wanted_keys=True) is None
    assert first_difference({"n": 1}, {"n": 1.0}) == ("n", 1, 1.0)  # JSON-exact: a count is not a ratio


def test_mismatch_message_is_one_line_and_says_how_to_discard():
    from quota.atomic import ResumeMismatchError, mismatch_error, resume_mode

    err = mismatch_error("the partial results", "a.rank0of1.partial.json", ("quant.w_bits", 4, 8))
    assert isinstance(err, ValueError) and isinstance(err, ResumeMismatchError) and err.field == "quant.w_bits"
    assert str(err) == ("cannot resume: the partial results in a.rank0of1.partial.json were measured with "
                        "quant.w_bits=4, this run has 8 (rerun with --resume=recompute to discard them)")
    long = mismatch_error("rows", "", ("model_hash", "a" * 64, "b" * 64))
    assert "\n" not in str(long) and len(str(long)) < 200
    assert [resume_mode(v) for v in (False, None, True, "strict", "recompute")] == [None, None, "strict", "strict",
                                                                                   "recompute"]
    with pytest.raises(ValueError, match="resume"):
        resume_mode("yes")
