"""examples/kl_floor.py: the mean KL over questions and the seeded pixel noise it measures with."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tests.example_scripts import load_example


@dataclass
class Batch:
    pixel_values: torch.Tensor
    answer_ids: torch.Tensor
    answer_mask: torch.Tensor


def batch(pixels, n=3):
    """``n`` questions of 2 answer tokens; the second question's second token is padding."""
    return Batch(pixels, torch.zeros(n, 2, dtype=torch.long), torch.tensor([[1, 1], [1, 0], [1, 1]][:n]))


def test_mean_kl_is_the_per_question_kl_averaged_over_every_question():
    kl_floor = load_example("kl_floor")
    gen = torch.Generator().manual_seed(0)
    ref = [F.log_softmax(torch.randn(3, 2, 5, generator=gen), -1) for _ in range(2)]  # [B, A, V] per batch
    other = [F.log_softmax(torch.randn(3, 2, 5, generator=gen), -1) for _ in range(2)]
    batches = [batch(torch.zeros(3, 1)), batch(torch.zeros(3, 1))]
    assert kl_floor.mean_kl(ref, ref, batches) == 0.0
    by_hand = []
    for r, o, b in zip(ref, other, batches):
        per_token = (r.exp() * (r - o)).sum(-1) * b.answer_mask  # [B, A]
        by_hand += per_token.sum(-1).tolist()
    assert abs(kl_floor.mean_kl(ref, other, batches) - sum(by_hand) / len(by_hand)) < 1e-6


def test_pixel_noise_is_seeded_and_scaled():
    kl_floor = load_example("kl_floor")
    pixels = torch.zeros(2, 3, 4, 4)
    a = kl_floor.with_pixel_noise([batch(pixels, n=2)], 1e-3)
    b = kl_floor.with_pixel_noise([batch(pixels, n=2)], 1e-3)
    c = kl_floor.with_pixel_noise([batch(pixels, n=2)], 1e-2)
    assert torch.equal(a[0].pixel_values, b[0].pixel_values)
    assert torch.allclose(c[0].pixel_values, 10 * a[0].pixel_values)
    assert 0 < a[0].pixel_values.std() < 2e-3
    assert torch.equal(pixels, torch.zeros(2, 3, 4, 4))  # the input batch is not touched
