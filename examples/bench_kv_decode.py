"""KV4 decode attention against SDPA on a bf16 cache, one JSON line per (configuration, method). Usage (GPU):

    python examples/bench_kv_decode.py [--ctx 16384] [--batch 16] [--heads 32/32 32/8] [--sweep] [--no-v1]

Each line: the device, the shape, ``ms`` per call (median over ``--repeats`` CUDA-event timings of
``--calls`` back-to-back calls, after a warm-up that also autotunes), ``kv_gbs`` (bytes of the cache the method
reads, per second: the bf16 K and V for SDPA; codes, float32 scales and zeros for KV4) and ``vs_sdpa`` (SDPA's
time over the method's: above 1 is faster). Methods: ``sdpa_bf16``; ``kv4_splitk`` (the bandwidth-bound kernel,
autotuned; its line names the configuration the autotuner chose and the time of every configuration it tried);
``kv4_v1`` (the first decode kernel); with ``--sweep``, ``kv4_splitk[...]`` for each configuration forced.
Defaults: ctx 16k, batch 16, MHA 32/32 and GQA 32/8, head_dim 128, KV groups of 64 (about a minute on an H100,
most of it compiling). No FP8-cache row: a fair one needs an attention kernel that reads e4m3 codes itself.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from quota.kernels import kv_decode_splitk as splitk
from quota.kernels.kv_attention import kv_attention_decode
from quota.kernels.kv_write import allocate_kv_cache


def cache(b: int, hkv: int, ctx: int, d: int, group: int, gen: torch.Generator):
    """A random 4-bit cache ``(codes, scale, zero)`` as :mod:`quota.kernels.kv_write` lays it out."""
    codes, scale, zero = allocate_kv_cache(b, hkv, ctx, d, 4, group, "cuda")
    codes.copy_(torch.randint(0, 256, codes.shape, generator=gen, device="cuda", dtype=torch.uint8))
    scale.copy_(torch.rand(scale.shape, generator=gen, device="cuda") * 0.1 + 0.01)
    zero.copy_(torch.randn(zero.shape, generator=gen, device="cuda") * 0.5)
    return codes, scale, zero


def time_ms(fn, calls: int, repeats: int) -> float:
    """Median over ``repeats`` of (CUDA-event time of ``calls`` back-to-back calls) / ``calls``, after 3 warm-ups."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def config_text(cfg) -> str | None:
    if cfg is None:
        return None
    kw = cfg.kwargs
    return f"{'mma' if kw['MMA'] else 'fma'} BLOCK_N={kw['BLOCK_N']} warps={cfg.num_warps} stages={kw['STAGES']}"


def run_pair(hq: int, hkv: int, args: argparse.Namespace, gen: torch.Generator) -> None:
    """Every method at ``H_q = hq``, ``H_kv = hkv``: one JSON line each."""
    props = torch.cuda.get_device_properties(0)
    b, ctx, d, group = args.batch, args.ctx, args.head_dim, args.group
    q = torch.randn((b, hq, 1, d), generator=gen, device="cuda", dtype=torch.bfloat16)
    bf16_bytes = 2 * b * hkv * ctx * d * 2
    kv4_bytes = 2 * b * hkv * ctx * (d // 2 + 8 * (d // group))
    splits, chunk = splitk.decode_splits(b, hkv, ctx, props.multi_processor_count, None, hq // hkv, d)
    base = {"device": props.name, "B": b, "H_q": hq, "H_kv": hkv, "D": d, "group": group, "ctx": ctx}

    def emit(method, ms, nbytes, sdpa_ms, **extra):
        print(json.dumps({**base, "method": method, "ms": round(ms, 5), "kv_gbs": round(nbytes / ms / 1e6, 1),
                          "vs_sdpa": round(sdpa_ms / ms, 3), **extra}), flush=True)  # fmt: skip

    k_bf16 = torch.randn((b, hkv, ctx, d), generator=gen, device="cuda", dtype=torch.bfloat16)
    v_bf16 = torch.randn((b, hkv, ctx, d), generator=gen, device="cuda", dtype=torch.bfloat16)
    gqa = {"enable_gqa": True} if hq != hkv else {}
    t_sdpa = time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k_bf16, v_bf16, **gqa),
                     args.calls, args.repeats)  # fmt: skip
    emit("sdpa_bf16", t_sdpa, bf16_bytes, t_sdpa)
    k_bf16 = v_bf16 = None  # free the bf16 cache before the 4-bit one

    kc, vc = cache(b, hkv, ctx, d, group, gen), cache(b, hkv, ctx, d, group, gen)
    t_new = time_ms(lambda: kv_attention_decode(q, kc, vc, ctx, 4, group, kernel="splitk"), args.calls, args.repeats)
    timings = getattr(splitk._split_kernel_tuned, "configs_timings", None) or {}
    tried = {config_text(c): (round(t[0], 5) if t[0] < float("inf") else None) for c, t in timings.items()}
    emit("kv4_splitk", t_new, kv4_bytes, t_sdpa, splits=splits, chunk=chunk,
         config=config_text(splitk.best_config(hq // hkv, d, group, ctx)), autotune_ms=tried)  # fmt: skip
    if args.sweep:
        for cfg in splitk.configs_for(hq // hkv, d, q.dtype, group):
            forced = {**cfg.kwargs, "num_warps": cfg.num_warps}
            t = time_ms(lambda: splitk.kv_decode_splitk(q, kc, vc, ctx, group, config=forced), args.calls,
                        args.repeats)  # fmt: skip
            emit(f"kv4_splitk[{config_text(cfg)}]", t, kv4_bytes, t_sdpa, splits=splits)
    if not args.no_v1:
        t_v1 = time_ms(lambda: kv_attention_decode(q, kc, vc, ctx, 4, group, kernel="v1"), args.calls, args.repeats)
        emit("kv4_v1", t_v1, kv4_bytes, t_sdpa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--heads", nargs="+", default=["32/32", "32/8"], help="H_q/H_kv pairs")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--group", type=int, default=64, help="KV quantization group size")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--sweep", action="store_true", help="also time every configuration, forced")
    parser.add_argument("--no-v1", action="store_true", help="skip the first decode kernel")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_kv_decode.py needs a CUDA device")
    gen = torch.Generator(device="cuda").manual_seed(0)
    for pair in args.heads:
        hq, hkv = (int(x) for x in pair.split("/"))
        run_pair(hq, hkv, args, gen)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
