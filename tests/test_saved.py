"""Quantize once, save, load: a saved checkpoint loads back into a model that computes bit for bit what the
in-memory quantized model computed, for every family whose processor loads here; shards stay under their size
limit; a damaged, foreign or newer checkpoint is refused in one line; nothing is unpickled; a failed save leaves
nothing behind."""

import dataclasses
import json
import pickle
from pathlib import Path

import pytest
import torch

import quota
from quota.data.calibration import calibration_inputs
from quota.data.records import read_records
from quota.models.checkpoint import checkpoint_hash, load_checkpoint
from quota.quant.config import QuantConfig
from quota.quantize.linear import QuantLinear
from quota.quantize.model import quantize_model
from quota.recipe import PruningPlan, Recipe, ScoringSpec
from quota.runtime.apply import PrunedModel, apply
from quota.saved import MANIFEST_NAME, SavedCheckpointError, Source, load, read_manifest, save
from quota.saved import writer
from quota.saved.shards import MAX_SHARD_BYTES
from tests.checkpoints import CLASSES, FAMILIES, processor_missing, write_checkpoint
from tests.data.datasets import write_dataset

GPTQ = QuantConfig(impl="reference")
RTN_ALL = QuantConfig(impl="reference", weight_method="rtn", a_clip_search=False, keep_full_precision=())
"""Round-to-nearest with every part quantized: vision tower, projector, embeddings and lm_head too."""
CONFIGS = {"gptq": GPTQ, "rtn-all": RTN_ALL}


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """``place(family)``: the folder of a tiny ``family`` checkpoint (written once); ``place("data")``: a JSONL file."""
    root = tmp_path_factory.mktemp("saved")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = write_dataset(root / "data") if name == "data" else write_checkpoint(name, root / name)
        return made[name]

    return get


def _quantized(place, family, config):
    """``(loaded source checkpoint, quantized model, calibration batches)``."""
    source = load_checkpoint(place(family))
    batches = calibration_inputs(source.processor, read_records(place("data"))[:3], batch_size=3)
    return source, quantize_model(source.model, config, batches, progress=False), batches


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
@pytest.mark.parametrize("family", FAMILIES)
def test_a_loaded_checkpoint_computes_bit_for_bit_what_was_saved(place, tmp_path, family, config):
    if (missing := processor_missing(family)) is not None:
        pytest.skip(missing)
    source, quantized, batches = _quantized(place, family, CONFIGS[config])
    out = save(quantized, tmp_path / "q", Source.of_checkpoint(source), files_from=source.folder)
    loaded = quota.load(out, "cpu")
    assert isinstance(loaded.model, torch.nn.Module) and loaded.recipe is None
    assert torch.equal(_logits(loaded.model, batches[0]), _logits(quantized, batches[0]))
    n_quantized = sum(isinstance(m, QuantLinear) for m in loaded.model.modules())
    assert n_quantized == sum(isinstance(m, QuantLinear) for m in quantized.modules()) > 0
    assert loaded.model.quota_report == quantized.quota_report
    assert loaded.quant_config == CONFIGS[config]
    # the processor came along: it encodes the records as the source's did
    again = calibration_inputs(loaded.processor, read_records(place("data"))[:3], batch_size=3)[0]
    assert all(torch.equal(again[k], batches[0][k]) for k in batches[0])
    manifest = loaded.manifest
    assert manifest["source"] == {"kind": "checkpoint", "model_id": family, "model_hash": checkpoint_hash(place(family)),
                                  "model_class": CLASSES[family]}
    assert json.loads((out / MANIFEST_NAME).read_text())["type"] == "quota.checkpoint"


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_rebuilds_from_its_config(place, tmp_path, family):
    """The model alone (no processor needed), text-only inputs: all six families rebuild exactly."""
    import transformers

    folder = place(family)
    model = getattr(transformers, CLASSES[family]).from_pretrained(folder).eval()
    quantized = quantize_model(model, RTN_ALL, None, progress=False)
    out = save(quantized, tmp_path / "q", Source("checkpoint", family, "0" * 64, CLASSES[family]), files_from=folder)
    loaded = load(out, "cpu", processor=False)
    ids = torch.randint(3, 60, (2, 9))
    assert loaded.processor is None
    assert torch.equal(_logits(loaded.model, {"input_ids": ids}), _logits(quantized, {"input_ids": ids}))


