"""Tiny random checkpoints of every registered VLM family, written to disk the way the Hub lays them out.

``write_checkpoint(family, folder)`` saves a seeded random model with ``save_pretrained`` (float32, hidden sizes
32-64, 2 decoder layers, images of 32 px) together with an offline-built processor: a byte-level BPE tokenizer
trained here with the ``tokenizers`` library on a small corpus (every special token the family's processor needs
is an added token, so any text encodes), wrapped in ``PreTrainedTokenizerFast`` with a chat template in the
family's own format, plus the family's image processor configured small. The processor files are the Hub
layout (``tokenizer.json``, ``tokenizer_config.json``, ``preprocessor_config.json``, ``processor_config.json``,
``chat_template.jinja``), which ``AutoProcessor.from_pretrained(folder, local_files_only=True)`` reads.

Qwen2-VL, Qwen2.5-VL and SmolVLM processors hold a video processor, which transformers builds only with
torchvision: without it, ``load_checkpoint`` builds them image-only (:mod:`quota.models.checkpoint`), so all six
families load on a CPU machine without torchvision. SmolVLM's processor also needs ``num2words`` (in the dev
extra); :func:`processor_missing` says why a family cannot load in an environment that lacks such a package (with the
dev extra installed: never). Building all six families takes a few seconds on two CPU cores.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm")
CLASSES = {
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "idefics3": "Idefics3ForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration",
}
NEEDS_VIDEO_PROCESSOR = ("qwen2_vl", "qwen2_5_vl", "smolvlm")  # their processors hold a video processor
MISSING_PACKAGES = ("num2words",)  # what a family's processor may need beyond transformers and pillow
DYNAMIC = ("llava_next", "qwen2_vl", "qwen2_5_vl")  # visual tokens depend on the image's size
IMAGE = 32  # px: the vision towers' tile; LLaVA-1.5 gets (32 / 8)^2 = 16 visual tokens

CORPUS = (
    "What colour is the star in the top left? Is there a red circle? How many blue objects are there? "
    "What word is written next to the green square? Is the yellow triangle left of the word LAMP? "
    "yes no zero one two three four five six seven eight nine left right above below red green blue yellow "
    "Answer with one word. Choices: Options: A B C D The answer is"
)

# -- chat templates, each in its family's format (messages with {"type": "image"} / {"type": "text"} parts) ------
_CONTENT = (
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ IMG }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
)


def _template(user: str, user_end: str, assistant: str, assistant_end: str, generation: str, img: str,
              system: str = "") -> str:
    body = _CONTENT.replace("{{ IMG }}", img)
    return (
        system
        + "{% for message in messages %}{% if message['role'] == 'user' %}" + user + body + user_end
        + "{% else %}" + assistant + body + assistant_end + "{% endif %}{% endfor %}"
        + "{% if add_generation_prompt %}" + generation + "{% endif %}"
    )


TEMPLATES = {
    # LLaVA-1.5 (Vicuna): "USER: <image>\nQ ASSISTANT: A</s>"
    "llava": _template("USER: ", "", " ASSISTANT: ", "</s>", " ASSISTANT:", "{{ '<image>\\n' }}"),
    # LLaVA-NeXT (Mistral): "[INST] <image>\nQ [/INST] A</s>"
    "llava_next": _template("[INST] ", "", " [/INST] ", "</s>", " [/INST]", "{{ '<image>\\n' }}"),
    # Qwen2-VL / Qwen2.5-VL: ChatML with a vision span
    "qwen2_vl": _template(
        "<|im_start|>user\n", "<|im_end|>\n", "<|im_start|>assistant\n", "<|im_end|>\n", "<|im_start|>assistant\n",
        "<|vision_start|><|image_pad|><|vision_end|>",
        system="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
    ),
    # Idefics3 / SmolVLM: "<|im_start|>User:<image>Q<end_of_utterance>\nAssistant: A<end_of_utterance>\n"
    "idefics3": _template(
        "<|im_start|>User:", "<end_of_utterance>\n", "Assistant: ", "<end_of_utterance>\n", "Assistant:", "<image>",
    ),
}
TEMPLATES["qwen2_5_vl"] = TEMPLATES["qwen2_vl"]
TEMPLATES["smolvlm"] = TEMPLATES["idefics3"]

_IDEFICS_SPECIALS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", "<|im_start|>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]
SPECIALS = {  # (special tokens, in id order; bos, eos, pad)
    "llava": (["<unk>", "<s>", "</s>", "<pad>", "<image>"], "<s>", "</s>", "<pad>"),
    "llava_next": (["<unk>", "<s>", "</s>", "<pad>", "<image>"], "<s>", "</s>", "<pad>"),
    "qwen2_vl": (["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"], None, "<|im_end|>", "<|endoftext|>"),
    "idefics3": (["<|endoftext|>", "<|im_end|>"] + _IDEFICS_SPECIALS, None, "<end_of_utterance>", "<|endoftext|>"),
}
SPECIALS["qwen2_5_vl"] = SPECIALS["qwen2_vl"]
SPECIALS["smolvlm"] = SPECIALS["idefics3"]


def _import_problem(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as err:  # a torchvision wheel built for another torch fails at import, not at lookup
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:80]}"
    return None


def torchvision_problem() -> str | None:
    """Why torchvision does not import here (it is absent, or built for another torch), or ``None``."""
    return _import_problem("torchvision")


def processor_missing(family: str) -> str | None:
    """Why ``family``'s processor cannot be loaded in this environment (naming the missing package), or ``None``.
    torchvision is not needed: ``load_checkpoint`` builds the processors that hold a video processor without it."""
    if importlib.util.find_spec("PIL") is None:
        return f"{family}: transformers' image processors need pillow"
    if family == "smolvlm" and (problem := _import_problem("num2words")):
        return f"smolvlm: SmolVLMProcessor needs the num2words package ({problem})"
    return None


@lru_cache(maxsize=None)
def tokenizer_json(family: str) -> str:
    """The serialized ``tokenizers`` tokenizer of ``family``: byte-level BPE (256 bytes + merges of CORPUS),
    the family's special tokens first (ids 0, 1, ...). Cached: training takes milliseconds, but it runs once."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = SPECIALS[family][0]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([CORPUS] * 4, trainer)
    return tok.to_str()


