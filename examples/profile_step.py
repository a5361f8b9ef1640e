"""Where a prefill or a decode step's time goes: torch.profiler over a few prefills or decode steps of the
runtime on a random-weight 7B-shaped model (bf16 reference path, or W4A4 + KV4 kernels), next to Hugging
Face's own ``generate`` decode rate for the same model as a baseline. Usage (GPU):

    python examples/profile_step.py --arch llava-1.5-7b --steps 16 [--lowbit] [--phase prefill] [--rows 30] [--static]

``--static`` prefills through a StaticPrefill and decodes through a StaticDecoder (CUDA graphs on a GPU).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from quota.quant.config import QuantConfig
from quota.quantize.model import quantize_model
from quota.runtime.generate import PrunedRunner
from quota.runtime.graphs import StaticDecoder, StaticPrefill
from quota.bench.e2e import VISUAL_TOKENS, build_random, inputs


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def hf_decode_rate(model, ids, mask, pixels, extra, steps: int) -> float:
    """Decode tokens/s of ``model.generate`` (greedy, EOS off): (time for steps + 1 tokens - time for 1) / steps."""
    def timed(n: int) -> float:
        sync()
        t0 = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, **extra)
        sync()
        return time.perf_counter() - t0

    timed(2)  # warm-up
    return ids.shape[0] * steps / (timed(steps + 1) - timed(1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="llava-1.5-7b")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--lowbit", action="store_true", help="W4A4 + KV4 (RTN weights) through the Triton kernels")
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--phase", choices=("decode", "prefill"), default="decode")
    p.add_argument("--static", action="store_true", help="decode through a StaticDecoder (CUDA graphs on a GPU)")
    a = p.parse_args()
    # on a machine without CUDA (a smoke test of this script): float32 and the reference paths
    device, dtype = ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)
    kernels = "triton" if device == "cuda" else "reference"
    model = build_random(a.arch, device, dtype)
    n, layers = VISUAL_TOKENS[a.arch], model.config.text_config.num_hidden_layers
    ids, mask, pixels, extra = inputs(model, a.batch, 64, n, device, dtype)
    if not a.lowbit:
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        print(f"HF generate decode: {hf_decode_rate(model, ids, mask, pixels, extra, a.steps):.1f} tok/s "
              f"({a.arch}, batch {a.batch}, {name})", flush=True)
    impl = "reference"
    if a.lowbit:
        quant = QuantConfig(weight_method="rtn", w_clip_search=False, a_clip_search=False, impl=kernels,
                            kv_group_size=min(64, model.config.text_config.head_dim or 64))
        model, impl = quantize_model(model, quant, None, inplace=True), kernels
    runner = PrunedRunner(model, [n] * layers, {"attn_last": 1.0, "magnitude": 0.1}, impl=impl)
    logits, state = runner.prefill(ids, mask, pixels, reserve=4 * a.steps, **extra)
    token = logits.argmax(-1)
    step = StaticDecoder(runner, state, 3 * a.steps) if a.static else (lambda t: runner.decode_step(t, state))
    for _ in range(a.steps):  # warm-up (and, static, the graph's recording)
        token = step(token).argmax(-1)
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        token = step(token).argmax(-1)
    sync()
    per_step = (time.perf_counter() - t0) / a.steps
    mode = "static, CUDA graph" if a.static and device == "cuda" else ("static" if a.static else "eager")
    print(f"runtime decode ({'W4A4+KV4' if a.lowbit else 'bf16'}, {mode}): {a.batch / per_step:.1f} tok/s, "
          f"{per_step * 1e3:.2f} ms/step", flush=True)
    if a.static:
        prefill = StaticPrefill(runner, reserve=4)
    else:
        prefill = lambda *args, **kw: runner.prefill(*args, reserve=4, **kw)  # noqa: E731
    if a.phase == "prefill":
        prefill(ids, mask, pixels, **extra)  # warm-up at this reserve (static: and the recording)
        sync()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            prefill(ids, mask, pixels, **extra)
        sync()
        print(f"runtime prefill ({mode}): {(time.perf_counter() - t0) / a.steps * 1e3:.1f} ms", flush=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(a.steps):
            if a.phase == "prefill":
                prefill(ids, mask, pixels, **extra)
            else:
                token = step(token).argmax(-1)
        sync()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))
    if device == "cuda":
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=a.rows // 2))


if __name__ == "__main__":
    main()