def test_shards_stay_under_the_limit_and_big_tensors_are_split(place, tmp_path):
    source, quantized, batches = _quantized(place, "llava", RTN_ALL)
    limit = 32 * 1024
    out = save(quantized, tmp_path / "q", Source.of_checkpoint(source), files_from=source.folder, max_shard_bytes=limit)
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 3 and all(p.stat().st_size <= limit for p in shards)
    assert shards[0].name == f"model-00001-of-{len(shards):05d}.safetensors"
    manifest = read_manifest(out)
    assert manifest["shards"]["split"], "a tensor over 32 KiB is stored in parts"
    assert {f["file"] for f in manifest["shards"]["files"]} == {p.name for p in shards}
    assert torch.equal(_logits(load(out, "cpu").model, batches[0]), _logits(quantized, batches[0]))
    default = save(quantized, tmp_path / "q16", Source.of_checkpoint(source), files_from=source.folder)
    assert all(p.stat().st_size < 16 * 2**20 for p in default.glob("*")) and MAX_SHARD_BYTES < 16 * 2**20


def test_another_dtype_casts_the_float_tensors_and_keeps_the_scales(place, tmp_path):
    source, quantized, batches = _quantized(place, "llava", RTN_ALL)
    out = save(quantized, tmp_path / "q", Source.of_checkpoint(source), files_from=source.folder)
    loaded = load(out, "cpu", torch.bfloat16, processor=False).model
    assert loaded.model.language_model.embed_tokens.weight.dtype == torch.bfloat16
    head = loaded.lm_head
    assert isinstance(head, QuantLinear) and head.weight.dtype == torch.int8 and head.weight_scale.dtype == torch.float32


def _testbed_like():
    """A tiny LLaVA with the testbed's NormalizedProjector, which no config builds: saved with a config object and
    a tokenizer, as ``quota quantize --model testbed`` saves the testbed."""
    from quota.testbed.model import NormalizedProjector
    from tests.checkpoints import tiny_model, tiny_tokenizer

    model, _, _ = tiny_model("llava")
    torch.manual_seed(1)
    model.model.multi_modal_projector = NormalizedProjector(model.config, embedding_rms=0.5).eval()
    return model, tiny_tokenizer("llava")


def test_an_extra_part_is_rebuilt_and_a_config_object_is_enough(tmp_path):
    from quota.testbed.model import NormalizedProjector

    model, tokenizer = _testbed_like()
    quantized = quantize_model(model, RTN_ALL, None, progress=False)
    out = save(quantized, tmp_path / "q", Source("testbed", "tiny", "1" * 64, type(model).__name__),
               config=model.config, processor=tokenizer)
    loaded = load(out, "cpu")
    edits = {e["path"]: e for e in loaded.manifest["architecture"]["edits"]}
    assert edits["model.multi_modal_projector"]["kind"] == "RotatedOutput"
    assert edits["model.multi_modal_projector.inner"] == {"path": "model.multi_modal_projector.inner", "kind": "part",
                                                         "class": "NormalizedProjector"}
    assert isinstance(loaded.model.model.multi_modal_projector.inner, NormalizedProjector)
    assert loaded.processor("What colour?")["input_ids"] == tokenizer("What colour?")["input_ids"]
    batch = {"input_ids": torch.tensor([[1] + [4] * 16 + [20, 21, 22]]), "pixel_values": torch.randn(1, 3, 32, 32)}
    assert torch.equal(_logits(loaded.model, batch), _logits(quantized, batch))


def test_a_module_quota_cannot_rebuild_is_refused_at_save(tmp_path):
    model, tokenizer = _testbed_like()
    model.model.multi_modal_projector.out_norm = torch.nn.Identity()  # a change no config or record describes
    quantized = quantize_model(model, RTN_ALL, None, progress=False)
    with pytest.raises(SavedCheckpointError, match="cannot save"):
        save(quantized, tmp_path / "q", Source("testbed", "tiny", "1" * 64, type(model).__name__), config=model.config)
    assert not (tmp_path / "q").exists() and list(tmp_path.iterdir()) == []


def test_a_pruning_recipe_comes_back_with_the_runtime(place, tmp_path):
    source, quantized, batches = _quantized(place, "llava", GPTQ)
    plan = PruningPlan("half", (16, 8), ScoringSpec({"attn_last": 1.0}))
    recipe = Recipe.from_plan(plan, n_visual_tokens=16, quant=GPTQ, model_id="llava")
    out = save(quantized, tmp_path / "q", Source.of_checkpoint(source), files_from=source.folder, recipe=recipe)
    loaded = load(out, "cpu")
    assert isinstance(loaded.model, PrunedModel) and loaded.recipe == recipe
    reference = apply(quantized, dataclasses.replace(recipe, quant=None))
    b = batches[0]
    args = (b["input_ids"], b["attention_mask"], b["pixel_values"])
    want = reference.generate(*args, max_new_tokens=4)
    got = loaded.model.generate(*args, max_new_tokens=4)
    assert torch.equal(got, want)
    assert [k.shape[-1] for k in loaded.model.runner.kept_indices] == [16, 8]
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.runner.kept_indices, reference.runner.kept_indices))


