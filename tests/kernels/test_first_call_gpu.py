"""The first call of a process gives what every later call gives, whatever the memory it is handed held (GPU only,
each check in a fresh process, so that every kernel compiles and autotunes inside the call it checks; before each
call the caching allocator's free memory is filled with NaN, zeros or 1e30, which a kernel reading memory that
nothing wrote would pass on).

Why: on an H100, a profile whose ranks took their all-token reference from the first forward of the process was
off by 2-4 nats on 7 of 8 ranks (the rank that had run the quantization itself, and so had warmed its kernels,
was right). These checks look for such an effect in the W4A4 path and in a quantized model's forward (all
tokens and pruned, prefill and a decode step over the 4-bit KV cache) while the default stream is still busy."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.kernels.kernel_checks import gpu, requires_cuda

ROOT = Path(__file__).resolve().parents[2]

GEMM = textwrap.dedent(
    """
    import torch
    from quota.kernels import act_quant, w4a4_gemm
    from quota.quant.int4 import pack_int4
    torch.manual_seed(0)
    bad = []
    for m, k, n in [(2816, 576, 1536), (64, 576, 192), (51, 1536, 576), (3968, 576, 576)]:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        w = pack_int4(torch.randint(-8, 8, (n, k), device="cuda", dtype=torch.int8))
        ws = torch.rand(n, device="cuda") * 0.01 + 0.001
        busy = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        outs = []
        for value in (float("nan"), 0.0, float("nan")):
            torch.full((1 << 26,), value, device="cuda")  # freed at once: the next allocations reuse poisoned memory
            busy @ busy  # default-stream work still in flight when the GEMM (and its autotuner) starts
            a, s = act_quant.quantize_activation_triton(x, 4, 0.9, None)
            outs.append(w4a4_gemm.w4a4_matmul(a, s, w, ws, None, out_dtype=torch.bfloat16).float())
        a, s = act_quant.quantize_activation_triton(x, 4, 0.9, None)
        ref = w4a4_gemm.w4a4_matmul_reference(a, s, w, ws, None, out_dtype=torch.bfloat16).float()
        for i, o in enumerate(outs):
            if not torch.equal(o, outs[-1]) or (o - ref).abs().max() > 1e-2 * ref.abs().max():
                bad.append(f"M={m} K={k} N={n} call {i + 1}: max |diff| {(o - outs[-1]).abs().max():.4g}")
    print("BAD" if bad else "OK", *bad, sep="\\n")
    """
)

MODEL = textwrap.dedent(
    """
    import torch
    from quota.quant.config import QuantConfig
    from quota.quantize.model import quantize_model
    from quota.runtime.generate import PrunedRunner
    from tests.runtime.models import left_pad, n_visual, pixels, prompt, tiny_llava

    def poison(value):  # the caching allocator's free blocks (large and small pools) filled with value
        big = torch.full((1 << 26,), value, device="cuda")
        small = [torch.full((1 << 16,), value, device="cuda") for _ in range(256)]
        del big, small

    model = tiny_llava(layers=3).to("cuda", torch.bfloat16)
    q = quantize_model(model, QuantConfig(weight_method="rtn", a_clip_search=False, impl="auto"), None)
    n = n_visual(q)
    ids, mask = left_pad([prompt(n, 2, 3 + j, seed=j) for j in range(6)])
    ids, mask, px = ids.cuda(), mask.cuda(), pixels(6).to("cuda", torch.bfloat16)
    busy = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    bad = []
    for schedule in ([n] * 3, [n, n // 2, n // 4]):
        runner = PrunedRunner(q, schedule, {"attn_last": 1.0})
        logits = []
        for value in (float("nan"), 0.0, float("nan"), 1e30):  # first call, then warm, each over poisoned memory
            poison(value)
            busy @ busy
            out, state = runner.prefill(ids, mask, px, reserve=2)
            step = runner.decode_step(ids[:, -1], state)
            logits.append(torch.cat([out.float(), step.float()]))
        diffs = [float((l - logits[1]).abs().max()) for l in logits]
        if not all(d == 0 for d in diffs):  # NaN compares unequal too
            bad.append(f"schedule {schedule}: max |diff| against the zero-filled call {diffs}")
    print("BAD" if bad else "OK", *bad, sep="\\n")
    """
)


def _run(script: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@gpu
@requires_cuda
def test_w4a4_gemm_first_call_equals_later_calls_in_a_fresh_process():
    out = _run(GEMM)
    assert out.startswith("OK"), out


@gpu
@requires_cuda
def test_quantized_forward_first_call_equals_later_calls_in_a_fresh_process():
    out = _run(MODEL)
    assert out.startswith("OK"), out
