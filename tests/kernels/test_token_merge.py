"""token_merge_triton against token_merge_reference, and the reference against an explicit loop of VisionZip's rule."""

import pytest
import torch

from quota.kernels.token_merge import merge_slots, token_merge_reference, token_merge_triton
from tests.kernels.kernel_checks import DEVICE, gpu, requires_cuda


def _inputs(b, s, d, n, dropped, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, s, d, generator=g).to(dtype)
    span = torch.randint(0, s - n + 1, (b,), generator=g)
    drop = torch.stack([torch.randperm(n, generator=g)[:dropped].sort().values for _ in range(b)])  # [B, D]
    return hidden, span, drop


def merge_loop(hidden, span, dropped, c):
    """Per sample and token: targets at uniform stride over the dropped list, each other dropped token to the
    target of highest cosine similarity (the first among equals), contextual = target + mean of its group."""
    b, d = hidden.shape[0], hidden.shape[-1]
    out = torch.zeros(b, c, d)
    for i in range(b):
        drop = dropped[i].tolist()
        step = max(1, len(drop) // c)
        slots = list(range(0, len(drop), step))[:c]
        targets = [drop[t] for t in slots]
        groups = {j: [] for j in range(c)}
        for t, tok in enumerate(drop):
            if t in slots:
                continue
            h = hidden[i, span[i] + tok].float()
            sims = [float(h @ hidden[i, span[i] + x].float()) / max(float(hidden[i, span[i] + x].float().norm()), 1e-12)
                    for x in targets]
            groups[sims.index(max(sims))].append(h)
        for j, x in enumerate(targets):
            mean = torch.stack(groups[j]).mean(0) if groups[j] else torch.zeros(d)
            out[i, j] = hidden[i, span[i] + x].float() + mean
    return out


def test_slots():
    assert [t.tolist() for t in merge_slots(10, 3)] == [[0, 3, 6], [1, 2, 4, 5, 7, 8, 9]]
    assert [t.tolist() for t in merge_slots(5, 5)] == [[0, 1, 2, 3, 4], []]
    assert [t.tolist() for t in merge_slots(7, 2)] == [[0, 3], [1, 2, 4, 5, 6]]
    assert [t.tolist() for t in merge_slots(4, 0)] == [[], [0, 1, 2, 3]]
    with pytest.raises(ValueError, match="merge"):
        merge_slots(3, 4)


@pytest.mark.parametrize("b,s,d,n,dropped,c", [(2, 30, 24, 17, 9, 3), (1, 12, 5, 10, 10, 1), (3, 20, 7, 11, 6, 6)])
def test_reference_is_visionzips_rule(b, s, d, n, dropped, c):
    hidden, span, drop = _inputs(b, s, d, n, dropped, torch.float32, seed=s + c)
    ref = token_merge_reference(hidden, span, drop, c)
    torch.testing.assert_close(ref.hidden, merge_loop(hidden, span, drop, c), rtol=1e-5, atol=1e-5)
    assert torch.equal(ref.targets, drop[:, merge_slots(dropped, c)[0]])


@pytest.mark.parametrize(
    "b,s,d,n,dropped,c,dtype",
    [(2, 30, 24, 17, 9, 3, torch.float32), (3, 50, 100, 37, 20, 7, torch.bfloat16),
     (1, 12, 5, 10, 10, 10, torch.float32), (2, 60, 40, 45, 40, 21, torch.float16),
     (3, 90, 33, 81, 70, 35, torch.float32), (2, 40, 129, 23, 11, 1, torch.bfloat16),
     (2, 20, 9, 13, 6, 0, torch.float32)],
)  # fmt: skip
def test_kernel_matches_reference(b, s, d, n, dropped, c, dtype):
    hidden, span, drop = _inputs(b, s, d, n, dropped, dtype, seed=s + d + c)
    got = token_merge_triton(hidden.to(DEVICE), span.to(DEVICE), drop.to(DEVICE), c)
    ref = token_merge_reference(hidden, span, drop, c)
    assert torch.equal(got.targets.cpu(), ref.targets) and torch.equal(got.assign.cpu(), ref.assign)
    assert got.hidden.dtype == dtype and got.hidden.shape == (b, c, d)
    torch.testing.assert_close(got.hidden.cpu(), ref.hidden)


def test_strided_hidden_and_ties():
    hidden, span, drop = _inputs(2, 30, 48, 12, 8, torch.float32, seed=5)
    wide = torch.randn(2, 30, 96)[..., ::2]  # last dim strided: copied by the launcher
    got = token_merge_triton(wide.to(DEVICE), span.to(DEVICE), drop.to(DEVICE), 3)
    torch.testing.assert_close(got.hidden.cpu(), token_merge_reference(wide, span, drop, 3).hidden)
    twins = hidden.clone()
    for i in range(2):  # two targets with the same state: every merged token ties and joins the first
        a, b = span[i] + drop[i, merge_slots(8, 3)[0]][:2]
        twins[i, b] = twins[i, a]
    got = token_merge_triton(twins.to(DEVICE), span.to(DEVICE), drop.to(DEVICE), 3)
    ref = token_merge_reference(twins, span, drop, 3)
    assert torch.equal(got.assign.cpu(), ref.assign) and not (ref.assign == 1).any()


def test_invalid_arguments():
    hidden, span, drop = [a.to(DEVICE) for a in _inputs(2, 20, 16, 8, 5, torch.float32, seed=1)]
    with pytest.raises(ValueError, match="merge"):
        token_merge_triton(hidden, span, drop, 6)
    with pytest.raises(ValueError, match="index"):
        token_merge_triton(hidden, span + 15, drop, 2)
    with pytest.raises(ValueError, match="span_start"):
        token_merge_triton(hidden, span.int(), drop, 2)
    with pytest.raises(ValueError, match="dropped"):
        token_merge_triton(hidden, span, drop[0], 2)


@gpu
@requires_cuda
def test_testbed_sized_batch_on_gpu():
    hidden, span, drop = _inputs(16, 620, 576, 576, 576 - 54, torch.bfloat16, seed=7)
    got = token_merge_triton(hidden.to(DEVICE), span.to(DEVICE), drop.to(DEVICE), 10)
    ref = token_merge_reference(hidden, span, drop, 10)
    same = (got.assign.cpu() == ref.assign).all(-1)  # samples without a float32 near-tie in the assignment
    assert same.float().mean() >= 0.75
    torch.testing.assert_close(got.hidden.cpu()[same], ref.hidden[same])
