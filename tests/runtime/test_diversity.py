"""Diversity selection rules against naive references: DivPrune's greedy max-min as an explicit loop, the DPP's
fast greedy MAP as step-by-step log-det maximization; batch independence, determinism, edge cases."""

import pytest
import torch

from quota.runtime.diversity import cdpruner_select, divprune_select, relevance
from quota.runtime.scoring import SCORE_GRID

RULES = {"divprune": divprune_select, "cdpruner": cdpruner_select}


def _snap(x: float) -> float:
    return round(x / SCORE_GRID) * SCORE_GRID


def _first_best(values: dict[int, float]) -> int:
    """The index of the largest value, the lowest index among equals."""
    best = max(values.values())
    return min(i for i, v in values.items() if v == best)


def _unit(features: torch.Tensor) -> torch.Tensor:
    f = features.float()
    return f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def divprune_loop(features: torch.Tensor, scores: torch.Tensor, k: int) -> list[int]:
    """One sample (``[n, d]``, ``[n]``): seed with the best score, then repeatedly the unselected token farthest
    (cosine distance, snapped to the grid) from its nearest selected token."""
    n = scores.shape[0]
    f = _unit(features)
    dist = [[_snap(1.0 - float(f[i] @ f[j])) for j in range(n)] for i in range(n)]
    chosen = [_first_best({i: float(scores[i]) for i in range(n)})] if k else []
    while len(chosen) < k:
        chosen.append(_first_best({j: min(dist[j][s] for s in chosen) for j in range(n) if j not in chosen}))
    return sorted(chosen)


def dpp_loop(features: torch.Tensor, scores: torch.Tensor, k: int) -> list[int]:
    """One sample: each step adds the token of largest gain det(L_{Y+j}) / det(L_Y) (float64 determinants,
    snapped to the grid); once every gain snaps to 0 (the DPP is exhausted), the rest by score."""
    n = scores.shape[0]
    f = _unit(features).double()
    q = relevance(scores[None])[0].double()
    kernel = q[:, None] * (f @ f.T) * q[None, :]  # [n, n]
    chosen: list[int] = []
    det_y, exhausted = 1.0, False
    while len(chosen) < k:
        rest = [j for j in range(n) if j not in chosen]
        if not exhausted:
            dets = {j: float(torch.linalg.det(kernel[chosen + [j]][:, chosen + [j]])) for j in rest}
            gains = {j: _snap(dets[j] / det_y) for j in rest}
            exhausted = max(gains.values()) <= 0
        if exhausted:
            j = _first_best({j: _snap(float(scores[j])) for j in rest})
        else:
            j = _first_best(gains)
            det_y = dets[j]
        chosen.append(j)
    return sorted(chosen)


LOOPS = {"divprune": divprune_loop, "cdpruner": dpp_loop}


def _inputs(b, n, d, seed, distinct=None):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(b, n, d, generator=g)
    if distinct:  # only a few distinct feature vectors and scores: many exact ties
        features = torch.randn(b, distinct, d, generator=g).gather(
            1, torch.randint(0, distinct, (b, n, 1), generator=g).expand(-1, -1, d))
        scores = torch.randint(0, 3, (b, n), generator=g).float()
    else:
        scores = torch.rand(b, n, generator=g)
    return features, scores


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("b,n,d,seed,distinct", [(3, 9, 16, 0, None), (2, 12, 20, 1, None), (2, 11, 3, 2, None),
                                                 (3, 10, 8, 3, 3)])  # fmt: skip
def test_rules_match_their_naive_reference(rule, b, n, d, seed, distinct):
    features, scores = _inputs(b, n, d, seed, distinct)
    for k in range(n + 1):
        got = RULES[rule](features, scores, k)
        assert got.shape == (b, k) and got.dtype == torch.long
        for i in range(b):
            assert got[i].tolist() == LOOPS[rule](features[i], scores[i], k), (rule, k, i)


def test_dpp_gains_are_the_conditional_variances():
    """The first pick is the largest q_i^2; a duplicate of a chosen token has no gain, so it comes last."""
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])[None]
    s = torch.tensor([[1.0, 0.9, 0.5, 0.0]])
    assert cdpruner_select(f, s, 1).tolist() == [[0]]
    assert cdpruner_select(f, s, 2).tolist() == [[0, 2]]  # token 1 repeats token 0; token 3 has q = 0
    assert cdpruner_select(f, s, 3).tolist() == [[0, 1, 2]]  # exhausted: the rest by score


def test_divprune_spreads_out():
    f = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [-1.0, 0.0]])[None]
    s = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    assert divprune_select(f, s, 1).tolist() == [[1]]  # the best-scored seed
    assert divprune_select(f, s, 2).tolist() == [[1, 3]]  # then the farthest from it


@pytest.mark.parametrize("rule", sorted(RULES))
def test_batch_independence_and_determinism(rule):
    features, scores = _inputs(5, 40, 24, seed=7)
    k = 13
    batch = RULES[rule](features, scores, k)
    assert torch.equal(batch, RULES[rule](features, scores, k))
    for i in range(5):
        alone = RULES[rule](features[i : i + 1], scores[i : i + 1], k)
        assert torch.equal(alone[0], batch[i]), i
        mixed = RULES[rule](features[[i, (i + 2) % 5]], scores[[i, (i + 2) % 5]], k)
        assert torch.equal(mixed[0], batch[i]), i
    assert (batch[:, 1:] > batch[:, :-1]).all()  # ascending, distinct


@pytest.mark.parametrize("rule", sorted(RULES))
def test_edge_cases(rule):
    features, scores = _inputs(2, 6, 4, seed=1)
    assert RULES[rule](features, scores, 0).shape == (2, 0)
    assert torch.equal(RULES[rule](features, scores, 6), torch.arange(6).expand(2, 6))
    assert RULES[rule](features[:, :1], scores[:, :1], 1).tolist() == [[0], [0]]
    zero = torch.zeros(2, 6, 4)  # zero features: orthogonal to everything, still exactly k
    assert RULES[rule](zero, scores, 3).shape == (2, 3)
    assert RULES[rule](features.double(), scores, 3).shape == (2, 3)
    with pytest.raises(ValueError, match="keep"):
        RULES[rule](features, scores, 7)
    with pytest.raises(ValueError, match="features"):
        RULES[rule](features[:, :5], scores, 2)
