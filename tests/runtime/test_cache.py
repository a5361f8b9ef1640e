"""LayerwiseKVCache: per-layer lengths, both transformers calling conventions, growth."""

import torch

from quota.runtime.kv.layerwise import LayerwiseKVCache


def test_layers_hold_their_own_lengths_and_grow():
    cache = LayerwiseKVCache(2, reserve=1)
    k0, v0 = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    k1, v1 = torch.randn(2, 3, 2, 4), torch.randn(2, 3, 2, 4)
    got_k, got_v = cache.update(k0, v0, 0, {"cache_position": None})  # transformers 5.17 style
    assert torch.equal(got_k, k0) and torch.equal(got_v, v0)
    cache.update(k1, v1, 1, kwargs={})  # transformers 5.24 style
    assert cache.lengths == [5, 2] and cache.get_seq_length(1) == 2
    steps = [torch.randn(2, 3, 1, 4) for _ in range(4)]  # beyond the reserve: the buffer grows
    for t in steps:
        got_k, got_v = cache.update(t, -t, 0)
    assert torch.equal(got_k, torch.cat([k0, *steps], dim=2))
    assert torch.equal(got_v, torch.cat([v0, *[-t for t in steps]], dim=2))
    assert cache.lengths == [9, 2]
    assert torch.equal(cache.layer(1)[0], k1)
    assert cache.nbytes() == 2 * 2 * 3 * (9 + 2) * 4 * 4