def tiny_tokenizer(family: str):
    """A ``PreTrainedTokenizerFast`` for ``family``: left padding, its chat template, its special tokens."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    specials, bos, eos, pad = SPECIALS[family]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer_json(family)), bos_token=bos, eos_token=eos, pad_token=pad,
        unk_token="<unk>" if "<unk>" in specials else None, padding_side="left",
        extra_special_tokens=[s for s in specials if s not in (bos, eos, pad, "<unk>")],
    )
    tok.chat_template = TEMPLATES[family]
    return tok


def _vocab(tok) -> int:
    return (len(tok) + 63) // 64 * 64


def _text(tok, **extra) -> dict:
    """A 2-layer Llama/Qwen2-style text config sized to the tokenizer."""
    return dict(vocab_size=_vocab(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id, **extra)


def _clip_vision():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=IMAGE, patch_size=8)


PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]


def _llava(tok):
    from transformers import CLIPImageProcessor, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(vision_config=_clip_vision(), text_config=LlamaConfig(**_text(tok)),
                         image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
                         image_seq_length=(IMAGE // 8) ** 2)
    image = CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    proc = dict(processor_class="LlavaProcessor", patch_size=8, vision_feature_select_strategy="default",
                num_additional_image_tokens=1, image_token="<image>")
    return LlavaForConditionalGeneration(config), image, proc


def _llava_next(tok):
    from transformers import LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessor

    config = LlavaNextConfig(vision_config=_clip_vision(), text_config=LlamaConfig(**_text(tok)),
                             image_token_id=tok.convert_tokens_to_ids("<image>"),
                             vision_feature_select_strategy="default", image_grid_pinpoints=PINPOINTS)
    image = LlavaNextImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE},
                                    image_grid_pinpoints=PINPOINTS)
    proc = dict(processor_class="LlavaNextProcessor", patch_size=8, vision_feature_select_strategy="default",
                num_additional_image_tokens=1, image_token="<image>")
    return LlavaNextForConditionalGeneration(config), image, proc


QWEN_PIXELS = (16 * 16, 64 * 64)  # min and max pixels of a resized image (patch 4, merge 2: multiples of 8 px)


def _qwen_image():
    from transformers import Qwen2VLImageProcessor

    lo, hi = QWEN_PIXELS
    return Qwen2VLImageProcessor(size={"shortest_edge": lo, "longest_edge": hi}, min_pixels=lo, max_pixels=hi,
                                 patch_size=4, merge_size=2, temporal_patch_size=2)


def _qwen_ids(tok) -> dict:
    ids = tok.convert_tokens_to_ids
    return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))


def _qwen2_vl(tok):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = _text(tok, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
    vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, **_qwen_ids(tok))
    return Qwen2VLForConditionalGeneration(config), _qwen_image(), dict(processor_class="Qwen2VLProcessor")


def _qwen2_5_vl(tok):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = _text(tok, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=4, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=64, fullatt_block_indexes=[1], window_size=16)
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_qwen_ids(tok))
    return Qwen2_5_VLForConditionalGeneration(config), _qwen_image(), dict(processor_class="Qwen2_5_VLProcessor")


def _idefics_parts(tok, image_cls):
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=IMAGE, patch_size=8)
    image = image_cls(do_image_splitting=False, size={"longest_edge": IMAGE}, max_image_size={"longest_edge": IMAGE})
    seq = (IMAGE // 8) ** 2 // 4  # scale factor 2: 4 visual tokens per image
    return vision, image, seq


def _idefics3(tok):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor

    vision, image, seq = _idefics_parts(tok, Idefics3ImageProcessor)
    config = Idefics3Config(vision_config=vision, text_config=_text(tok), scale_factor=2,
                            image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id)
    return Idefics3ForConditionalGeneration(config), image, dict(processor_class="Idefics3Processor", image_seq_len=seq)


def _smolvlm(tok):
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessor

    vision, image, seq = _idefics_parts(tok, SmolVLMImageProcessor)
    config = SmolVLMConfig(vision_config=vision, text_config=_text(tok), scale_factor=2,
                           image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id)
    return SmolVLMForConditionalGeneration(config), image, dict(processor_class="SmolVLMProcessor", image_seq_len=seq)


_BUILDERS: dict[str, Callable] = {
    "llava": _llava, "llava_next": _llava_next, "qwen2_vl": _qwen2_vl, "qwen2_5_vl": _qwen2_5_vl,
    "idefics3": _idefics3, "smolvlm": _smolvlm,
}


def tiny_model(family: str, seed: int = 0):
    """``(model, image processor, processor_config.json entries)`` of ``family``: the random model in eval mode,
    float32, a pure function of ``seed``."""
    torch.manual_seed(seed)
    model, image_processor, processor_config = _BUILDERS[family](tiny_tokenizer(family))
    return model.eval(), image_processor, processor_config


def write_checkpoint(family: str, folder: str | Path, seed: int = 0, processor: bool = True) -> Path:
    """Write a tiny random ``family`` checkpoint (model, and with ``processor`` its processor files) into
    ``folder``; returns the folder. The same ``seed`` writes the same weights."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer(family)
    model, image_processor, processor_config = tiny_model(family, seed)
    model.save_pretrained(folder)
    if processor:
        tok.save_pretrained(folder)
        image_processor.save_pretrained(folder)
        (folder / "processor_config.json").write_text(json.dumps(processor_config, indent=2) + "\n")
        (folder / "chat_template.jinja").write_text(TEMPLATES[family])
    return folder
