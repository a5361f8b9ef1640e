"""Pruning points with a selection rule and merging: prune()'s contract (exactly k, original order, text kept,
contextual tokens in their targets' places) and PrunedRunner / apply honouring the recipe's scoring."""

import pytest
import torch

from quota.kernels.score_gather import compact
from quota.kernels.token_merge import token_merge_reference
from quota.recipe import PruningPlan, Recipe, ScoringSpec
from quota.runtime.apply import apply
from quota.runtime.generate import PrunedRunner
from quota.runtime.graphs import forbid_host_sync
from quota.runtime.prune import complement, merge_count, prune, score_gather, select, visual_span
from quota.runtime.scoring import activation_magnitude, combine
from quota.signals import SELECTIONS
from tests.runtime.models import left_pad, n_visual, pixels, prompt, span_inputs

RULES = sorted(SELECTIONS)


def test_topk_without_merge_is_score_gather_bit_for_bit():
    args = span_inputs()
    for k in (0, 5, 14):
        out, ref = prune(*args, k, impl="reference"), score_gather(*args, k, impl="reference")
        assert all(torch.equal(a, r) for a, r in zip(out, ref))


@pytest.mark.parametrize("rule", RULES)
def test_rules_keep_exactly_k_in_original_order(rule):
    hidden, positions, valid, scores, span = span_inputs()
    n = scores.shape[1]
    for k in (0, 1, 6, n - 1, n):
        out = prune(hidden, positions, valid, scores, span, k, rule, impl="reference")
        kept = select(rule, scores, visual_span(hidden, span, n), k)
        assert torch.equal(out.kept, kept)
        ref = compact(hidden, positions, valid, span, n, kept)
        assert all(torch.equal(a, r) for a, r in zip(out, ref))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_merging_keeps_k_with_contextual_tokens_in_their_targets_places(rule, impl):
    hidden, positions, valid, scores, span = span_inputs(seed=1)
    b, s, d = hidden.shape
    n, k, c = scores.shape[1], 6, 2
    out = prune(hidden, positions, valid, scores, span, k, rule, merge=c, impl=impl)
    assert out.hidden.shape == (b, s - n + k, d) and out.kept.shape == (b, k)
    dominant = select(rule, scores, visual_span(hidden, span, n), k - c)
    merged = token_merge_reference(hidden, span, complement(dominant, n), c)
    assert torch.equal(out.kept, torch.cat([dominant, merged.targets], 1).sort(-1).values)
    plain = compact(hidden, positions, valid, span, n, out.kept)  # the same layout, before the merge
    assert torch.equal(out.positions, plain.positions) and torch.equal(out.valid, plain.valid)
    assert torch.equal(out.src, plain.src)
    rows = span[:, None] + torch.searchsorted(out.kept, merged.targets)  # [B, c]
    is_target = torch.zeros(b, s - n + k, dtype=torch.bool).scatter_(1, rows, True)
    assert torch.equal(out.hidden[~is_target], plain.hidden[~is_target])  # text and dominant tokens untouched
    got = out.hidden.gather(1, rows[..., None].expand(-1, -1, d))
    torch.testing.assert_close(got, merged.hidden)  # the merged hidden states are the reference's
    assert not torch.equal(got, plain.hidden.gather(1, rows[..., None].expand(-1, -1, d)))


def test_merge_count_and_complement():
    assert [merge_count(3, k, 10) for k in (0, 2, 3, 7, 10)] == [0, 2, 3, 3, 0]
    kept = torch.tensor([[1, 4], [0, 5]])
    assert complement(kept, 6).tolist() == [[0, 2, 3, 5], [1, 2, 3, 4]]
    hidden, positions, valid, scores, span = span_inputs()
    full = prune(hidden, positions, valid, scores, span, 14, "divprune", merge=3, impl="reference")
    assert torch.equal(full.hidden, hidden)  # k = n: nothing pruned, nothing merged
    with pytest.raises(ValueError, match="selection"):
        select("dpp", scores, visual_span(hidden, span, 14), 3)
    with pytest.raises(ValueError, match="finite"):
        prune(hidden, positions, valid, scores.clone().fill_(float("nan")), span, 3, "divprune")


# ----------------------------------------------------------------------------------- the runner


