"""score_gather_triton against score_gather_reference: bit-identical selection and compaction."""

import pytest
import torch

from quota.kernels.score_gather import score_gather_reference, score_gather_triton
from tests.kernels.kernel_checks import DEVICE, gpu, requires_cuda


def _inputs(b, s, d, n, rows, dtype, seed, ties=False):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, s, d, generator=g).to(dtype)
    positions = torch.stack([torch.arange(s).expand(b, s) * (r + 1) for r in range(rows)])  # [R, B, S]
    valid = torch.rand(b, s, generator=g) > 0.2
    scores = torch.randn(b, n, generator=g)
    if ties:  # few distinct values, signed zeros, extremes
        scores = torch.randint(-2, 3, (b, n), generator=g).float()
        scores[scores == 0] = torch.tensor([0.0, -0.0]).repeat(n)[: int((scores == 0).sum())]
        scores[:, 0] = torch.finfo(torch.float32).max
        scores[:, -1] = -torch.finfo(torch.float32).max
    span = torch.randint(0, s - n + 1, (b,), generator=g)
    return hidden, positions, valid, scores, span


def _check(args, k):
    got = score_gather_triton(*[a.to(DEVICE) for a in args], k)
    ref = score_gather_reference(*args, k)
    for name, a, r in zip(ref._fields, got, ref):
        assert a.dtype == r.dtype and torch.equal(a.cpu(), r), name


@pytest.mark.parametrize(
    "b,s,d,n,k,rows,dtype",
    [(1, 9, 24, 5, 2, 1, torch.float32), (3, 40, 96, 17, 0, 3, torch.bfloat16), (2, 33, 200, 33, 33, 1, torch.float16),
     (3, 70, 64, 37, 11, 3, torch.float32), (2, 600, 40, 576, 131, 1, torch.bfloat16),
     (1, 3, 8, 1, 1, 1, torch.float32)],
)  # fmt: skip
@pytest.mark.parametrize("ties", [False, True])
def test_bit_identical_to_reference(b, s, d, n, k, rows, dtype, ties):
    _check(_inputs(b, s, d, n, rows, dtype, seed=s + n + k, ties=ties), k)


def test_non_contiguous_hidden_and_wide_scores():
    hidden, positions, valid, scores, span = _inputs(2, 30, 48, 12, 1, torch.float32, seed=5)
    wide = torch.randn(2, 30, 96)[..., ::2]  # last dim strided: copied by the launcher
    _check((wide, positions, valid, scores, span), 4)
    _check((hidden.transpose(0, 1).contiguous().transpose(0, 1), positions, valid, scores.double(), span), 7)


def test_invalid_arguments():
    hidden, positions, valid, scores, span = [a.to(DEVICE) for a in _inputs(2, 20, 16, 8, 1, torch.float32, seed=1)]
    with pytest.raises(ValueError, match="keep"):
        score_gather_triton(hidden, positions, valid, scores, span, 9)
    with pytest.raises(ValueError, match="finite"):
        score_gather_triton(hidden, positions, valid, scores.clone().fill_(float("nan")), span, 3)
    with pytest.raises(ValueError, match="span"):
        score_gather_triton(hidden, positions, valid, scores, span + 20, 3)
    with pytest.raises(ValueError, match="positions"):
        score_gather_triton(hidden, positions[0], valid, scores, span, 3)
    with pytest.raises(ValueError, match="valid"):
        score_gather_triton(hidden, positions, valid.int(), scores, span, 3)


@gpu
@requires_cuda
def test_testbed_sized_batch_on_gpu():
    args = _inputs(16, 620, 576, 576, 3, torch.bfloat16, seed=7)
    for k in (576, 192, 64, 1):
        _check(args, k)
