import pytest
import torch
import torch.nn as nn

from quota.models.registry import UnsupportedModelError
from quota.quantize.calibration import CalibrationDataError
from quota.quant.config import BF16, QuantConfig
from quota.quantize.linear import QuantLinear
from quota.quantize.model import quantize_model
from tests.tiny_models import tiny_llama, tiny_qwen2

CALIB = [torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(i)) for i in range(2)]
IDS = torch.randint(0, 128, (2, 17), generator=torch.Generator().manual_seed(9))


@torch.no_grad()
def rel_err(a, b):
    return float((a - b).norm() / b.norm())  # noqa


def test_identity_config_leaves_logits_identical():
    model = tiny_llama()
    ref = model(IDS).logits
    assert torch.equal(quantize_model(model, BF16)(IDS).logits, ref)


def test_rotation_only_config_is_exact_in_full_precision():
    model = tiny_llama(dtype=torch.float64)
    cfg = QuantConfig(w_bits=16, a_bits=16, kv_bits=16, rotate=True)
    assert rel_err(quantize_model(model, cfg)(IDS).logits, model(IDS).logits) < 1e-6


@pytest.mark.parametrize("make", [tiny_llama, tiny_qwen2])
def test_w4a4_replaces_linears_and_never_mutates_the_original(make):
    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = model(IDS).logits
    q = quantize_model(model, QuantConfig(kv_group_size=16), CALIB)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    layer = q.model.layers[0]
    for lin in (layer.self_attn.q_proj, layer.self_attn.o_proj, layer.mlp.down_proj):
        assert isinstance(lin, QuantLinear) and lin.w_bits == 4 and lin.a_bits == 4
    assert layer.mlp.down_proj.hadamard_block == 64 or layer.mlp.down_proj.hadamard_block == 32
    assert layer.self_attn.quota_kv.bits == 4
    assert isinstance(q.lm_head, nn.Linear) and not isinstance(q.lm_head, QuantLinear)
    out = q(IDS).logits
    assert torch.isfinite(out).all() and 0 < rel_err(out, ref) < 0.6


def test_more_bits_means_closer_outputs():
    model = tiny_llama()
    ref = model(IDS).logits
    errs = [
        rel_err(quantize_model(model, QuantConfig(w_bits=b, a_bits=b, kv_bits=b, kv_group_size=16), CALIB)(IDS).logits, ref)
        for b in (8, 4)
    ]
    assert errs[0] < errs[1] / 5


def test_kv_quantization_changes_attention_and_generation_runs():
    model = tiny_llama()
    no_kv = quantize_model(model, QuantConfig(kv_bits=16, a_bits=16, w_bits=16, rotate=False))
    kv = quantize_model(model, QuantConfig(kv_bits=4, a_bits=16, w_bits=16, rotate=False, kv_group_size=16,
                                           kv_hadamard=False))
    assert torch.allclose(no_kv(IDS).logits, model(IDS).logits, atol=1e-5)
    assert not torch.allclose(kv(IDS).logits, model(IDS).logits, atol=1e-4)
    out = kv.generate(IDS[:1], max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 22)


def test_kv_hadamard_is_exact_without_quantization_error_at_8_bits():
    model = tiny_llama()
    cfg = dict(a_bits=16, w_bits=16, rotate=False, kv_group_size=16, kv_bits=8)
    plain = quantize_model(model, QuantConfig(kv_hadamard=False, **cfg))(IDS).logits
    had = quantize_model(model, QuantConfig(kv_hadamard=True, **cfg))(IDS).logits
    ref = model(IDS).logits
    assert rel_err(had, ref) < 0.02 and rel_err(plain, ref) < 0.02


def test_keep_full_precision_lm_head_can_be_quantized():
    model = tiny_llama()
    cfg = QuantConfig(keep_full_precision=("embeddings",), kv_group_size=16, weight_method="rtn")
    q = quantize_model(model, cfg, CALIB)
    assert isinstance(q.lm_head, QuantLinear)


def test_unsupported_model_lists_supported_ones():
    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM"):
        quantize_model(nn.Sequential(nn.Linear(4, 4)), QuantConfig())


@pytest.mark.parametrize(
    "batches,match",
    [
        (None, "needs calibration"),
        ([], "empty"),
        ([torch.randint(0, 128, (32,))], r"\[B, S\]"),
        ([torch.randn(2, 8)], "integer"),
        ([torch.full((1, 8), 500)], "outside"),
        (["text"], "LongTensor"),
    ],
)
def test_bad_calibration_data_is_named(batches, match):
    with pytest.raises(CalibrationDataError, match=match):
        quantize_model(tiny_llama(), QuantConfig(), batches)


def test_bad_kv_group_is_reported():
    with pytest.raises(ValueError, match="kv_group_size"):
        quantize_model(tiny_llama(), QuantConfig(kv_group_size=12, weight_method="rtn"), CALIB)


