"""The token-merge kernel's cluster mode (SparseVLM's recycling folds): cluster_merge_triton against
cluster_merge_reference on odd shapes and dtypes, the reference against a loop, and recycle() on the kernel against
recycle_reference."""

import pytest
import torch

from quota.kernels.token_merge import cluster_merge_reference, cluster_merge_triton
from quota.runtime.recycle import recycle, recycle_reference
from tests.kernels.kernel_checks import DEVICE, gpu, requires_cuda


def _inputs(b, s, d, n, c, m, dtype, seed):
    """``hidden`` [B, S, d], ``span`` [B], and disjoint span-relative ``targets`` [B, c] and ``rest`` [B, m]."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, s, d, generator=g).to(dtype)
    span = torch.randint(0, s - n + 1, (b,), generator=g)
    picks = [torch.randperm(n, generator=g)[: c + m] for _ in range(b)]
    targets = torch.stack([p[:c].sort().values for p in picks])
    rest = torch.stack([p[c:].sort().values for p in picks])
    return hidden, span, targets, rest


def _cluster_loop(hidden, span, targets, rest):
    """Per token: the nearest centre in L2 (the first among equals); output = mean of the centre and its tokens."""
    b, c, d = hidden.shape[0], targets.shape[1], hidden.shape[-1]
    out = torch.zeros(b, c, d, dtype=torch.float64)
    for i in range(b):
        centres = [hidden[i, span[i] + t].double() for t in targets[i].tolist()]
        groups = [[x] for x in centres]
        for t in rest[i].tolist():
            h = hidden[i, span[i] + t].double()
            dist = [float((h - x).norm()) for x in centres]
            groups[dist.index(min(dist))].append(h)
        for j in range(c):
            out[i, j] = torch.stack(groups[j]).mean(0)
    return out


@pytest.mark.parametrize("b,s,d,n,c,m", [(2, 30, 24, 17, 3, 6), (1, 12, 5, 10, 1, 9), (3, 20, 7, 11, 4, 0)])
def test_reference_is_the_nearest_centre_mean(b, s, d, n, c, m):
    hidden, span, targets, rest = _inputs(b, s, d, n, c, m, torch.float32, seed=s + c)
    ref = cluster_merge_reference(hidden, span, targets, rest)
    torch.testing.assert_close(ref.hidden.double(), _cluster_loop(hidden, span, targets, rest), rtol=1e-5, atol=1e-5)
    assert torch.equal(ref.targets, targets) and ref.assign.shape == (b, m)


@pytest.mark.parametrize(
    "b,s,d,n,c,m,dtype",
    [(2, 30, 24, 17, 3, 6, torch.float32), (3, 50, 100, 37, 7, 13, torch.bfloat16),
     (1, 12, 5, 10, 10, 0, torch.float32), (2, 60, 40, 45, 21, 19, torch.float16),
     (2, 40, 129, 23, 1, 10, torch.bfloat16), (2, 20, 9, 13, 0, 6, torch.float32)],
)  # fmt: skip
def test_kernel_matches_reference(b, s, d, n, c, m, dtype):
    hidden, span, targets, rest = _inputs(b, s, d, n, c, m, dtype, seed=s + d + c)
    got = cluster_merge_triton(hidden.to(DEVICE), span.to(DEVICE), targets.to(DEVICE), rest.to(DEVICE))
    ref = cluster_merge_reference(hidden, span, targets, rest)
    assert torch.equal(got.targets.cpu(), ref.targets) and torch.equal(got.assign.cpu(), ref.assign)
    assert got.hidden.dtype == dtype and got.hidden.shape == (b, c, d)
    torch.testing.assert_close(got.hidden.cpu(), ref.hidden)


def test_invalid_arguments():
    hidden, span, targets, rest = [a.to(DEVICE) for a in _inputs(2, 20, 16, 8, 2, 3, torch.float32, seed=1)]
    with pytest.raises(ValueError, match="index"):
        cluster_merge_triton(hidden, span + 15, targets, rest)
    with pytest.raises(ValueError, match="span_start"):
        cluster_merge_triton(hidden, span.int(), targets, rest)
    with pytest.raises(ValueError, match="rest"):
        cluster_merge_triton(hidden, span, targets, rest[0])


@pytest.mark.parametrize("n,dropped,c", [(24, 18, 2), (40, 33, 4)])
def test_recycle_on_the_kernel_matches_the_reference(n, dropped, c):
    g = torch.Generator().manual_seed(n)
    b, s, d = 2, n + 9, 20
    hidden = torch.randn(b, s, d, generator=g)
    span = torch.randint(0, s - n + 1, (b,), generator=g)
    scores = torch.rand(b, n, generator=g)
    drop = torch.stack([torch.randperm(n, generator=g)[:dropped].sort().values for _ in range(b)])
    got = recycle(*(t.to(DEVICE) for t in (hidden, span, scores, drop)), c, impl="triton")
    ref = recycle_reference(hidden, span, scores, drop, c)
    assert torch.equal(got.targets.cpu(), ref.targets) and torch.equal(got.assign.cpu(), ref.assign)
    torch.testing.assert_close(got.hidden.cpu(), ref.hidden)


@gpu
@requires_cuda
def test_testbed_sized_recycling_on_gpu():
    hidden, span, targets, rest = _inputs(16, 620, 576, 576, 16, 138, torch.bfloat16, seed=7)
    got = cluster_merge_triton(hidden.to(DEVICE), span.to(DEVICE), targets.to(DEVICE), rest.to(DEVICE))
    ref = cluster_merge_reference(hidden, span, targets, rest)
    same = (got.assign.cpu() == ref.assign).all(-1)  # samples without a float32 near-tie in the assignment
    assert same.float().mean() >= 0.75
    torch.testing.assert_close(got.hidden.cpu()[same], ref.hidden[same])
