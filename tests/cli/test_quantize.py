"""``quota quantize``: a checkpoint folder (or the testbed) quantized and saved in one command; ``quota.load`` reads
it back bit for bit; bad options are one-line errors with exit status 2; a failure leaves no folder behind."""

import json
from pathlib import Path

import pytest
import torch

import quota
from quota.cli.main import main
from quota.data.calibration import calibration_inputs
from quota.data.records import read_records
from quota.models.checkpoint import load_checkpoint
from quota.quant.config import QuantConfig
from quota.quantize.model import quantize_model
from quota.recipe import PruningPlan, Recipe, ScoringSpec
from quota.runtime.apply import PrunedModel
from tests.checkpoints import tiny_model, tiny_tokenizer, write_checkpoint
from tests.data.datasets import write_dataset


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``(tiny llava checkpoint folder, calibration JSONL)``."""
    root = tmp_path_factory.mktemp("cli_quantize")
    return write_checkpoint("llava", root / "llava"), write_dataset(root / "data")


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _only_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_rtn_needs_no_data_and_loads_back_bit_for_bit(files, tmp_path, capsys):
    folder, data = files
    out = tmp_path / "q"
    assert main(["quantize", "--model", str(folder), "--quant", "rtn", "--out", str(out), "--device", "cpu",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == str(out) and summary["model_class"] == "LlavaForConditionalGeneration"
    assert summary["shards"] >= 1 and summary["bytes"] > 0 and summary["quant"].startswith("W4A4-KV4 (RTN")
    source = load_checkpoint(folder)
    config = QuantConfig(impl="auto", weight_method="rtn", a_clip_search=False)
    expected = quantize_model(source.model, config, None, progress=False)
    loaded = quota.load(out, "cpu")
    batch = calibration_inputs(loaded.processor, read_records(data)[:2])[0]
    assert torch.equal(_logits(loaded.model, batch), _logits(expected, batch))
    assert loaded.quant_config == config and loaded.manifest["source"]["kind"] == "checkpoint"


def test_gptq_calibrates_on_the_records_and_stores_the_recipe(files, tmp_path, capsys):
    folder, data = files
    gptq = QuantConfig(impl="reference")
    plan = PruningPlan("half", (16, 8), ScoringSpec({"attn_last": 1.0}))
    recipe = Recipe.from_plan(plan, n_visual_tokens=16, quant=gptq, model_id="llava", model_hash="0" * 64)
    recipe_path = recipe.save(tmp_path / "recipe.json")
    out = tmp_path / "q"
    assert main(["quantize", "--model", str(folder), "--recipe", str(recipe_path), "--data", str(data), "--limit", "2",
                 "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr()
    assert "W4A4-KV4 (GPTQ) LlavaForConditionalGeneration ->" in printed.out and "quota.load(" in printed.out
    assert "warning: the recipe was made for model hash 000000000000" in printed.err
    loaded = quota.load(out, "cpu")
    assert isinstance(loaded.model, PrunedModel) and loaded.recipe == recipe and loaded.quant_config == gptq
    source = load_checkpoint(folder)
    batches = calibration_inputs(source.processor, read_records(data)[:2])
    expected = quantize_model(source.model, gptq, batches, progress=False)
    assert torch.equal(_logits(loaded.module, batches[0]), _logits(expected, batches[0]))
    b = batches[0]
    assert loaded.model.generate(b["input_ids"], b["attention_mask"], b["pixel_values"], max_new_tokens=2).shape[1] \
        == b["input_ids"].shape[1] + 2


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("quota quantize: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("case,message", [
    ("unknown model", "unknown model 'no-such-model'"),
    ("folder without config", "has no config.json"),
    ("out exists", "already exists; choose another output folder or pass --overwrite"),
    ("out is a file", "exists and is not a folder"),
    ("out is the model", "is the source checkpoint folder"),
    ("overwrite a foreign folder", "is not a saved quota checkpoint"),
    ("gptq without data", "--data: GPTQ and the clipping search calibrate on data"),
    ("data with rtn", "--data/--limit: this quantization calibrates nothing"),
    ("missing quant file", "--quant must be 'rtn' or a QuantConfig JSON file"),
    ("bad limit", "--limit must be a number of calibration records >= 1"),
    ("testbed with data", "--data: the testbed calibrates on its own calibration split"),
])
def test_bad_options_are_one_line_errors_with_status_2(files, tmp_path, capsys, case, message):
    folder, data = files
    out = tmp_path / "q"
    args = {"--model": str(folder), "--out": str(out), "--quant": "rtn", "--device": "cpu"}
    extra: list[str] = []
    if case == "unknown model":
        args["--model"] = "no-such-model"
    elif case == "folder without config":
        (tmp_path / "empty").mkdir()
        args["--model"] = str(tmp_path / "empty")
    elif case in ("out exists", "overwrite a foreign folder"):
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        extra = ["--overwrite"] if case == "overwrite a foreign folder" else []
    elif case == "out is a file":
        out.write_text("a file")
    elif case == "out is the model":
        args["--out"] = str(folder)
    elif case == "gptq without data":
        del args["--quant"]
    elif case == "data with rtn":
        extra = ["--data", str(data)]
    elif case == "missing quant file":
        args["--quant"] = str(tmp_path / "nope.json")
    elif case == "bad limit":
        del args["--quant"]
        extra = ["--data", str(data), "--limit", "0"]
    elif case == "testbed with data":
        args["--model"] = "testbed"
        del args["--quant"]
        extra = ["--data", str(data)]
    argv = ["quantize", *[x for kv in args.items() for x in kv], *extra]
    assert main(argv) == 2
    assert message in _error_line(capsys)
    if case not in ("out exists", "out is a file", "overwrite a foreign folder"):
        assert not out.exists()
    if case == "overwrite a foreign folder":
        assert _only_entries(out) == ["notes.txt"]


def test_a_failure_while_quantizing_or_saving_leaves_no_folder(files, tmp_path, monkeypatch, capsys):
    import quota.quantize.model as quantize_module
    import quota.saved.writer as writer

    folder, _ = files
    out = tmp_path / "q"
    argv = ["quantize", "--model", str(folder), "--quant", "rtn", "--out", str(out), "--device", "cpu"]

    def boom(*args, **kwargs):
        raise RuntimeError("quantization failed")

    with monkeypatch.context() as patch:
        patch.setattr(quantize_module, "quantize_model", boom)
        with pytest.raises(RuntimeError, match="quantization failed"):
            main(argv)
    assert _only_entries(tmp_path) == []
    real = writer.write_shards

    def half_then_fail(tensors, into, max_bytes):
        real(dict(list(tensors.items())[:3]), into, max_bytes)
        raise ValueError("cannot write the shards")

    monkeypatch.setattr(writer, "write_shards", half_then_fail)
    assert main(argv) == 2
    assert "cannot write the shards" in _error_line(capsys)
    assert _only_entries(tmp_path) == []


def test_the_testbed_is_saved_with_its_tokenizer(tmp_path, monkeypatch):
    """``--model testbed`` (here a tiny stand-in with the testbed's projector: the real one takes a minute on a CPU)."""
    from quota.testbed import model as testbed

    model, _, _ = tiny_model("llava")
    model.model.multi_modal_projector = testbed.NormalizedProjector(model.config, embedding_rms=0.5).eval()
    tokenizer = tiny_tokenizer("llava")
    monkeypatch.setattr(testbed, "load", lambda device, dtype, weights_dir=None: testbed.Testbed(model, tokenizer, {}))
    monkeypatch.setattr(testbed, "model_hash", lambda weights_dir=None: "f" * 64)
    out = tmp_path / "q"
    assert main(["quantize", "--quant", "rtn", "--out", str(out), "--device", "cpu"]) == 0
    loaded = quota.load(out, "cpu")
    assert loaded.manifest["source"] == {"kind": "testbed", "model_id": testbed.MODEL_ID, "model_hash": "f" * 64,
                                         "model_class": "LlavaForConditionalGeneration"}
    assert loaded.processor("How many?")["input_ids"] == tokenizer("How many?")["input_ids"]
    expected = quantize_model(model, QuantConfig(impl="auto", weight_method="rtn", a_clip_search=False), None,
                              progress=False)
    batch = {"input_ids": torch.tensor([[1] + [4] * 16 + [20, 21]]), "pixel_values": torch.randn(1, 3, 32, 32)}
    assert torch.equal(_logits(loaded.model, batch), _logits(expected, batch))
