"""The testbed training script's data and losses (``examples/train_testbed.py``): conversations, streams,
grounding against the LM's word embeddings, answer accuracy."""

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tt():
    path = Path(__file__).parents[2] / "examples" / "train_testbed.py"
    spec = importlib.util.spec_from_file_location("train_testbed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conversation_starts_with_the_evaluation_prompt_and_labels_only_answers(tt, smollm2):
    from quota.models.testbed import answer_ids, prompt_ids

    _, tok = smollm2
    pairs = [("Is there a red star?", "yes"), ("How many rings are there?", "3")]
    ids, labels = tt.encode_conversation(tok, pairs)
    first = prompt_ids(tok, pairs[0][0])
    assert ids[: len(first)] == first and all(lab == -100 for lab in labels[: len(first)])
    scored = [t for t, lab in zip(ids, labels) if lab != -100]
    assert scored == answer_ids(tok, "yes") + answer_ids(tok, "3")
    assert all(lab in (-100, t) for t, lab in zip(ids, labels))


def test_stream_scenes_carry_distinct_questions_of_every_task_and_five_label_maps(tt):
    from quota.eval.splits import split_of
    from quota.eval.tasks import TASKS

    stream = iter(tt.TrainStream(seed=3, per_task=2))
    for _ in range(3):
        pairs, image, labels = next(stream)
        questions = [q for q, _ in pairs]
        assert len(set(questions)) == len(questions) >= len(TASKS)
        assert image.shape == (192, 192, 3) and labels.shape == (5, 576)
        assert [int(labels[i].max()) <= n - 1 for i, n in enumerate(tt.N_CLASSES)] == [True] * 5
    assert split_of(tt.scene_seed("train", 3000, 0, 0)) == "train"


def test_grounding_puts_an_image_token_equal_to_a_word_embedding_in_that_class(tt, smollm2):
    from quota.eval.scenes import COLOUR_IDS, SHAPE_IDS

    lm, tok = smollm2
    embed = lm.model.embed_tokens.weight
    head = tt.GroundingHead(embed, tok)
    star = embed[tok(" star", add_special_tokens=False)["input_ids"][-1]]
    red = embed[tok(" red", add_special_tokens=False)["input_ids"][-1]]
    logits = head(torch.stack([star, red])[None])  # [1, 2, C_f] per family
    assert int(logits[0][0, 0].argmax()) == SHAPE_IDS["star"]
    assert int(logits[1][0, 1].argmax()) == COLOUR_IDS["red"]


def test_answer_accuracy_ignores_end_of_turn_tokens(tt):
    logits = torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])  # argmax 1, 0, 2
    targets = torch.tensor([1, 2, 0])  # the second is the end token (2): not counted
    assert tt.answer_accuracy(logits, targets, end_id=2) == pytest.approx(0.5)
