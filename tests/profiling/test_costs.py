import numpy as np
from transformers import LlamaConfig

from quota.profiling.costs import analytic_costs, kv_bytes_per_token, layer_flops, measure_latency
from quota.quant.config import BF16, QuantConfig

CFG = LlamaConfig(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3, head_dim=64)


def test_flops_match_a_hand_count_for_one_token():
    # one token, no prefix: linears 2*(576*576 + 2*576*192 + 576*576 + 3*576*1536) + attention 2*2*1*1*9*64
    expected = 2 * (576 * 576 * 2 + 2 * 576 * 192 + 3 * 576 * 1536) + 4 * 9 * 64
    assert layer_flops(CFG, 1) == expected


def test_kv_bytes_int4_vs_bf16():
    full = kv_bytes_per_token(CFG, BF16)
    kv4 = kv_bytes_per_token(CFG, QuantConfig(kv_group_size=64))
    assert full == 2 * 3 * 64 * 2
    assert kv4 == 2 * 3 * (32 + 4)  # 64 nibbles + fp16 scale and zero per group
    assert kv4 / full < 0.3


def test_curves_are_non_decreasing_and_shaped():
    costs = analytic_costs(CFG, QuantConfig(), [0, 18, 288, 576], n_layers=30, text_tokens=20)
    for kind, arr in costs.items():
        assert arr.shape == (30, 4), kind
        assert np.all(np.diff(arr, axis=1) >= 0), kind


def test_latency_is_made_monotone(monkeypatch):
    import quota.profiling.costs as costs_mod

    ticks = iter([0.0, 3.0, 0.0, 1.0, 0.0, 4.0])  # start/stop pairs: 3 s, 1 s, 4 s
    monkeypatch.setattr(costs_mod.time, "perf_counter", lambda: next(ticks))
    out = measure_latency(lambda s: None, [1, 2, 3], repeats=1, warmup=0)
    assert list(out) == [3.0, 3.0, 4.0]
