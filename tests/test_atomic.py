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
