"""The benchmark's target evaluation and report (pure Python: runs without CUDA)."""

import pytest

from quota.bench.kernels import TARGETS, evaluate_targets, render_markdown, run_all


def gemm(m, method, ms):
    tops = 2 * m * 4096 * 4096 / (ms * 1e-3) / 1e12
    return {"bench": "gemm", "K": 4096, "N": 4096, "M": m, "method": method, "ms": ms, "tops": tops, "note": ""}


def test_targets_compare_against_the_baselines_of_the_same_rows():
    rows = [gemm(4096, "w4a4_triton", 0.10), gemm(4096, "bf16_linear", 0.15), gemm(4096, "int8_int_mm", 0.12),
            gemm(16, "w4a4_triton", 0.005), gemm(16, "bf16_linear", 0.016), gemm(576, "w4a4_triton", 0.03),
            gemm(576, "bf16_linear", 0.03),
            {"bench": "act_quant", "method": "act_quant_int4", "M": 4096, "K": 4096, "hadamard": None, "of_copy": 0.8},
            {"bench": "decode_attention", "method": "kv4_triton", "ctx": 16384, "B": 16, "H_q": 32, "H_kv": 32,
             "speedup": 1.5}]
    got = {(t["target"], t["shape"]): t for t in evaluate_targets(rows)}
    prefill = got[("gemm_prefill_vs_bf16", "M=4096 K=4096 N=4096")]
    assert prefill["value"] == pytest.approx(1.5) and prefill["met"] is (1.5 >= TARGETS["gemm_prefill_vs_bf16"])
    assert got[("gemm_prefill_vs_int_mm", "M=4096 K=4096 N=4096")]["value"] == pytest.approx(1.2)
    assert got[("gemm_decode_vs_bf16", "M=16 K=4096 N=4096")]["value"] == pytest.approx(3.2)
    assert not any("M=576" in shape for _, shape in got)  # mid-size M has no target
    assert got[("act_quant_bandwidth", "M=4096 K=4096 hadamard=None")]["met"]
    assert not got[("decode_attention_vs_sdpa", "B=16 ctx=16k H_q=32 H_kv=32")]["met"]


def test_run_all_refuses_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    with pytest.raises(ValueError, match="CUDA"):
        run_all()


def test_markdown_names_the_device_and_missed_targets():
    rows = [gemm(4096, "w4a4_triton", 0.2), gemm(4096, "bf16_linear", 0.15)]
    result = {"info": {"device": "NVIDIA H100 80GB HBM3", "sms": 132, "capability": "9.0", "torch": "2.11",
                       "triton": "3.6", "python": "3.12"}, "quick": True, "rows": rows,
              "ptx": {"config": "BM128", "wgmma_s8_lines": 16, "wgmma_lines": 16,
                      "line": "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8"},
              "gemm_configs": {}, "targets": evaluate_targets(rows)}
    text = render_markdown(result)
    assert "NVIDIA H100 80GB HBM3" in text and "MISSED" in text
