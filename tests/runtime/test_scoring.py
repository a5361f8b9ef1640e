"""Signals, normalization, combination and the budgeted top-k."""

import pytest
import torch

from quota.quantize.attention import quota_attention
from quota.runtime.scoring import (
    SCORE_GRID,
    AttentionRecorder,
    attention_received,
    combine,
    last_query,
    normalize,
    outlier_intensity,
    quantization_risk,
    random_signal,
    select_topk,
    text_queries,
)


def _brute_topk(row: list[float], k: int) -> list[int]:
    order = sorted(range(len(row)), key=lambda i: (-row[i], i))
    return sorted(order[:k])


@pytest.mark.parametrize("n,k", [(1, 0), (1, 1), (7, 3), (16, 16), (33, 10)])
def test_select_topk_exact_count_and_ties(n, k):
    g = torch.Generator().manual_seed(n * 100 + k)
    scores = torch.randint(0, 4, (5, n), generator=g).float()  # many ties
    kept = select_topk(scores, k)
    assert kept.shape == (5, k) and kept.dtype == torch.long
    for b in range(5):
        assert kept[b].tolist() == _brute_topk(scores[b].tolist(), k)


def test_select_topk_signed_zero_ties_and_errors():
    scores = torch.tensor([[-0.0, 0.0, -0.0, 0.0, -1.0]])
    assert select_topk(scores, 2).tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="finite"):
        select_topk(torch.tensor([[1.0, float("nan")]]), 1)
    with pytest.raises(ValueError, match="keep"):
        select_topk(torch.zeros(1, 3), 4)


def test_normalize():
    s = torch.tensor([[2.0, 4.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    assert torch.equal(normalize(s, "minmax"), torch.tensor([[0.0, 1.0, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    rank = normalize(s, "rank")  # ties get their average rank
    torch.testing.assert_close(rank, torch.tensor([[0.0, 2.5 / 3, 1 / 3, 2.5 / 3], [0.5, 0.5, 0.5, 0.5]]))
    with pytest.raises(ValueError):
        normalize(s, "zscore")


def test_combine_weights_snaps_and_checks():
    a = torch.tensor([[0.0, 1.0, 2.0]])
    b = torch.tensor([[3.0, 1.0, 2.0]])
    out = combine({"magnitude": a, "risk": b, "outlier": a}, {"magnitude": 1.0, "risk": -0.5, "outlier": 0.0})
    torch.testing.assert_close(out, torch.tensor([[-0.5, 0.5, 0.75]]))
    assert torch.equal(torch.round(out / SCORE_GRID) * SCORE_GRID, out)
    noisy = combine({"magnitude": a + torch.tensor([[0.0, 0.0, 1e-7]])}, {"magnitude": 1.0})
    assert torch.equal(noisy, combine({"magnitude": a}, {"magnitude": 1.0}))  # noise below the grid is absorbed
    with pytest.raises(ValueError, match="not computed"):
        combine({"magnitude": a}, {"magnitude": 1.0, "risk": 1.0})
    with pytest.raises(ValueError, match="unknown"):
        combine({"magnitude": a}, {"magnitud": 1.0})


def _eager_received(query, key, allowed, rows, weights, cols):
    groups = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(groups, dim=1)
    p = torch.softmax((query @ k.transpose(-1, -2) * 0.25).masked_fill(~allowed, float("-inf")), dim=-1)  # [B,H,T,K]
    out = []
    for b in range(query.shape[0]):
        acc = torch.zeros(len(cols[b]))
        for r, w in zip(rows[b], weights[b]):
            acc += w * p[b, :, r, cols[b]].mean(0)
        out.append(acc / sum(weights[b]))
    return torch.stack(out)


@pytest.mark.parametrize("mask_kind", ["bool", "float", "none"])
def test_attention_received_matches_full_softmax(mask_kind):
    g = torch.Generator().manual_seed(0)
    b, hq, hkv, s, d, n = 2, 4, 2, 12, 16, 5
    q, k = torch.randn(b, hq, s, d, generator=g), torch.randn(b, hkv, s, d, generator=g)
    valid = torch.ones(b, s, dtype=torch.bool)
    valid[1, :2] = False  # left padding of sample 1
    causal = torch.tril(torch.ones(s, s, dtype=torch.bool))
    allowed = (causal[None] & valid[:, None]) | torch.eye(s, dtype=torch.bool)[None]
    allowed = allowed[:, None] if mask_kind != "none" else causal[None, None].expand(b, 1, s, s)
    additive = torch.zeros(b, 1, s, s).masked_fill(~allowed, float("-inf"))
    mask = {"bool": allowed, "float": additive, "none": None}[mask_kind]
    span = torch.tensor([3, 4])
    idx, w = text_queries(s, span, n)
    got = attention_received(q, k, mask, idx, w, span, n, 0.25)
    rows = [list(range(8, 12)), list(range(9, 12))]
    cols = [list(range(3, 8)), list(range(4, 9))]
    torch.testing.assert_close(got, _eager_received(q, k, allowed, rows, [[1.0] * 4, [1.0] * 3], cols))
    last = attention_received(q, k, mask, *last_query(b, s, "cpu"), span, n, 0.25)
    torch.testing.assert_close(last, _eager_received(q, k, allowed, [[11], [11]], [[1.0], [1.0]], cols))


def test_recorder_is_called_by_the_quota_attention_function():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    g = torch.Generator().manual_seed(1)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 2, True
    q = torch.randn(1, 4, 6, 8, generator=g)
    k, v = torch.randn(1, 2, 6, 8, generator=g), torch.randn(1, 2, 6, 8, generator=g)
    span = torch.tensor([1])
    module.quota_probe = AttentionRecorder({"attn_last": last_query(1, 6, "cpu")}, span, 3)
    out, _ = quota_attention(module, q, k, v, None, scaling=0.3)
    ref, _ = sdpa_attention_forward(module, q, k, v, None, scaling=0.3)
    assert torch.equal(out, ref)  # the probe leaves attention unchanged
    expected = attention_received(q, k, None, *last_query(1, 6, "cpu"), span, 3, 0.3)
    assert torch.equal(module.quota_probe.scores["attn_last"], expected)


def test_risk_outlier_and_random():
    x = torch.tensor([[[7.0, -7.0, 1.5, 0.3], [1.0, 1.0, 1.0, 1.0]]])  # [1, 2, 4]
    risk = quantization_risk(x, bits=4)
    assert risk[0, 1] == 0 and risk[0, 0] > 0  # the flat token is exactly representable
    torch.testing.assert_close(outlier_intensity(x)[0], torch.tensor([7.0 / (100.34 / 4) ** 0.5, 1.0]))
    idx = torch.tensor([[0, 3, 5], [3, 5, 7]])
    r = random_signal(3, 2, idx, 8)
    assert r[0, 1] == r[1, 0] and r[0, 2] == r[1, 1]  # by original index, whatever the batch
    assert torch.equal(r, random_signal(3, 2, idx, 8))
    assert not torch.equal(r, random_signal(4, 2, idx, 8))
