import pytest
import torch

from quota.quant.hadamard import (
    apply_block_hadamard,
    block_hadamard_matrix,
    hadamard_block_size,
    hadamard_matrix,
    random_hadamard_rotation,
)


def test_block_sizes_of_model_dimensions():
    assert hadamard_block_size(576) == 64
    assert hadamard_block_size(1536) == 512
    assert hadamard_block_size(4096) == 4096
    assert hadamard_block_size(11008) == 256


@pytest.mark.parametrize("n", [1, 2, 16, 128])
def test_sylvester_is_orthonormal_and_symmetric(n):
    h = hadamard_matrix(n, torch.float64)
    assert torch.allclose(h @ h.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    assert torch.equal(h, h.T)


@pytest.mark.parametrize("n,block", [(576, None), (1536, None), (96, 32), (64, 64)])
def test_fast_transform_matches_matrix(n, block):
    x = torch.randn(5, n, dtype=torch.float64)
    expected = x @ block_hadamard_matrix(n, block, torch.float64)
    assert torch.allclose(apply_block_hadamard(x, block), expected, atol=1e-10)
    assert torch.allclose(apply_block_hadamard(apply_block_hadamard(x, block), block), x, atol=1e-10)


def test_non_power_of_two_needs_blocks():
    with pytest.raises(ValueError):
        hadamard_matrix(576)
    with pytest.raises(ValueError):
        apply_block_hadamard(torch.randn(2, 96), 48)


@pytest.mark.parametrize("n,mix", [(576, True), (576, False), (256, True)])
def test_random_rotation_is_orthogonal_and_seeded(n, mix):
    q = random_hadamard_rotation(n, seed=3, mix_blocks=mix)
    assert torch.allclose(q @ q.T, torch.eye(n, dtype=torch.float64), atol=1e-10)
    assert torch.equal(q, random_hadamard_rotation(n, seed=3, mix_blocks=mix))
    assert not torch.equal(q, random_hadamard_rotation(n, seed=4, mix_blocks=mix))


def test_mixing_spreads_one_outlier_over_all_channels():
    x = torch.zeros(1, 576, dtype=torch.float64)
    x[0, 507] = 25000.0
    mixed = x @ random_hadamard_rotation(576, 0, mix_blocks=True)
    block = x @ random_hadamard_rotation(576, 0, mix_blocks=False)
    assert (block != 0).sum() == 64  # block-diagonal: confined to one 64-channel block
    assert (mixed.abs() > 1e-6).sum() == 576
    assert mixed.abs().max() < block.abs().max()