def test_progress_callable_keeps_its_meaning_and_shows_no_bar(capsys):
    calls = []
    quantize_model(tiny_llama(), QuantConfig(kv_group_size=16), CALIB, progress=lambda d, t: calls.append((d, t)))
    layers = len(tiny_llama().model.layers)
    assert calls == [(i + 1, layers) for i in range(layers)]
    assert capsys.readouterr().err == ""


def test_progress_is_off_by_default_off_a_terminal_and_shown_when_asked(capsys):
    model = tiny_llama()
    quantize_model(model, QuantConfig(kv_group_size=16), CALIB)  # stderr is not a terminal under pytest
    assert capsys.readouterr().err == ""
    quantize_model(model, QuantConfig(kv_group_size=16), CALIB, progress=True)
    err = capsys.readouterr().err
    steps = len(model.model.layers) * 7
    lines = err.strip().splitlines()
    layers = len(model.model.layers)
    assert lines[0] == f"quantize {layers} layers, {steps} linears: GPTQ + weight clip search + act clip search"
    assert lines[-1].startswith(f"quantize layer {layers}/{layers} down_proj: {steps}/{steps}, ")
    assert lines[-1].endswith("about 0s left")


def test_progress_bar_on_a_terminal_draws_a_rich_bar_with_the_time_left():
    import io

    from rich.console import Console

    from quota.quantize.model import ProgressBar

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with ProgressBar(4, "quantize", console=console) as bar:
        for i in range(4):
            bar.advance(f"layer {i + 1}/4")
    text = out.getvalue()
    assert "quantize layer 4/4" in text and "4/4" in text and "left" in text
    assert "\x1b[" in text  # drawn as a live terminal display, not as plain lines
    assert ProgressBar(3, "x").line(10.0).endswith("0/3, 10s elapsed, time left unknown")
    bar = ProgressBar(4, "x", show=False)
    bar.done = 1
    assert bar.line(65.0) == "x: 1/4, 1m05s elapsed, about 3m15s left"


def test_linears_reading_one_input_are_quantized_together_with_the_same_result():
    """q/k/v (and gate/up) see the same calibration input: one GPTQ sweep over their stacked rows gives each
    linear exactly the codes and scales of its own sweep, and their activation clips are searched alike."""
    from quota.models.registry import spec_for
    from quota.quantize.model import _InputStats, _input_groups, _quantize_weights

    model = tiny_llama()
    layer = model.model.layers[0]
    g = torch.Generator().manual_seed(0)
    attn_in, mlp_in = (torch.randn(64, layer.self_attn.q_proj.in_features, generator=g) for _ in range(2))
    shared = {"self_attn.q_proj": attn_in, "self_attn.k_proj": attn_in, "self_attn.v_proj": attn_in,
              "mlp.gate_proj": mlp_in, "mlp.up_proj": mlp_in}
    stats = {}
    for path in spec_for(model).layer.linear_paths:
        k = layer.get_submodule(path).in_features
        stats[path] = _InputStats(k, "cpu", keep_hessian=True)
        stats[path].add(shared.get(path, torch.randn(64, k, generator=g)))
    groups = _input_groups({path: None for path in stats}, stats)
    assert groups == [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
                      ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]
    config = QuantConfig()
    ws = [layer.self_attn.q_proj.weight.float(), layer.self_attn.k_proj.weight.float()]
    fused = _quantize_weights(ws, stats["self_attn.q_proj"], config)
    alone = [_quantize_weights([w], stats["self_attn.q_proj"], config)[0] for w in ws]
    for f, a in zip(fused, alone):
        assert f.codes.shape == a.codes.shape and torch.equal(f.codes, a.codes) and torch.equal(f.scale, a.scale)
    assert [g for g in _input_groups({"a": None, "b": 64}, {"a": stats["self_attn.q_proj"],
                                                           "b": stats["self_attn.q_proj"]})] == [["a"], ["b"]]


def test_gptq_runs_on_one_cpu_thread_and_restores_the_thread_count(monkeypatch):
    """GPTQ's sweep is thousands of small ops: it runs on one intra-op thread, then gives the caller's count back."""
    from quota.quantize import gptq
    from quota.quantize.gptq import HessianAccumulator, gptq_quantize

    seen = []
    sweep = gptq._sweep
    monkeypatch.setattr(gptq, "_sweep", lambda *a: (seen.append(torch.get_num_threads()), sweep(*a)))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        h = HessianAccumulator(32)
        h.add(torch.randn(64, 32, generator=torch.Generator().manual_seed(0)))
        q = gptq_quantize(torch.randn(8, 32, generator=torch.Generator().manual_seed(1)), h.hessian)
        assert seen == [1] and torch.get_num_threads() == 2 and q.codes.shape == (8, 32)
    finally:
        torch.set_num_threads(before)
