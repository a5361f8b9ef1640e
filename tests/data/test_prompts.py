"""Records through each family's chat template: model inputs, answer tokens, calibration batches."""

import pytest
import torch

from quota.data.calibration import RecordBatch, calibration_batches, calibration_inputs
from quota.data.prompts import PromptError, answer_ids, encode_batch, messages, prompt_text, question_text
from quota.data.records import load_image, read_records
from quota.profiling.sensitivity import CalibrationBatch
from tests.checkpoints import FAMILIES, processor_missing, write_checkpoint
from tests.data.datasets import ROWS, write_dataset

END_OF_TURN = {"llava": "</s>", "llava_next": "</s>", "qwen2_vl": "<|im_end|>", "qwen2_5_vl": "<|im_end|>",
               "idefics3": "<end_of_utterance>", "smolvlm": "<end_of_utterance>"}
IMAGE_KEYS = {"llava": {"pixel_values"}, "llava_next": {"pixel_values", "image_sizes"},
              "qwen2_vl": {"pixel_values", "image_grid_thw"}, "qwen2_5_vl": {"pixel_values", "image_grid_thw"},
              "idefics3": {"pixel_values", "pixel_attention_mask"}, "smolvlm": {"pixel_values", "pixel_attention_mask"}}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return read_records(write_dataset(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module", params=FAMILIES)
def loaded(request, tmp_path_factory):
    """``(family, LoadedCheckpoint)`` of every registered family (all six load without torchvision)."""
    family = request.param
    if processor_missing(family):
        pytest.skip(processor_missing(family))
    from quota.models.checkpoint import load_checkpoint

    return family, load_checkpoint(write_checkpoint(family, tmp_path_factory.mktemp(family)))


def test_batch_is_left_padded_with_the_familys_image_tensors(loaded, records):
    family, ckpt = loaded
    batch = encode_batch(ckpt.processor, records[:3])
    ids, mask = batch.input_ids, batch.attention_mask  # [B, S]
    assert ids.shape == mask.shape and ids.shape[0] == 3
    assert bool(mask[:, -1].all()) and bool((mask[:, 0] == 0).any())  # left padding, and some padding at all
    for row in mask:  # zeros, then ones
        first = int(row.argmax())
        assert bool((row[:first] == 0).all()) and bool((row[first:] == 1).all())
    assert set(batch.image_inputs) == IMAGE_KEYS[family]
    assert batch.n_visual == [ckpt.visual_tokens(_size(r)) for r in records[:3]]
    assert batch.tasks == [r.task for r in records[:3]]
    pad = ckpt.processor.tokenizer.pad_token_id
    assert bool((ids[mask == 0] == pad).all())


def _size(record):
    img = load_image(record)
    return img.height, img.width


def test_answer_tokens_follow_the_prompt_under_the_template(loaded, records):
    """prompt tokens + answer tokens = the tokens of the whole conversation, as the processor encodes it."""
    family, ckpt = loaded
    proc = ckpt.processor
    for record in records:
        prompt = prompt_text(proc, record)
        full = proc.apply_chat_template(messages(record, with_answer=True), tokenize=False)
        assert full.startswith(prompt) and question_text(record) in prompt
        ans = answer_ids(proc, record)
        head = encode_batch(proc, [record], with_answers=False).input_ids[0].tolist()
        whole = proc(text=[full], images=[[load_image(record)]], return_tensors="pt")["input_ids"][0].tolist()
        assert whole[: len(head) + len(ans)] == head + ans
        assert proc.tokenizer.decode(whole[len(head) + len(ans):]).strip() == ""  # only the template's newline
        text = proc.tokenizer.decode(ans)
        assert text.strip() == record.answer + END_OF_TURN[family]
        assert ans[-1] == proc.tokenizer.convert_tokens_to_ids(END_OF_TURN[family])


def test_the_model_accepts_the_batch(loaded, records):
    """Visual placeholders, pixels and left padding agree with the model: its forward runs on the whole batch."""
    _, ckpt = loaded
    batch = encode_batch(ckpt.processor, records)
    with torch.no_grad():
        logits = ckpt.model(**batch.inputs).logits  # [B, S, V]
    assert logits.shape[:2] == batch.input_ids.shape and torch.isfinite(logits).all()


def test_calibration_batches_are_what_the_profiler_consumes(loaded, records):
    """Every record lands in exactly one batch of at most ``batch_size`` (how records are grouped is
    calibration's business), with its own answer tokens; each row's task names its record (tasks are unique)."""
    family, ckpt = loaded
    by_task = {r.task: r for r in records}
    assert len(by_task) == len(records)
    out = calibration_batches(ckpt.processor, records, batch_size=2, dtype=torch.bfloat16)
    assert sorted(t for b in out for t in b.tasks) == sorted(by_task) and all(1 <= len(b.tasks) <= 2 for b in out)
    assert all(isinstance(b, CalibrationBatch) and isinstance(b, RecordBatch) for b in out)
    first = out[0]
    assert first.pixel_values.dtype == torch.bfloat16 and first.input_ids.dtype == torch.long
    assert set(first.image_inputs) == IMAGE_KEYS[family] - {"pixel_values"}
    assert set(first.model_inputs()) == {"input_ids", "attention_mask"} | IMAGE_KEYS[family]
    for b in out:
        chunk = [by_task[t] for t in b.tasks]
        assert b.answer_ids.shape == b.answer_mask.shape and b.answer_ids.shape[0] == len(chunk)  # [B, A]
        assert b.n_visual == [ckpt.visual_tokens(_size(r)) for r in chunk]
        for row, mask, record in zip(b.answer_ids, b.answer_mask, chunk):
            assert row[mask].tolist() == answer_ids(ckpt.processor, record)
            assert bool(mask[: int(mask.sum())].all())  # right padding
    inputs = calibration_inputs(ckpt.processor, records, batch_size=4)
    sizes = [x["input_ids"].shape[0] for x in inputs]
    assert sum(sizes) == len(records) and max(sizes) <= 4
    assert set(inputs[0]) - {"mm_token_type_ids"} == {"input_ids", "attention_mask"} | IMAGE_KEYS[family]


def test_choices_are_listed_in_the_question(records):
    mc = records[3]  # choices TREE, LAMP, BOAT
    text = question_text(mc)
    assert text.startswith(mc.question) and "A. TREE" in text and "B. LAMP" in text
    assert question_text(records[0]) == records[0].question


def test_a_processor_without_chat_template_is_refused(records):
    class Bare:
        chat_template = None

    with pytest.raises(PromptError, match="no chat template"):
        prompt_text(Bare(), records[0])
    assert len(ROWS) == len(records)
