"""Records -> model inputs, through the processor's own chat template, so each model sees its own format.

A record becomes one user turn holding the image and :func:`question_text`; the prompt is that conversation
rendered with ``add_generation_prompt=True``. The answer tokens are what the template appends to the prompt for
an assistant turn holding the answer (its end-of-turn token included, trailing whitespace dropped), so the
prompt's tokens followed by :func:`answer_ids` are the tokens of the whole conversation.

:func:`encode_batch` gives a :class:`PromptBatch`: the processor's tensors for a batch of records (``input_ids``
and ``attention_mask`` ``[B, S]``, left-padded; the image tensors it makes, such as ``pixel_values``,
Qwen2-VL's ``image_grid_thw``, LLaVA-NeXT's ``image_sizes`` or Idefics3's ``pixel_attention_mask``), the answers
for teacher forcing (``answer_ids``/``answer_mask`` ``[B, A]``, right-padded) and the visual tokens of each row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from quota.data.records import Record, load_image
from quota.data.scoring import option_letter

TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")
"""Tensors ``[B, S]`` of the text (Qwen2-VL's processor adds ``mm_token_type_ids``, derived from the ids)."""


class PromptError(ValueError):
    """The processor's chat template cannot express a record's prompt and answer as quota needs them."""


def question_text(record: Record) -> str:
    """The user's words: the question and, for a multiple-choice record, its lettered options."""
    if record.choices is None:
        return record.question
    options = "\n".join(f"{option_letter(i)}. {c}" for i, c in enumerate(record.choices))
    return f"{record.question}\nOptions:\n{options}\nAnswer with the option's text."


def messages(record: Record, with_answer: bool = False) -> list[dict]:
    """The conversation of ``record`` in the chat-template message format (image first, then the text)."""
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question_text(record)}]}
    if not with_answer:
        return [user]
    return [user, {"role": "assistant", "content": [{"type": "text", "text": record.answer}]}]


def _render(processor, conversation: list[dict], generation: bool) -> str:
    text = processor.apply_chat_template(conversation, add_generation_prompt=generation, tokenize=False)
    return text[0] if isinstance(text, list) else text


def prompt_text(processor, record: Record) -> str:
    """The prompt of ``record`` under ``processor``'s chat template, ending where the answer begins."""
    if not getattr(processor, "chat_template", None):
        raise PromptError(f"{type(processor).__name__} has no chat template: quota renders prompts through it")
    return _render(processor, messages(record), generation=True)


def _bos_in(text: str, tokenizer) -> bool:
    bos = getattr(tokenizer, "bos_token", None)
    return bool(bos) and text.startswith(bos)


def answer_ids(processor, record: Record) -> list[int]:
    """Token ids the template appends to the prompt for the answer turn (end-of-turn token included)."""
    tok = processor.tokenizer
    prompt = prompt_text(processor, record)
    full = _render(processor, messages(record, with_answer=True), generation=False)
    if not full.startswith(prompt):
        raise PromptError(f"line {record.line}: the chat template's answer turn does not extend its generation "
                          f"prompt ({prompt[-20:]!r} is not a prefix of the conversation)")
    suffix = full[len(prompt):].rstrip()
    if not suffix.strip():
        raise PromptError(f"line {record.line}: the chat template renders the answer as nothing")
    head = tok(prompt, add_special_tokens=False)["input_ids"]
    whole = tok(prompt + suffix, add_special_tokens=False)["input_ids"]
    if whole[: len(head)] == head:  # the usual case: the answer's tokens do not merge with the prompt's
        return list(whole[len(head):])
    return list(tok(suffix, add_special_tokens=False)["input_ids"])


@dataclass
class PromptBatch:
    """Model inputs of a batch of records; ``inputs`` holds every tensor the processor made (``input_ids`` and
    ``attention_mask`` ``[B, S]``, left-padded, and the image tensors). ``answer_ids``/``answer_mask`` ``[B, A]``
    (right-padded with ``pad_id``) are ``None`` without answers. ``n_visual[i]``: image tokens of row ``i``."""

    inputs: dict[str, torch.Tensor]
    records: list[Record]
    n_visual: list[int]
    answer_ids: torch.Tensor | None = None
    answer_mask: torch.Tensor | None = None
    tasks: list[str] = field(default_factory=list)

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs["input_ids"]

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.inputs["attention_mask"]

    @property
    def image_inputs(self) -> dict[str, torch.Tensor]:
        """The processor's tensors other than the text's (``pixel_values`` and what goes with it)."""
        return {k: v for k, v in self.inputs.items() if k not in TEXT_KEYS}


def pad_answers(answers: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(ids [B, A], mask [B, A] bool)`` of token lists."""
    width = max(map(len, answers))
    ids = torch.full((len(answers), width), pad_id, dtype=torch.long)  # [B, A]
    mask = torch.zeros((len(answers), width), dtype=torch.bool)  # [B, A]
    for i, a in enumerate(answers):
        ids[i, : len(a)] = torch.tensor(list(a), dtype=torch.long)
        mask[i, : len(a)] = True
    return ids, mask


def pad_id_of(tokenizer) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


def encode_batch(processor, records: Sequence[Record], with_answers: bool = True,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> PromptBatch:
    """The model inputs of ``records`` (one image each), left-padded; with their answers unless ``with_answers``
    is off. ``dtype`` applies to the floating tensors (the pixels), ``device`` to all."""
    if not records:
        raise ValueError("encode_batch needs at least one record")
    tok = processor.tokenizer
    prompts = [prompt_text(processor, r) for r in records]
    images = [load_image(r) for r in records]  # nested one per prompt below: Idefics3/SmolVLM need it
    enc = processor(text=prompts, images=[[img] for img in images], padding=True, padding_side="left",
                    add_special_tokens=not all(_bos_in(p, tok) for p in prompts), return_tensors="pt")
    inputs = {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}
    mask = inputs["attention_mask"]  # [B, S]
    if bool((mask[:, -1] == 0).any()):
        raise PromptError(f"{type(processor).__name__} padded on the right; quota needs left padding")
    for key, value in inputs.items():
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        inputs[key] = value.to(device) if device is not None else value
    image_token = getattr(processor, "image_token_id", None)
    ids = inputs["input_ids"]  # [B, S]
    n_visual = (ids == image_token).sum(1).tolist() if image_token is not None else [0] * len(records)
    batch = PromptBatch(inputs, list(records), [int(n) for n in n_visual], tasks=[r.task for r in records])
    if with_answers:
        answer_ids_, answer_mask = pad_answers([answer_ids(processor, r) for r in records], pad_id_of(tok))
        batch.answer_ids = answer_ids_.to(ids.device)
        batch.answer_mask = answer_mask.to(ids.device)
    return batch


def batches(records: Sequence[Record], batch_size: int) -> list[list[Record]]:
    """``records`` cut into consecutive batches of at most ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return [list(records[i : i + batch_size]) for i in range(0, len(records), batch_size)]
