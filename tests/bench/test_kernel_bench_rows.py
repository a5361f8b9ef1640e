"""The kernel benchmark's baseline ratios, GEMV table and part selection (pure Python: runs without CUDA)."""

import pytest
import torch

from quota.bench.kernels import add_ratios, evaluate_targets, main, render_markdown


def _row(bench, m, method, ms):
    return {"bench": bench, "K": 4096, "N": 11008, "M": m, "method": method, "ms": ms, "tops": 1.0, "gbs": 1.0,
            "note": ""}


def test_every_gemm_and_gemv_row_gets_ratios_against_bf16_and_fp8():
    rows = add_ratios([_row("gemv", 1, "bf16_linear", 0.030), _row("gemv", 1, "fp8_scaled_mm", 0.020),
                       _row("gemv", 1, "w4_gemv", 0.010), _row("gemm", 1, "w4a4_triton", 0.012),
                       _row("gemm", 1, "bf16_linear", 0.024), _row("gemv", 16, "w4_gemv", None)])  # fmt: skip
    ours = rows[2]
    assert ours["vs_bf16"] == pytest.approx(3.0) and ours["vs_fp8"] == pytest.approx(2.0)
    assert rows[3]["vs_bf16"] == pytest.approx(2.0) and rows[3]["vs_fp8"] is None  # no FP8 row of that shape
    assert rows[5]["vs_bf16"] is None  # a row that could not run
    result = {"info": {"device": "NVIDIA H200", "sms": 132, "capability": "9.0", "torch": "2.11", "triton": "3.6",
                       "python": "3.12"}, "quick": True, "rows": rows, "ptx": None, "gemm_configs": {},
              "targets": evaluate_targets(rows)}  # fmt: skip
    text = render_markdown(result)
    assert "## Decode GEMV" in text and "| 4096 | 11008 | 1 | w4_gemv | 0.0100 | 1 | 3.00 | 2.00 |" in text


def test_act_quant_targets_split_by_hadamard_and_name_the_fused_rows():
    rows = [{"bench": "act_quant", "method": m, "M": 4096, "K": 4096, "hadamard": h, "of_copy": 0.6}
            for m in ("act_quant_int4", "rmsnorm_quant_int4") for h in (None, 4096)]
    got = {(t["target"], t["shape"]): t["met"] for t in evaluate_targets(rows)}
    assert got == {("act_quant_bandwidth", "M=4096 K=4096 hadamard=None"): False,
                   ("act_quant_bandwidth_hadamard", "M=4096 K=4096 hadamard=4096"): True,
                   ("act_quant_bandwidth", "M=4096 K=4096 hadamard=None rmsnorm_quant_int4"): False,
                   ("act_quant_bandwidth_hadamard", "M=4096 K=4096 hadamard=4096 rmsnorm_quant_int4"): True}


def test_module_entry_point_refuses_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    with pytest.raises(ValueError, match="CUDA"):
        main(["gemv", "--quick"])
