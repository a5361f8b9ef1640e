"""Stage-wise baselines: budget -> schedule mapping, and execution by the same runner."""

import pytest
import torch

from quota.runtime import baselines
from quota.runtime.baselines import BASELINES, baseline_plan, baseline_plan_for, fastv, pyramiddrop, visionzip
from quota.runtime.generate import PrunedRunner
from quota.schedule import ScheduleError, equivalent_tokens
from quota.runtime.scoring import select_topk
from tests.runtime.models import n_visual, tiny_plans

SCORING = {"fastv": "attn_last", "pyramiddrop": "attn_last", "sparsevlm": "attn_text", "sparsevlm_norecycle": "attn_text",
           "visionzip": "vision_attn",
           "visionzip_nomerge": "vision_attn", "divprune": "vision_attn", "cdpruner": "vision_attn", "random": "random"}
SELECTION = {"divprune": "divprune", "cdpruner": "cdpruner"}


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("n,layers", [(576, 30), (576, 32), (36, 24), (144, 22)])
def test_budgets_map_to_valid_schedules(name, n, layers):
    step = max(n / 64, 1.0)  # one step of the candidate grid (at least one token)
    for tokens_of_576 in (64, 128, 192):
        tokens = tokens_of_576 * n / 576
        plan = baseline_plan(name, tokens, n, layers)
        s = plan.schedule
        assert len(s) == layers and all(0 <= k <= n for k in s)
        assert all(a >= b for a, b in zip(s, s[1:]))
        assert abs(equivalent_tokens(s) - tokens) <= step, (name, tokens, s)
        assert set(plan.scoring.active) == {SCORING[name]}
        assert plan.scoring.selection == SELECTION.get(name, "topk")
        assert (plan.scoring.merge > 0) == (name in ("visionzip", "sparsevlm"))
        assert plan.scoring.merge_rule == ("recycle" if name == "sparsevlm" else "context")


def test_schedule_shapes():
    s = fastv(64, 576, 30).schedule
    assert s[:2] == (576, 576) and len(set(s[2:])) == 1 and s[2] == 27
    assert fastv(64, 576, 30, form="keep").schedule[2:] == (64,) * 28
    p = pyramiddrop(128, 576, 30).schedule
    assert p[:2] == (576, 576) and len(set(p)) == 5  # all, then four geometric stages
    with pytest.raises(ScheduleError, match="least"):
        fastv(10, 576, 30)
    with pytest.raises(ScheduleError, match="least"):
        pyramiddrop(10, 576, 30)
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_plan("fastvv", 64, 576, 30)


def test_every_baseline_runs_with_its_schedule(llava, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    for plan in tiny_plans(n):
        runner = PrunedRunner.from_plan(llava, plan)
        tokens = runner.generate(ids, mask, pv, max_new_tokens=3)
        assert tokens.shape == (3, 3)
        assert [k.shape[1] for k in runner.kept_indices] == list(plan.schedule), plan.name


def test_random_is_seeded(llava, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    kept = []
    for seed in (3, 3, 4):
        runner = PrunedRunner.from_plan(llava, baseline_plan("random", 6, n, 4, seed=seed))
        runner.prefill(ids, mask, pv)
        kept.append(runner.kept_indices[0])
    assert torch.equal(kept[0], kept[1]) and not torch.equal(kept[0], kept[2])
    assert torch.equal(kept[0][0], kept[0][1])  # the same tokens for every sample


def test_visionzip_keeps_the_cls_attended_patches(llava, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    runner = PrunedRunner.from_plan(llava, baseline_plan("visionzip_nomerge", 6, n, 4))
    runner.prefill(ids, mask, pv)
    tower = llava.model.vision_tower
    previous = tower.config._attn_implementation
    tower.config._attn_implementation = "eager"
    try:
        out = tower(pv, output_attentions=True, output_hidden_states=True)
    finally:
        tower.config._attn_implementation = previous
    # vision_feature_layer = -2 of 2 layers: the output of layer 0, whose attention ranks the patches
    cls = out.attentions[0][:, :, 0, 1:].mean(1)  # [B, P]
    assert torch.equal(runner.kept_indices[0], select_topk(cls, 6))
    assert all(torch.equal(k, runner.kept_indices[0]) for k in runner.kept_indices)


def test_visionzip_merges_with_the_published_split(llava, batch3):
    assert [visionzip(t, 576, 30).scoring.merge for t in (64, 128, 192)] == [10, 20, 30]  # 54+10, 108+20, 162+30
    assert visionzip(64, 576, 30).schedule == (64,) * 30
    assert visionzip(6, 36, 4).scoring.merge == 1 and visionzip(1, 36, 4).scoring.merge == 0
    assert visionzip(64, 576, 30, contextual=0).scoring.merge == 0
    with pytest.raises(ScheduleError, match="contextual"):
        visionzip(8, 36, 4, contextual=9)
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    merged = PrunedRunner.from_plan(llava, baseline_plan("visionzip", 6, n, 4))
    merged.prefill(ids, mask, pv)
    dominant = PrunedRunner.from_plan(llava, baseline_plan("visionzip_nomerge", 5, n, 4))
    dominant.prefill(ids, mask, pv)
    assert [k.shape[1] for k in merged.kept_indices] == [6] * 4  # 5 dominant + 1 contextual
    assert torch.isin(dominant.kept_indices[0], merged.kept_indices[0]).all()


def test_diversity_presets_prune_once_before_layer_0(llava, batch3, monkeypatch):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    for name in ("divprune", "cdpruner"):
        plan = baseline_plan_for(llava, name, 6)
        assert plan.schedule == (6,) * 4 and plan.scoring.active == {"vision_attn": 1.0}
        runner = PrunedRunner.from_plan(llava, plan)
        runner.prefill(ids, mask, pv)
        assert all(torch.equal(k, runner.kept_indices[0]) for k in runner.kept_indices)
        assert baseline_plan(name, 6, n, 4, relevance="magnitude").scoring.active == {"magnitude": 1.0}
    monkeypatch.setattr(baselines, "vision_attention_unsupported", lambda model, spec: "no CLIP tower")
    assert baseline_plan_for(llava, "cdpruner", 6).scoring.active == {"magnitude": 1.0}
    assert baseline_plan_for(llava, "divprune", 6, relevance="random").scoring.active == {"random": 1.0}
