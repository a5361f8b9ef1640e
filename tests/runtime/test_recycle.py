"""Token recycling (SparseVLM's rule): the counts, DPC-KNN centres and cluster means against loop references, and
prune()'s contract with ``merge_rule="recycle"`` (exactly k, recycled tokens in their centres' places)."""

import math

import pytest
import torch

from quota.kernels.score_gather import compact
from quota.recipe import Recipe, RecipeError, ScoringSpec
from quota.runtime.baselines import baseline_plan
from quota.runtime.generate import PrunedRunner
from quota.runtime.prune import complement, merge_count, prune, select, visual_span
from quota.runtime.recycle import candidate_count, dpc_knn_centres, recycle_count, recycle_reference
from tests.runtime.models import n_visual, span_inputs


def test_counts_follow_sparsevlm():
    # SparseVLM's first point at 64 tokens on LLaVA-1.5-7B keeps 65 of 576: 154 candidates, 16 clusters
    assert recycle_count(576, 65) == 16
    assert [recycle_count(576, k) for k in (576, 0, 1, 2, 300)] == [0, 0, 1, 2, (int(0.3 * 276) + 1) // 10 + 1]
    assert candidate_count(100, 4) == 31 and candidate_count(10, 5) == 5 and candidate_count(3, 3) == 3
    assert candidate_count(7, 0) == 0
    assert [merge_count(576, k, 576, "recycle") for k in (65, 576)] == [16, 0]
    assert merge_count(5, 65, 576, "recycle") == 5  # merge caps the rule's count
    with pytest.raises(ValueError, match="keep"):
        recycle_count(5, 6)
    with pytest.raises(ValueError, match="merge rule"):
        merge_count(2, 3, 10, "average")


def _centres_loop(x: torch.Tensor, c: int) -> list[int]:
    """DPC-KNN of one sample ``x`` [R, d], written point by point."""
    r, d = x.shape
    dist = [[float((x[i] - x[j]).norm()) / math.sqrt(d) for j in range(r)] for i in range(r)]
    density = [math.exp(-sum(v * v for v in sorted(row)[:c]) / c) for row in dist]
    far = max(max(row) for row in dist)
    delta = []
    for i in range(r):
        denser = [dist[i][j] for j in range(r) if density[j] > density[i] or (density[j] == density[i] and j < i)]
        delta.append(min(denser) if denser else far)
    score = [delta[i] * density[i] for i in range(r)]
    return sorted(range(r), key=lambda i: (-score[i], i))[:c]


@pytest.mark.parametrize("r,d,c", [(13, 7, 3), (5, 3, 1), (9, 16, 9)])
def test_dpc_knn_centres_match_a_loop(r, d, c):
    x = torch.randn(3, r, d, generator=torch.Generator().manual_seed(r + c), dtype=torch.float64)
    got = dpc_knn_centres(x, c)  # [B, c]
    for b in range(3):
        assert got[b].tolist() == _centres_loop(x[b], c)


def test_dpc_knn_finds_one_centre_per_blob():
    g = torch.Generator().manual_seed(0)
    blobs = torch.cat([torch.randn(6, 4, generator=g) * 0.01, 5 + torch.randn(4, 4, generator=g) * 0.01])[None]
    centres = dpc_knn_centres(blobs, 2)[0].tolist()
    assert sorted(i < 6 for i in centres) == [False, True]
    with pytest.raises(ValueError, match="c <= R"):
        dpc_knn_centres(blobs, 11)


def _recycle_loop(hidden, span, scores, dropped, c):
    """The module's steps 2-4 for each sample, one token at a time: (centres, means) per sample."""
    out = []
    for b in range(hidden.shape[0]):
        drop = dropped[b].tolist()
        r = candidate_count(len(drop), c)
        by_score = sorted(drop, key=lambda i: (-float(scores[b, i]), i))[:r]
        cand = sorted(by_score)
        x = hidden[b, [int(span[b]) + i for i in cand]].double()
        centres = sorted(_centres_loop(x, c))
        groups = {j: [] for j in range(c)}
        for i in range(r):
            if i in centres:
                groups[centres.index(i)].append(i)
                continue
            dists = [float((x[i] - x[m]).norm()) for m in centres]
            groups[dists.index(min(dists))].append(i)
        means = torch.stack([x[groups[j]].mean(0) for j in range(c)])
        out.append(([cand[m] for m in centres], means))
    return out


def _inputs(seed=0):
    return span_inputs(b=3, s=40, d=10, n=24, seed=seed)


@pytest.mark.parametrize("k,c", [(6, 2), (9, 1), (3, 3)])
def test_recycle_reference_matches_a_loop(k, c):
    hidden, _, _, scores, span = _inputs(seed=k)
    n = scores.shape[1]
    kept = select("topk", scores, visual_span(hidden, span, n), k - c)
    dropped = complement(kept, n)
    got = recycle_reference(hidden, span, scores, dropped, c)
    assert got.targets.shape == (3, c) and (got.targets[:, 1:] > got.targets[:, :-1]).all()
    assert got.assign.shape == (3, candidate_count(n - k + c, c) - c)
    for b, (centres, means) in enumerate(_recycle_loop(hidden, span, scores, dropped, c)):
        assert got.targets[b].tolist() == centres
        torch.testing.assert_close(got.hidden[b].double(), means, rtol=1e-5, atol=1e-5)
    empty = recycle_reference(hidden, span, scores, dropped, 0)
    assert empty.targets.shape == (3, 0) and empty.hidden.shape == (3, 0, hidden.shape[-1])


@pytest.mark.parametrize("rule", ["topk", "divprune"])
@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_prune_recycles_within_k_in_the_centres_places(rule, impl):
    hidden, positions, valid, scores, span = _inputs(seed=5)
    b, s, d = hidden.shape
    n, k = scores.shape[1], 8
    c = recycle_count(n, k)
    assert c == 1 + (int(0.3 * (n - k)) + 1) // 10
    out = prune(hidden, positions, valid, scores, span, k, rule, merge=n, impl=impl, merge_rule="recycle")
    assert out.hidden.shape == (b, s - n + k, d) and out.kept.shape == (b, k)
    dominant = select(rule, scores, visual_span(hidden, span, n), k - c)
    recycled = recycle_reference(hidden, span, scores, complement(dominant, n), c)
    assert torch.equal(out.kept, torch.cat([dominant, recycled.targets], 1).sort(-1).values)
    plain = compact(hidden, positions, valid, span, n, out.kept)
    assert torch.equal(out.positions, plain.positions) and torch.equal(out.valid, plain.valid)
    rows = span[:, None] + torch.searchsorted(out.kept, recycled.targets)  # [B, c]
    is_centre = torch.zeros(b, s - n + k, dtype=torch.bool).scatter_(1, rows, True)
    assert torch.equal(out.hidden[~is_centre], plain.hidden[~is_centre])  # text and kept tokens untouched
    torch.testing.assert_close(out.hidden.gather(1, rows[..., None].expand(-1, -1, d)), recycled.hidden)
    # the context rule at the same cap would merge min(merge, k) = k tokens: the rules differ
    context = prune(hidden, positions, valid, scores, span, k, rule, merge=2, impl="reference")
    assert not torch.equal(context.hidden, out.hidden)


def test_merge_rule_round_trips_and_stays_out_of_context_files(tmp_path):
    spec = ScoringSpec({"attn_text": 1.0}, merge=576, merge_rule="recycle")
    assert spec.to_dict()["merge_rule"] == "recycle" and ScoringSpec.from_dict(spec.to_dict()) == spec
    assert "merge_rule" not in ScoringSpec({"vision_attn": 1.0}, merge=10).to_dict()
    r = Recipe(model_id="m", model_hash="h" * 64, n_layers=4, n_visual_tokens=16, schedule=(16, 8, 8, 4), scoring=spec,
               quant=None)
    assert Recipe.load(r.save(tmp_path / "r.json")).scoring.merge_rule == "recycle"
    with pytest.raises(RecipeError, match=r"^scoring\.merge_rule = 'mean'; choose one of"):
        ScoringSpec({"attn_text": 1.0}, merge_rule="mean")


def test_sparsevlm_recycles_in_the_runner_and_its_ablation_does_not(llava, batch3):
    ids, mask, pv, _ = batch3
    n = n_visual(llava)
    on, off = baseline_plan("sparsevlm", 7, n, 4), baseline_plan("sparsevlm_norecycle", 7, n, 4)
    assert on.schedule == off.schedule and on.scoring.merge_rule == "recycle" and off.scoring.merge == 0
    runs = []
    for plan in (on, off):
        runner = PrunedRunner.from_plan(llava, plan)
        logits, _ = runner.prefill(ids, mask, pv)
        assert [k.shape[1] for k in runner.kept_indices] == list(plan.schedule)
        runs.append(logits)
    assert not torch.equal(runs[0], runs[1])  # the recycled tokens change what the model reads
