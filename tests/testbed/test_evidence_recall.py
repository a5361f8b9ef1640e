"""examples/evidence_recall.py: the share of a question's evidence patches a plan keeps at its first pruning
point, counted from the runner's kept indices (a fake runner keeps known patches)."""

from types import SimpleNamespace

import pytest
import torch

from quota.runtime.baselines import fastv, visionzip_nomerge
from tests.example_scripts import load_example


class FakeRunner:
    """Keeps, at every layer, the visual indices it is given (one row per question)."""

    keep: list[list[int]] = []

    @classmethod
    def from_plan(cls, model, plan):
        return cls()

    def prefill(self, ids, mask, pixels, reserve):
        rows = torch.tensor(FakeRunner.keep[: ids.shape[0]])
        FakeRunner.keep = FakeRunner.keep[ids.shape[0]:]
        self.kept_indices = [rows] * 30


def question(boxes):
    return SimpleNamespace(task="counting", meta={"evidence": boxes})


def test_recall_counts_the_kept_share_of_the_evidence_patches(monkeypatch):
    er = load_example("evidence_recall")
    monkeypatch.setattr(er, "PrunedRunner", FakeRunner)
    # question 0: one 16 x 8 px box at the top left = patches 0 and 1; question 1: no evidence
    questions = [question([(0, 0, 16, 8)]), question([])]
    FakeRunner.keep = [[0, 5, 7], [1, 2, 3]]
    batch = SimpleNamespace(input_ids=torch.zeros(2, 3), attention_mask=None, pixel_values=None)
    plan = visionzip_nomerge(64, 576, 30)
    assert er.first_pruning_layer(plan.schedule, 576) == 0
    assert er.recall_of(None, [batch], questions, plan, 576) == [pytest.approx(0.5), None]
    assert er.first_pruning_layer(fastv(64, 576, 30, form="keep").schedule, 576) == 2
    assert er.METHODS["fastv_keep"](64, 576, 30).schedule[2] == 64
