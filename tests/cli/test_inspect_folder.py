"""``quota inspect DIR``: what quota reads from a checkpoint folder, without loading its weights."""

import json

from quota.cli.main import main
from quota.models.checkpoint import checkpoint_hash
from tests.checkpoints import write_checkpoint


def test_a_fixed_and_a_dynamic_folder(tmp_path, capsys):
    fixed = write_checkpoint("llava", tmp_path / "llava")
    assert main(["inspect", str(fixed), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["class"] == "LlavaForConditionalGeneration" and info["layers"] == 2 and info["visual_tokens"] == 16
    assert info["model_hash"] == checkpoint_hash(fixed)
    dynamic = write_checkpoint("llava_next", tmp_path / "next")
    assert main(["inspect", str(dynamic)]) == 0
    out = capsys.readouterr().out
    assert "dynamic resolution" in out and "336x336 ->" in out


def test_a_folder_that_is_not_a_checkpoint_is_one_error_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    folder = write_checkpoint("llava", tmp_path / "noproc", processor=False)
    assert main(["inspect", str(folder)]) == 2
    assert "has no tokenizer" in capsys.readouterr().err
