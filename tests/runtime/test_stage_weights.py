"""Per-stage scoring: the pruning point before layer 0 is scored with the ``pre_llm`` weights, every later one with
the ``in_llm`` weights (or ``weights``), through the runner, ``from_plan`` and ``apply``."""

import pytest
import torch

from quota.recipe import PruningPlan, Recipe, ScoringSpec
from quota.runtime.apply import PrunedModel, apply
from quota.runtime.generate import PrunedRunner
from quota.runtime.scoring import random_signal
from tests.runtime.models import n_visual

PRE = {"vision_attn": 1.0}
IN = {"random": 1.0}


def kept_and_logits(runner, batch):
    ids, mask, pv, _ = batch
    logits, _ = runner.prefill(ids, mask, pv)
    return [k.clone() for k in runner.kept_indices], logits


def expected_random_topk(alive: torch.Tensor, layer: int, k: int, n: int, seed: int = 0) -> torch.Tensor:
    """The ``k`` of the ``alive`` original indices ``[B, m]`` with the largest ``random`` signal, in order."""
    values = random_signal(seed, layer, alive, n)
    best = values.topk(k, dim=1).indices
    return alive.gather(1, best).sort(dim=1).values


def test_each_stage_uses_its_own_weights(llava, batch3):
    n = n_visual(llava)
    schedule = (10, 10, 4, 4)
    staged = PrunedRunner(llava, schedule, IN, stage_weights={"pre_llm": PRE})
    kept, logits = kept_and_logits(staged, batch3)
    # before layer 0: what the pre-LLM weighting alone keeps there
    pre_alone, _ = kept_and_logits(PrunedRunner(llava, (10,) * 4, PRE), batch3)
    assert torch.equal(kept[0], pre_alone[0]) and torch.equal(kept[1], kept[0])
    # the in-LLM weighting alone would keep other tokens before layer 0: the stages do differ here
    in_alone, _ = kept_and_logits(PrunedRunner(llava, (10,) * 4, IN), batch3)
    assert not torch.equal(in_alone[0], kept[0])
    # before layer 2: the in-LLM weighting's choice among the tokens the pre-LLM one kept
    assert torch.equal(kept[2], expected_random_topk(kept[0], 2, 4, n))
    pre_everywhere, _ = kept_and_logits(PrunedRunner(llava, schedule, PRE), batch3)
    assert torch.equal(pre_everywhere[0], kept[0]) and not torch.equal(pre_everywhere[2], kept[2])
    # the same scoring written the other way round (in-LLM as a stage, pre-LLM as the default) runs the same
    mirrored = PrunedRunner(llava, schedule, PRE, stage_weights={"in_llm": IN})
    kept_m, logits_m = kept_and_logits(mirrored, batch3)
    assert all(torch.equal(a, b) for a, b in zip(kept, kept_m)) and torch.equal(logits, logits_m)


def test_attention_in_the_llm_after_the_vision_tower_before_it(llava, batch3):
    """The usual pair: the vision tower's attention before layer 0, the language model's attention after."""
    schedule = (10, 10, 4, 4)
    staged = PrunedRunner(llava, schedule, {"attn_last": 1.0}, stage_weights={"pre_llm": PRE})
    kept, _ = kept_and_logits(staged, batch3)
    pre_everywhere, _ = kept_and_logits(PrunedRunner(llava, schedule, PRE), batch3)
    assert torch.equal(kept[0], pre_everywhere[0]) and not torch.equal(kept[2], pre_everywhere[2])
    assert all(set(kept[2][b].tolist()) <= set(kept[0][b].tolist()) for b in range(kept[0].shape[0]))
    with pytest.raises(ValueError, match="before layer 0"):  # without stage weights attention cannot prune there
        kept_and_logits(PrunedRunner(llava, schedule, {"attn_last": 1.0}), batch3)


def test_from_plan_and_apply_pass_the_stage_weights_on(llava, batch3):
    n = n_visual(llava)
    scoring = ScoringSpec(IN, stage_weights={"pre_llm": PRE})
    plan = PruningPlan("staged", (10, 10, 4, 4), scoring)
    direct, logits = kept_and_logits(PrunedRunner(llava, plan.schedule, IN, stage_weights={"pre_llm": PRE}), batch3)
    runner = PrunedRunner.from_plan(llava, plan)
    assert runner.scoring == scoring
    via_plan, logits_plan = kept_and_logits(runner, batch3)
    recipe = Recipe.from_plan(plan, n)
    pruned = apply(llava, recipe, impl="reference")
    assert isinstance(pruned, PrunedModel) and pruned.runner.scoring == scoring
    via_apply, logits_apply = kept_and_logits(pruned.runner, batch3)
    for other, other_logits in ((via_plan, logits_plan), (via_apply, logits_apply)):
        assert all(torch.equal(a, b) for a, b in zip(direct, other))
        assert torch.allclose(logits, other_logits, atol=1e-5)


def test_vision_attn_in_a_stage_is_checked_like_in_the_weights(monkeypatch, llava):
    import quota.runtime.generate as generate

    monkeypatch.setattr(generate, "vision_attention_unsupported", lambda model, spec: "no CLIP tower")
    with pytest.raises(generate.NotSupportedError, match="no CLIP tower"):
        PrunedRunner(llava, (10, 10, 4, 4), IN, stage_weights={"pre_llm": PRE})
