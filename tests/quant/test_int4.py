import pytest
import torch

from quota.quant.int4 import pack_int4, pack_uint4, unpack_int4, unpack_uint4


@pytest.mark.parametrize("shape", [(1, 2), (3, 18), (7, 5, 96)])
def test_signed_round_trip_is_exact(shape):
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(-8, 8, shape, generator=g, dtype=torch.int8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.int8 and packed.shape == (*shape[:-1], shape[-1] // 2)
    assert torch.equal(unpack_int4(packed), codes)


def test_signed_layout_low_nibble_is_even_index():
    codes = torch.tensor([[-1, 3, 7, -8]], dtype=torch.int8)
    packed = pack_int4(codes).view(torch.uint8)
    assert packed.tolist() == [[0x3F, 0x87]]


def test_unsigned_round_trip_and_layout():
    codes = torch.randint(0, 16, (4, 10), dtype=torch.uint8)
    assert torch.equal(unpack_uint4(pack_uint4(codes)), codes)
    assert pack_uint4(torch.tensor([[1, 2]], dtype=torch.uint8)).tolist() == [[0x21]]


def test_odd_length_is_refused():
    with pytest.raises(ValueError, match="even"):
        pack_int4(torch.zeros(2, 5, dtype=torch.int8))