def test_nothing_is_unpickled(place, tmp_path, monkeypatch):
    source, quantized, batches = _quantized(place, "llava", RTN_ALL)
    out = save(quantized, tmp_path / "q", Source.of_checkpoint(source), files_from=source.folder)

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling while loading a saved checkpoint")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(module, name, refuse)
    assert torch.equal(_logits(load(out, "cpu").model, batches[0]), _logits(quantized, batches[0]))


# ------------------------------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def saved(place, tmp_path_factory):
    """A saved llava checkpoint (several shards) that each refusal test copies and damages."""
    source, quantized, _ = _quantized(place, "llava", RTN_ALL)
    return save(quantized, tmp_path_factory.mktemp("good") / "q", Source.of_checkpoint(source),
                files_from=source.folder, max_shard_bytes=64 * 1024)


def _copy(saved, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(saved, tmp_path / "copy"))


def _edit_manifest(folder: Path, **changes) -> None:
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _refusal(folder) -> str:
    with pytest.raises(SavedCheckpointError) as info:
        load(folder, "cpu")
    message = str(info.value)
    assert "\n" not in message and str(folder) in message
    return message


def test_another_type_is_refused(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    _edit_manifest(folder, type="quota.recipe")
    assert "type is 'quota.recipe', not 'quota.checkpoint'" in _refusal(folder)


@pytest.mark.parametrize("version", [2, 0, "1"])
def test_another_version_is_refused(saved, tmp_path, version):
    folder = _copy(saved, tmp_path)
    _edit_manifest(folder, version=version)
    message = _refusal(folder)
    assert f"version {version!r} is not supported" in message and "reads version 1" in message


def test_a_corrupted_shard_is_refused(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    shard = sorted(folder.glob("model-*.safetensors"))[1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01
    shard.write_bytes(bytes(data))
    assert f"shard {shard.name} is corrupted (sha256" in _refusal(folder)


def test_a_missing_shard_or_config_is_refused(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    shard.unlink()
    assert f"shard {shard.name} is missing" in _refusal(folder)
    (folder / "config.json").unlink()
    assert "config.json is missing" in _refusal(folder)


def test_records_that_do_not_fit_are_refused(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    data = json.loads((folder / MANIFEST_NAME).read_text())
    data["architecture"]["edits"][0]["kind"] = "Linear"
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    assert "kind = 'Linear' is not QuantLinear or RotatedOutput" in _refusal(folder)
    data["architecture"]["edits"][0] = {"path": "model.nowhere.x", "kind": "RotatedOutput", "size": 4}
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    assert "the model has no module model.nowhere" in _refusal(folder)


def test_a_changed_processor_file_or_a_folder_without_manifest_is_refused(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    with open(folder / "tokenizer.json", "a") as f:
        f.write(" ")
    assert "tokenizer.json is corrupted" in _refusal(folder)
    (folder / MANIFEST_NAME).unlink()
    assert "is not a saved quota checkpoint" in _refusal(folder)


# ------------------------------------------------------------------------------------------ writing safely


def test_an_existing_folder_is_refused_unless_overwrite_and_only_a_checkpoint_is_overwritten(place, tmp_path):
    source, quantized, _ = _quantized(place, "llava", RTN_ALL)
    kwargs = dict(source=Source.of_checkpoint(source), files_from=source.folder)
    out = save(quantized, tmp_path / "q", **kwargs)
    with pytest.raises(SavedCheckpointError, match="already exists.*--overwrite"):
        save(quantized, out, **kwargs)
    assert save(quantized, out, overwrite=True, **kwargs) == out
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(SavedCheckpointError, match="not a saved quota checkpoint"):
        save(quantized, other, overwrite=True, **kwargs)
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(SavedCheckpointError, match="not quantized"):
        save(source.model, tmp_path / "plain", **kwargs)


def test_a_failed_save_leaves_nothing_and_keeps_the_old_checkpoint(place, tmp_path, monkeypatch):
    source, quantized, _ = _quantized(place, "llava", RTN_ALL)
    kwargs = dict(source=Source.of_checkpoint(source), files_from=source.folder)
    old = save(quantized, tmp_path / "q", **kwargs)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    real = writer.write_shards

    def write_then_fail(tensors, folder, max_bytes):
        real(tensors, folder, max_bytes)
        raise OSError("disk full")

    monkeypatch.setattr(writer, "write_shards", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save(quantized, tmp_path / "new", **kwargs)
    with pytest.raises(OSError, match="disk full"):
        save(quantized, old, overwrite=True, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]  # no new folder, no temporary one
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
