"""Loading tiny random checkpoints of every registered VLM family from disk, offline, and sizing their visual tokens."""

import json
import shutil

import numpy as np
import pytest
import torch

from quota.models.checkpoint import ProcessorMissingError, checkpoint_hash, load_checkpoint
from quota.models.registry import UnsupportedModelError
from quota.models.visual_tokens import DynamicResolutionError, VisionConfigError, is_dynamic, visual_tokens_of
from tests.checkpoints import (
    CLASSES, DYNAMIC, FAMILIES, MISSING_PACKAGES, NEEDS_VIDEO_PROCESSOR, processor_missing, tiny_model,
    torchvision_problem, write_checkpoint,
)

SIZES = ((32, 32), (40, 72))  # (height, width): a square image and a wide one


def _image(size, seed=0):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {family: write_checkpoint(family, root / family) for family in FAMILIES}


def _copy(folders, family, tmp_path):
    return shutil.copytree(folders[family], tmp_path / family)


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        target = data
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_loads_offline_or_names_why_not(folders, family):
    why = processor_missing(family)
    if why is not None:  # the folder is complete; this environment cannot build its processor
        with pytest.raises(ProcessorMissingError) as info:
            load_checkpoint(folders[family])
        package = next((p for p in MISSING_PACKAGES if p in why), "")
        assert package in str(info.value) and CLASSES[family] in str(info.value) and "\n" not in str(info.value)
        pytest.skip(why)
    ckpt = load_checkpoint(folders[family], dtype=torch.bfloat16)
    assert type(ckpt.model).__name__ == CLASSES[family] == ckpt.model_class
    assert not ckpt.model.training
    assert {p.dtype for p in ckpt.model.parameters()} == {torch.bfloat16}
    same = {"llava_next": "llava", "qwen2_5_vl": "qwen2_vl", "smolvlm": "idefics3"}  # families sharing a spec
    assert ckpt.spec.family == same.get(family, family)
    assert ckpt.model_id == family and ckpt.model_hash == checkpoint_hash(folders[family])
    assert ckpt.processor.tokenizer.padding_side == "left"
    assert ckpt.processor.image_token_id == ckpt.model.config.image_token_id
    assert ckpt.dynamic_resolution == (family in DYNAMIC)
    assert len(ckpt.spec.layers_of(ckpt.model)) == 2


def test_hash_follows_the_weights_not_the_folder(folders, tmp_path):
    again = write_checkpoint("llava", tmp_path / "renamed", seed=0, processor=False)
    other = write_checkpoint("llava", tmp_path / "other", seed=1, processor=False)
    assert checkpoint_hash(again) == checkpoint_hash(folders["llava"])
    assert checkpoint_hash(other) != checkpoint_hash(again)
    _edit_json(again / "config.json", image_seq_length=99)
    assert checkpoint_hash(again) != checkpoint_hash(folders["llava"])


@pytest.mark.parametrize("family", FAMILIES)
def test_loaded_weights_equal_the_written_model(folders, family):
    import transformers

    from quota.models.checkpoint import weight_files

    built, _, _ = tiny_model(family, seed=0)
    if processor_missing(family):  # the model half of load_checkpoint, through the same class
        loaded = getattr(transformers, CLASSES[family]).from_pretrained(folders[family], local_files_only=True)
    else:
        loaded = load_checkpoint(folders[family]).model
    want, got = built.state_dict(), loaded.state_dict()
    assert weight_files(folders[family]) == [folders[family] / "model.safetensors"]
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_unsupported_class_names_the_supported_ones(folders, tmp_path):
    folder = _copy(folders, "llava", tmp_path)
    _edit_json(folder / "config.json", architectures=["BertModel"])
    with pytest.raises(UnsupportedModelError, match="'BertModel'") as info:
        load_checkpoint(folder)
    assert "LlavaForConditionalGeneration" in str(info.value) and "Qwen2VLForConditionalGeneration" in str(info.value)
    _edit_json(folder / "config.json", architectures=["LlavaForConditionalGeneration"],
               vision_feature_select_strategy="cls_only")
    with pytest.raises(UnsupportedModelError, match="config.json is not a valid LlavaForConditionalGeneration") as info:
        load_checkpoint(folder)
    assert "\n" not in str(info.value)
    (folder / "config.json").unlink()
    with pytest.raises(UnsupportedModelError, match="no config.json"):
        load_checkpoint(folder)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "smolvlm"])
