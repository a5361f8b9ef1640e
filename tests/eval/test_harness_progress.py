"""The evaluation loop's progress: off by default off a terminal, shown when asked, with the time left."""

import torch

from quota.eval.harness import answer_questions
from quota.testbed.splits import test_split


class _Tokenizer:
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1 + ord(c) % 50 for c in text]}

    def convert_tokens_to_ids(self, token):
        return 2

    def batch_decode(self, ids, skip_special_tokens=True):
        return [" yes " for _ in ids]


class _Model(torch.nn.Module):
    """Answers every prompt with one token and records the batch sizes it saw."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.batches = []

    def generate(self, input_ids, attention_mask, pixel_values, max_new_tokens, **kwargs):
        assert input_ids.shape == attention_mask.shape and pixel_values.shape[0] == input_ids.shape[0]
        self.batches.append(input_ids.shape[0])
        return torch.cat([input_ids, torch.full((input_ids.shape[0], 1), 7)], dim=1)


def test_answers_keep_their_order_and_progress_is_off_by_default(capsys):
    questions = test_split("existence", 5)
    model, seen = _Model(), []
    answers = answer_questions(model, _Tokenizer(), questions, batch_size=2, on_batch=lambda d, t: seen.append((d, t)))
    assert answers == ["yes"] * 5 and model.batches == [2, 2, 1]
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert capsys.readouterr().err == ""  # stderr is not a terminal under pytest


def test_progress_when_asked_ends_with_a_count_and_the_time_left(capsys):
    answer_questions(_Model(), _Tokenizer(), test_split("counting", 3), batch_size=2, progress=True)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("answer questions: 3/3, ") and last.endswith("about 0s left")
