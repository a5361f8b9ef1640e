"""Score-and-gather reference: compaction by kept indices, positions and key masks travel along."""

import pytest
import torch

from quota.kernels.score_gather import compact, gather_map, score_gather_reference
from quota.runtime.prune import score_gather


def _loop_map(span_start, n, kept, seq_len):
    rows = []
    for b, start in enumerate(span_start.tolist()):
        visual = set(range(start, start + n))
        keep = {start + int(i) for i in kept[b]}
        rows.append([i for i in range(seq_len) if i not in visual or i in keep])
    return torch.tensor(rows)


@pytest.mark.parametrize("n,k", [(6, 0), (6, 3), (6, 6), (1, 1)])
def test_gather_map_keeps_text_and_order(n, k):
    span = torch.tensor([0, 2, 5])
    g = torch.Generator().manual_seed(n + k)
    kept = torch.stack([torch.randperm(n, generator=g)[:k].sort().values for _ in range(3)])
    assert torch.equal(gather_map(span, n, kept, 12), _loop_map(span, n, kept, 12))


def test_compact_and_score_gather():
    b, s, d, n = 2, 10, 4, 5
    hidden = torch.randn(b, s, d)
    positions = torch.stack([torch.arange(s).expand(b, s), 10 + torch.arange(s).expand(b, s), torch.zeros(b, s).long()])
    valid = torch.ones(b, s, dtype=torch.bool)
    valid[1, :2] = False
    span = torch.tensor([1, 3])
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    out = score_gather_reference(hidden, positions, valid, scores, span, 2)
    assert out.kept.tolist() == [[1, 3], [0, 1]]
    assert out.src.tolist() == [[0, 2, 4, 6, 7, 8, 9], [0, 1, 2, 3, 4, 8, 9]]
    assert torch.equal(out.hidden, hidden.gather(1, out.src[..., None].expand(-1, -1, d)))
    assert torch.equal(out.positions[1], 10 + out.src)  # every row of M-RoPE positions travels along
    assert out.valid.tolist() == [[True] * 7, [False, False] + [True] * 5]
    again = compact(hidden, positions, valid, span, n, out.kept)
    assert all(torch.equal(a, c) for a, c in zip(out, again))
    dispatched = score_gather(hidden, positions, valid, scores, span, 2, "reference")
    assert all(torch.equal(a, c) for a, c in zip(out, dispatched))
    with pytest.raises(ValueError, match="impl"):
        score_gather(hidden, positions, valid, scores, span, 2, "cuda")