@pytest.mark.parametrize("missing", [("tokenizer.json", "tokenizer_config.json"),
                                     ("preprocessor_config.json", "processor_config.json")])
def test_missing_processor_is_refused_before_the_weights_are_read(folders, tmp_path, family, missing):
    folder = _copy(folders, family, tmp_path)
    (folder / "model.safetensors").unlink()  # reading weights would fail differently
    for name in missing:
        (folder / name).unlink()
    with pytest.raises(ProcessorMissingError, match="tokenizer" if "tokenizer.json" in missing else "image processor"):
        load_checkpoint(folder)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_an_image_processor_transformers_cannot_resolve_is_one_short_line(folders, tmp_path, family):
    folder = _copy(folders, family, tmp_path)
    (folder / "model.safetensors").unlink()
    _edit_json(folder / "preprocessor_config.json", image_processor_type="NoSuchImageProcessor")
    with pytest.raises(ProcessorMissingError, match="Unrecognized image processor") as info:
        load_checkpoint(folder)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400 and CLASSES[family] in str(info.value)


def test_smolvlm_without_num2words_names_the_package(folders, monkeypatch):
    """SmolVLMProcessor refuses to build without num2words: the error says which package to install."""
    import transformers.models.smolvlm.processing_smolvlm as smolvlm

    monkeypatch.setattr(smolvlm, "num2words", None)
    with pytest.raises(ProcessorMissingError, match="needs num2words") as info:
        load_checkpoint(folders["smolvlm"])
    assert "pip install num2words" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("family", NEEDS_VIDEO_PROCESSOR)
def test_without_torchvision_the_processor_is_image_only(folders, family):
    """The family's own processor class (a subclass of the same name), without a video processor: it refuses
    videos with one clear error and sizes images as usual."""
    import transformers

    if torchvision_problem() is None:
        pytest.skip("torchvision imports here: AutoProcessor builds the full processor")
    processor = load_checkpoint(folders[family]).processor
    name = json.loads((folders[family] / "processor_config.json").read_text())["processor_class"]
    assert isinstance(processor, getattr(transformers, name)) and type(processor).__name__ == name
    assert "video_processor" not in type(processor).get_attributes()
    video = "<|vision_start|><|video_pad|><|vision_end|>" if family.startswith("qwen") else "<video>"
    with pytest.raises(ValueError, match="without a video processor"):
        processor(text=[video + "What happens?"], videos=[np.zeros((2, 32, 32, 3), dtype=np.uint8)])


@pytest.mark.parametrize("family", NEEDS_VIDEO_PROCESSOR)
def test_the_processor_class_follows_the_model_type_when_no_file_names_it(folders, tmp_path, family):
    folder = _copy(folders, family, tmp_path)
    settings = json.loads((folder / "processor_config.json").read_text())
    name = settings.pop("processor_class")
    (folder / "processor_config.json").write_text(json.dumps(settings))
    ckpt = load_checkpoint(folder)
    assert type(ckpt.processor).__name__ == name
    assert _processor_counts(ckpt.processor, family, SIZES)[0] == [ckpt.visual_tokens(s) for s in SIZES]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_loaded_processor_saves_and_loads_the_same(folders, tmp_path, family):
    """``processor.save_pretrained`` writes files ``load_checkpoint`` reads back to the same processor: same class
    name, chat template and image tokens (the image-only processors included)."""
    if processor_missing(family):
        pytest.skip(processor_missing(family))
    ckpt = load_checkpoint(folders[family])
    folder = tmp_path / family
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folders[family] / name, folder / name)
    ckpt.processor.save_pretrained(folder)
    again = load_checkpoint(folder)
    assert type(again.processor).__name__ == type(ckpt.processor).__name__
    assert again.processor.chat_template == ckpt.processor.chat_template
    assert _processor_counts(again.processor, family, SIZES)[0] == _processor_counts(ckpt.processor, family, SIZES)[0]


