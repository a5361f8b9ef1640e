"""The e2e bench's FP8 W8A8 baseline row: every decoder linear an Fp8Linear, bf16 KV, all tokens, measured after the
W4A4 rows on a freshly built model, with every row's TTFT and decode rate as ratios to it (here on the CPU through
the reference path, where the row is off by default)."""

import torch

from quota.bench.e2e import FP8_VARIANT, SpeedRow, add_fp8_ratios, fp8_config, run_speed
from quota.quantize.linear_fp8 import Fp8Linear


def record_quantized(monkeypatch) -> list:
    """Make the e2e bench's ``quantize_model`` record each ``(config, quantized model)`` it builds, in order."""
    import quota.bench.e2e as e2e

    built, real = [], e2e.quantize_model

    def spy(model, config, *args, **kwargs):
        out = real(model, config, *args, **kwargs)
        built.append((config, out))
        return out

    monkeypatch.setattr(e2e, "quantize_model", spy)
    return built


def test_the_fp8_row_comes_last_with_ratios_against_it(monkeypatch):
    """The timings are stubbed (the CPU's say nothing); the FP8 model runs one real prefill through Fp8Linear."""
    import quota.bench.e2e as e2e

    built, timings = record_quantized(monkeypatch), iter([(0.4, 10.0), (0.2, 20.0), (0.1, 30.0), (0.5, 40.0)])

    def fake_measure(runner, ids, mask, pixels, extra, new_tokens, repeats, device, static=True):
        if any(isinstance(m, Fp8Linear) for m in runner.model.modules()):
            logits, _ = runner.prefill(ids, mask, pixels, reserve=new_tokens, **extra)
            assert torch.isfinite(logits).all()
        ttft, rate = next(timings)
        return ttft, rate, float("nan"), 2.0, 1.0

    monkeypatch.setattr(e2e, "measure", fake_measure)
    rows = run_speed("tiny-llava", batches=(1,), new_tokens=4, repeats=1, device="cpu", static=False, fp8=True)
    assert [r.variant.split(",")[0] for r in rows] == ["bf16", "W4A4+KV4", "W4A4+KV4", "FP8 W8A8"]
    config, fp8_model = built[-1]
    assert config.layer_precision == ("fp8",) * 8 and config.kv_bits == 16 and not config.rotate
    layers = fp8_model.model.language_model.layers
    assert all(isinstance(layer.mlp.down_proj, Fp8Linear) for layer in layers)
    assert [r.schedule_mean for r in rows][::3] == [16.0, 16.0]
    assert [r.ttft_vs_fp8 for r in rows] == [0.8, 0.4, 0.2, 1.0]
    assert [r.decode_vs_fp8 for r in rows] == [0.25, 0.5, 0.75, 1.0]


def test_without_an_fp8_row_the_ratios_stay_missing():
    rows = [SpeedRow("bf16, all tokens", 1, 16.0, 10.0, 100.0, float("nan"), 1.0)]
    add_fp8_ratios(rows)
    assert rows[0].to_dict()["ttft_vs_fp8"] is None and rows[0].to_dict()["decode_vs_fp8"] is None
    rows.append(SpeedRow(FP8_VARIANT, 1, 16.0, 5.0, 200.0, float("nan"), 1.0))
    add_fp8_ratios(rows)
    assert rows[0].ttft_vs_fp8 == 2.0 and rows[0].decode_vs_fp8 == 0.5


def test_the_fp8_config_on_a_gpu_uses_the_kernels():
    assert fp8_config(4, "triton").impl == "triton" and fp8_config(4, "triton").layer_precision == ("fp8",) * 4
    assert not torch.cuda.is_available() or fp8_config(2, "triton").kv_bits == 16


def test_a_recipes_per_layer_precision_adds_a_mixed_row_resampled_by_depth(monkeypatch):
    """A 30-layer recipe (half bf16, half W4A8, KV8) on the 8-layer tiny LLaVA: layers 0-3 take source layers 0, 3, 7,
    11 (bf16) and layers 4-7 take 15, 18, 22, 26 (W4A8); the row runs the pruned schedule, before any FP8 row."""
    import torch.nn as nn

    import quota.bench.e2e as e2e
    from quota.quantize.linear_w4a8 import W4A8Linear

    built = record_quantized(monkeypatch)

    def fake_measure(runner, ids, mask, pixels, extra, new_tokens, repeats, device, static=True):
        logits, _ = runner.prefill(ids, mask, pixels, reserve=new_tokens, **extra)
        assert torch.isfinite(logits).all()
        return 0.1, 10.0, float("nan"), 2.0, 1.0

    monkeypatch.setattr(e2e, "measure", fake_measure)
    precision, kv_bits = ["bf16"] * 15 + ["w4a8"] * 15, [8] * 30
    rows = run_speed("tiny-llava", batches=(1,), new_tokens=4, repeats=1, device="cpu", static=False, fp8=False,
                     budget=0.5, layer_precision=precision, layer_kv_bits=kv_bits)
    assert [r.variant for r in rows][-1] == e2e.MIXED_VARIANT and len(rows) == 4
    assert rows[-1].schedule_mean == rows[-2].schedule_mean < 16.0  # the W4A4 pruned row's schedule
    config, mixed = built[-1]
    assert config.layer_precision == ("bf16",) * 4 + ("w4a8",) * 4 and config.layer_kv_bits == (8,) * 8
    downs = [layer.mlp.down_proj for layer in mixed.model.language_model.layers]
    assert all(type(d) is nn.Linear for d in downs[:4]) and all(isinstance(d, W4A8Linear) for d in downs[4:])