def _schedule(n):  # prunes before layers 0, 1 and 3
    return (n - 2, n // 2, n // 2, n // 4)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("merge", [0, 2])
def test_runner_keeps_exactly_k_per_layer(llava, batch3, rule, merge):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    runner = PrunedRunner(llava, _schedule(n), {"attn_last": 1.0, "magnitude": 0.5}, selection=rule, merge=merge)
    tokens = runner.generate(ids, mask, pv, max_new_tokens=2)
    assert tokens.shape == (3, 2)
    assert [k.shape[1] for k in runner.kept_indices] == list(_schedule(n))
    for before, after in zip(runner.kept_indices, runner.kept_indices[1:]):
        assert torch.isin(after, before).all() and (after[:, 1:] > after[:, :-1]).all()


@pytest.mark.parametrize("rule", ["divprune", "cdpruner"])
def test_runner_selects_on_the_projected_image_features_before_layer_0(llava, batch3, rule):
    ids, mask, pv, _ = batch3
    runner = PrunedRunner(llava, (5, 5, 5, 5), {"magnitude": 1.0}, selection=rule)
    runner.prefill(ids, mask, pv)
    feats = runner.encode_images(pv, 3, {})  # [B, N, d]
    scores = combine({"magnitude": activation_magnitude(feats)}, {"magnitude": 1.0})
    assert torch.equal(runner.kept_indices[0], select(rule, scores, feats, 5))


@pytest.mark.parametrize("rule,merge", [("divprune", 0), ("cdpruner", 0), ("topk", 2), ("divprune", 2)])
def test_runner_batch_independence(llava, rule, merge):
    n = n_visual(llava)
    rows = [prompt(n, 3, 5, 0), prompt(n, 1, 2, 1), prompt(n, 4, 9, 2)]
    pv = pixels(3, seed=3)
    runner = PrunedRunner(llava, _schedule(n), {"attn_last": 1.0, "magnitude": 0.5}, selection=rule, merge=merge)
    ids, mask = left_pad(rows)
    together = runner.generate(ids, mask, pv, max_new_tokens=3)
    kept = runner.kept_indices
    for i, row in enumerate(rows):
        ids1, mask1 = left_pad([row])
        alone = runner.generate(ids1, mask1, pv[i : i + 1], max_new_tokens=3)
        assert torch.equal(alone[0], together[i])
        assert all(torch.equal(a[0], k[i]) for a, k in zip(runner.kept_indices, kept))


def test_apply_and_from_plan_honour_the_recipes_selection_and_merge(llava, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    scoring = ScoringSpec({"attn_last": 1.0, "magnitude": 0.5}, selection="cdpruner", merge=1)
    plan = PruningPlan("t", _schedule(n), scoring)
    pruned = apply(llava, Recipe.from_plan(plan, n))
    assert pruned.runner.scoring == scoring
    direct = PrunedRunner(llava, _schedule(n), scoring.weights, selection="cdpruner", merge=1)
    assert torch.equal(pruned.generate(ids, mask, pv, max_new_tokens=2)[:, ids.shape[1]:],
                       direct.generate(ids, mask, pv, max_new_tokens=2))
    assert all(torch.equal(a, b) for a, b in zip(pruned.runner.kept_indices, direct.kept_indices))
    assert PrunedRunner.from_plan(llava, plan).scoring == scoring
    with pytest.raises(ValueError, match="scoring.selection"):
        PrunedRunner(llava, _schedule(n), selection="dpp")


@pytest.mark.parametrize("rule,merge,merge_rule", [("divprune", 0, "context"), ("cdpruner", 1, "context"),
                                                   ("topk", 2, "context"), ("divprune", 64, "recycle")])
def test_unchecked_prefill_reads_nothing_back(llava, batch3, rule, merge, merge_rule):
    """What StaticPrefill records: the selection rules, the merge and the recycling read nothing back to the host."""
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    runner = PrunedRunner(llava, _schedule(n), {"attn_last": 1.0, "magnitude": 0.5}, impl="reference",
                          selection=rule, merge=merge, merge_rule=merge_rule)
    want, _ = runner.prefill(ids, mask, pv, reserve=2)
    want_kept = runner.kept_indices
    feats = runner.encode_images(pv, ids.shape[0], {})
    with forbid_host_sync():
        got, _ = runner.prefill_language(ids, mask, feats, pv, 2, None, checks=False)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(runner.kept_indices, want_kept))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("rule,merge,merge_rule", [("divprune", 2, "context"), ("cdpruner", 0, "context"),
                                                   ("topk", 2, "context"), ("topk", 64, "recycle")])
def test_recorded_prefill_with_triton_merge_on_cuda(llava, batch3, rule, merge, merge_rule):
    """StaticPrefill records the selection and the Triton merge (or the recycling) in a CUDA graph and replays the
    eager prefill."""
    from quota.runtime.graphs import StaticPrefill

    model = llava.to("cuda")
    try:
        ids, mask, pv, _ = (x.to("cuda") if isinstance(x, torch.Tensor) else x for x in batch3)
        n = n_visual(model)
        runner = PrunedRunner(model, _schedule(n), {"attn_last": 1.0, "magnitude": 0.5}, impl="triton",
                              selection=rule, merge=merge, merge_rule=merge_rule)
        static = StaticPrefill(runner, reserve=2)
        static(ids, mask, pv)  # eager, then recorded
        for request in ((ids, mask, pv.flip(0)), (ids, mask, pv)):
            want, _ = runner.prefill(*request, reserve=2)
            want_kept = runner.kept_indices
            got, state = static(*request)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            assert all(torch.equal(a, b) for a, b in zip(state.kept, want_kept))
    finally:
        llava.to("cpu")