@pytest.mark.parametrize("family,change,message", [
    ("llava", {"vision_config.patch_size": 7}, "image_size 32 is not a multiple of patch_size 7"),
    ("llava", {"vision_config.model_type": "dinov2"}, "'dinov2' is not a tower quota can size"),
    ("llava_next", {"image_grid_pinpoints": []}, "image_grid_pinpoints is empty"),
    ("idefics3", {"scale_factor": 3}, "not a multiple of scale_factor 3"),
])
def test_vision_config_quota_cannot_size(folders, tmp_path, family, change, message):
    if processor_missing(family):
        pytest.skip(processor_missing(family))
    folder = _copy(folders, family, tmp_path)
    (folder / "model.safetensors").unlink()
    _edit_json(folder / "config.json", **change)
    with pytest.raises(VisionConfigError, match=message) as info:
        load_checkpoint(folder)
    assert isinstance(info.value, UnsupportedModelError) and "\n" not in str(info.value)


def _processor_counts(processor, family, sizes):
    """Image tokens the family's processor writes for one image of each size."""
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    counts = []
    for i, size in enumerate(sizes):
        enc = processor(text=[text], images=[[_image(size, i)]], return_tensors="pt")
        counts.append(int((enc["input_ids"] == processor.image_token_id).sum()))
    return counts, enc


@pytest.mark.parametrize("family", FAMILIES)
def test_visual_tokens_match_the_processor_and_the_model(folders, family):
    """N from the config equals the image tokens the processor writes, and the model's forward accepts them."""
    from transformers import AutoConfig, AutoImageProcessor

    config = AutoConfig.from_pretrained(folders[family], local_files_only=True)
    image_processor = AutoImageProcessor.from_pretrained(folders[family], local_files_only=True)
    ns = [visual_tokens_of(config, image_processor, size) for size in SIZES]
    assert is_dynamic(config, image_processor) == (family in DYNAMIC)
    if family in DYNAMIC:
        assert ns[0] != ns[1]
        with pytest.raises(DynamicResolutionError, match="give image_size"):
            visual_tokens_of(config, image_processor)
    else:
        assert ns[0] == ns[1] == visual_tokens_of(config, image_processor)
    if family.startswith("qwen"):  # the image processor alone decides N: check its patch grid
        for size, n in zip(SIZES, ns):
            grid = image_processor(images=[_image(size)], return_tensors="pt")["image_grid_thw"]  # [1, 3]
            assert int(grid.prod()) // config.vision_config.spatial_merge_size ** 2 == n
    if processor_missing(family):
        pytest.skip(processor_missing(family))
    ckpt = load_checkpoint(folders[family])
    counts, enc = _processor_counts(ckpt.processor, family, SIZES)
    assert counts == ns == [ckpt.visual_tokens(s) for s in SIZES]
    with torch.no_grad():  # the model finds exactly as many image features as the prompt has placeholders
        logits = ckpt.model(**enc).logits  # [1, S, V]
    assert logits.shape[1] == enc["input_ids"].shape[1]


def test_idefics3_with_image_splitting_is_dynamic(folders, tmp_path):
    if processor_missing("idefics3"):
        pytest.skip(processor_missing("idefics3"))
    folder = _copy(folders, "idefics3", tmp_path)
    _edit_json(folder / "preprocessor_config.json", do_image_splitting=True, **{"size.longest_edge": 64})
    ckpt = load_checkpoint(folder)
    assert ckpt.dynamic_resolution
    sizes = ((32, 32), (16, 96), (96, 40))
    counts, _ = _processor_counts(ckpt.processor, "idefics3", sizes)
    assert counts == [ckpt.visual_tokens(s) for s in sizes] and len(set(counts)) > 1
