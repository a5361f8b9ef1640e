"""Kernel benchmarks against PyTorch baselines measured in the same run (CUDA only).

Every function returns rows (plain dicts) and never prints. Times are medians of
``triton.testing.do_bench_cudagraph``: many calls captured in one CUDA graph, so microsecond kernels
are timed without Python launch gaps (as a served decode step runs them). Inputs rotate among enough
copies to exceed twice the L2 size, so no call reads inputs the previous call left in cache.
:func:`run_all` gathers the rows, evaluates the targets and :func:`render_markdown` formats them.
"""

from __future__ import annotations

import itertools
import math
import platform
import re
from typing import Callable

import torch

from quota.kernels import w4a4_gemm
from quota.kernels._env import m_bucket
from quota.kernels.act_quant import quantize_activation_triton
from quota.kernels.rmsnorm_quant import rmsnorm_quantize_triton
from quota.kernels.w4_gemv import w4_gemv, w4_gemv_codes
from quota.kernels import kv_decode_splitk
from quota.kernels.kv_attention import kv_attention_decode
from quota.kernels.kv_write import allocate_kv_cache
from quota.kernels.w4a4_gemm import _gemm_kernel, w4a4_matmul, w8a8_matmul

GEMM_SHAPES = ((4096, 4096), (4096, 11008), (11008, 4096), (3584, 18944), (18944, 3584))  # (K, N)
GEMM_MS = (1, 16, 64, 256, 576, 1024, 2048, 4096)
GEMV_SHAPES = ((4096, 11008), (11008, 4096), (4096, 3 * 4096))  # (K, N) of LLaMA-7B: up/gate, down, fused qkv
GEMV_MS = (1, 16)
ACT_SHAPES = ((4096, 4096, 4096), (4096, 11008, 256), (2048, 18944, 512))  # (M, K, Hadamard block)
ATTN_CONTEXTS = (1024, 4096, 16384, 32768)
ATTN_BATCHES = (1, 16)
ATTN_HEADS = ((32, 32), (32, 8))  # (H_q, H_kv): LLaVA-7B-like MHA, and a GQA case
HEAD_DIM = 128
KV_GROUP = 64

TARGETS = {
    "gemm_prefill_vs_bf16": 1.6,  # M >= 2048: W4A4 time at most bf16 / 1.6
    "gemm_prefill_vs_int_mm": 0.85,  # M >= 2048: W4A4 throughput at least 85% of torch._int_mm
    "gemm_decode_vs_bf16": 2.5,  # M <= 16
    "act_quant_bandwidth": 0.70,  # of a bf16 copy's bandwidth, without a Hadamard (issue 19)
    "act_quant_bandwidth_hadamard": 0.50,  # with the online Hadamard (issue 19)
    "decode_attention_vs_sdpa": 2.0,  # 16k context, batch 16 (issue 19)
}


def _l2_bytes(device) -> int:
    return getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * 2**20)


def _copies(set_bytes: int, device, cap: int = 8) -> int:
    """Input sets to rotate so that consecutive calls never share cached inputs."""
    return max(1, min(cap, math.ceil(2 * _l2_bytes(device) / max(set_bytes, 1))))


def time_ms(fn: Callable[[int], object], copies: int, quick: bool = False) -> float:
    """Median milliseconds of one ``fn(i)`` call, ``i`` cycling over ``range(copies)``, graph-captured."""
    import triton

    counter = itertools.count()

    def call():
        fn(next(counter) % copies)

    for _ in range(copies):  # autotune and compile outside the capture
        call()
    torch.cuda.synchronize()
    return float(triton.testing.do_bench_cudagraph(call, rep=10 if quick else 25, return_mode="median"))


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# ----------------------------------------------------------------------------- GEMM


def bench_gemm(shapes=GEMM_SHAPES, ms=GEMM_MS, quick: bool = False, device="cuda") -> list[dict]:
    """W4A4 GEMM against bf16 ``F.linear``, ``torch._int_mm`` (int8) and ``torch._scaled_mm`` (fp8 e4m3,
    row-wise scales), plus the W8A8 variant of the same kernel. One row per (K, N, M, method)."""
    rows = []
    for k, n in shapes:
        for m in ms:
            rows += _gemm_case(m, k, n, quick, device)
            torch.cuda.empty_cache()
    return rows


def _gemm_case(m: int, k: int, n: int, quick: bool, device) -> list[dict]:
    gen = torch.Generator(device=device).manual_seed(m * 7 + k + n)
    copies = _copies(m * k * 2 + n * k * 2, device)  # sized by the bf16 baseline's inputs

    def ints(shape):
        return torch.randint(-128, 128, shape, generator=gen, device=device, dtype=torch.int8)

    def randn(shape):
        return torch.randn(shape, generator=gen, device=device, dtype=torch.bfloat16)

    a4, w4 = [ints((m, k // 2)) for _ in range(copies)], [ints((n, k // 2)) for _ in range(copies)]
    a8, w8 = [ints((m, k)) for _ in range(copies)], [ints((n, k)) for _ in range(copies)]
    xb, wb = [randn((m, k)) for _ in range(copies)], [randn((n, k)) for _ in range(copies)]
    a_s = torch.rand((m, 1), generator=gen, device=device) + 0.5
    w_s = torch.rand((n,), generator=gen, device=device) + 0.5
    ops = 2.0 * m * n * k
    rows = []

    def row(method, fn=None, note=""):
        ms_ = None
        if fn is not None:
            try:
                ms_ = time_ms(fn, copies, quick)
            except Exception as err:  # a baseline that cannot run this shape
                note = f"n/a: {_short(err)}"
        rows.append({"bench": "gemm", "K": k, "N": n, "M": m, "method": method, "ms": ms_,
                     "tops": ops / ms_ / 1e9 if ms_ else None, "note": note})  # fmt: skip

    row("w4a4_triton", lambda i: w4a4_matmul(a4[i], a_s, w4[i], w_s))
    row("w8a8_triton", lambda i: w8a8_matmul(a8[i], a_s, w8[i], w_s))
    row("bf16_linear", lambda i: torch.nn.functional.linear(xb[i], wb[i]))
    if m > 16:
        row("int8_int_mm", lambda i: torch._int_mm(a8[i], w8[i].t()))
    else:
        row("int8_int_mm", note="n/a: torch._int_mm needs M > 16")
    fp8 = _fp8_operands(xb, wb)
    row("fp8_scaled_mm", lambda i: _fp8_mm(*fp8[i]))
    return add_ratios(rows)


def _fp8_operands(xs, ws):
    """Per ``(x, w)`` pair: e4m3 codes of ``x`` ``[M, K]`` and ``w`` ``[N, K]`` with float32 per-token ``[M, 1]``
    and per-channel ``[1, N]`` scales (absmax / 448), as a Hopper FP8 W8A8 deployment stores them."""
    out = []
    for x, w in zip(xs, ws):
        xa, wa = _fp8_quantize(x), _fp8_quantize(w)
        out.append((xa[0], xa[1], wa[0], wa[1].reshape(1, -1)))
    return out


def _fp8_quantize(x):
    scale = (x.float().abs().amax(dim=-1, keepdim=True) / 448.0).clamp_min(1e-12)  # [R, 1]
    return (x.float() / scale).to(torch.float8_e4m3fn), scale


def _fp8_mm(a, sa, w, sw):
    """``torch._scaled_mm`` with row-wise scales and fast accumulation (what vLLM-style FP8 runs on Hopper)."""
    return torch._scaled_mm(a, w.t(), sa, sw, out_dtype=torch.bfloat16, use_fast_accum=True)


def add_ratios(rows: list[dict]) -> list[dict]:
    """Each GEMM/GEMV row gets ``vs_bf16`` and ``vs_fp8``: the baseline's time over its own (above 1: faster),
    against the ``bf16_linear`` and ``fp8_scaled_mm`` rows of the same shape."""
    for r in rows:
        if r["bench"] not in ("gemm", "gemv"):
            continue
        same = dict(bench=r["bench"], K=r["K"], N=r["N"], M=r["M"])
        for key, method in (("vs_bf16", "bf16_linear"), ("vs_fp8", "fp8_scaled_mm")):
            base = _get(rows, method=method, **same)
            r[key] = base["ms"] / r["ms"] if base and base.get("ms") and r.get("ms") else None
    return rows


def gemm_config_report() -> dict:
    """The autotuner's choice per key, after :func:`bench_gemm` ran."""
    return {str(key): str(cfg) for key, cfg in getattr(_gemm_kernel, "cache", {}).items()}


def check_wgmma_s8(m: int = 4096, n: int = 4096, k: int = 4096, device="cuda") -> dict:
    """Compile the W4A4 kernel for this device and report the int8 wgmma lines of its PTX."""
    a = torch.zeros((m, k // 2), dtype=torch.int8, device=device)
    w = torch.zeros((n, k // 2), dtype=torch.int8, device=device)
    s_a = torch.ones((m, 1), device=device)
    s_w = torch.ones((n,), device=device)
    w4a4_gemm.w4a4_matmul(a, s_a, w, s_w)  # autotunes and compiles
    jit = w4a4_gemm._gemm_kernel.fn.fn  # autotune -> heuristics -> jit
    cfg = w4a4_gemm._gemm_kernel.best_config
    out = torch.empty((m, n), dtype=torch.bfloat16, device=device)
    compiled = jit.warmup(
        a, s_a, w, s_w, s_a, out, s_a, s_a, m, n, k // 2, m_bucket(m), a.stride(0), w.stride(0),
        out.stride(0),
        HAS_BIAS=False, INT4=True, USE_ASM=w4a4_gemm.USE_ASM_UNPACK, EVEN_K=(k // 2) % cfg.kwargs["BLOCK_KB"] == 0,
        grid=(1,), num_warps=cfg.num_warps, num_stages=cfg.num_stages, **cfg.kwargs,
    )  # fmt: skip
    ptx = compiled.asm["ptx"]
    lines = [ln.strip() for ln in ptx.splitlines() if "wgmma.mma_async" in ln]
    s8 = [ln for ln in lines if ".s8" in ln]
    first = s8[0] if s8 else (lines[0] if lines else "")
    return {"bench": "ptx", "config": str(cfg), "wgmma_lines": len(lines), "wgmma_s8_lines": len(s8),
            "line": re.sub(r"\{[^}]*\}", "{...}", first), "ok": bool(s8)}  # fmt: skip


# ----------------------------------------------------------------------------- decode GEMV


def bench_gemv(shapes=GEMV_SHAPES, ms=GEMV_MS, quick: bool = False, device="cuda") -> list[dict]:
    """Decode GEMV at LLaMA-7B shapes: bf16 ``F.linear``, FP8 ``torch._scaled_mm`` (codes ready, and with the
    per-token quantization of the input in PyTorch), and ours from the bf16 input: the split-K GEMV quantizing
    inside (``w4_gemv``), act_quant + the GEMV on codes, and act_quant + the W4A4 GEMM. GB/s counts the
    weight bytes (bf16, e4m3 or int4)."""
    rows = []
    for k, n in shapes:
        for m in ms:
            rows += _gemv_case(m, k, n, quick, device)
            torch.cuda.empty_cache()
    return add_ratios(rows)


def _gemv_case(m: int, k: int, n: int, quick: bool, device) -> list[dict]:
    gen = torch.Generator(device=device).manual_seed(m + k + n)
    copies = _copies(n * k * 2, device)
    xb = [torch.randn((m, k), generator=gen, device=device, dtype=torch.bfloat16) for _ in range(copies)]
    wb = [torch.randn((n, k), generator=gen, device=device, dtype=torch.bfloat16) for _ in range(copies)]
    w4 = [torch.randint(-128, 128, (n, k // 2), generator=gen, device=device, dtype=torch.int8) for _ in range(copies)]
    w_s = torch.rand((n,), generator=gen, device=device) + 0.5
    fp8 = _fp8_operands(xb, wb)
    rows = []

    def row(method, fn, weight_bytes, note=""):
        ms_ = None
        try:
            ms_ = time_ms(fn, copies, quick)
        except Exception as err:  # a baseline that cannot run this shape
            note = f"n/a: {_short(err)}"
        rows.append({"bench": "gemv", "K": k, "N": n, "M": m, "method": method, "ms": ms_,
                     "gbs": weight_bytes / ms_ / 1e6 if ms_ else None, "note": note})  # fmt: skip

    def fp8_dynamic(i):
        xq, sx = _fp8_quantize(xb[i])
        return _fp8_mm(xq, sx, fp8[i][2], fp8[i][3])

    def act_then(fn):
        def call(i):
            codes, scale = quantize_activation_triton(xb[i], 4, 1.0)
            return fn(codes, scale, w4[i], w_s)
        return call

    row("bf16_linear", lambda i: torch.nn.functional.linear(xb[i], wb[i]), n * k * 2)
    row("fp8_scaled_mm", lambda i: _fp8_mm(*fp8[i]), n * k, "input already e4m3")
    row("fp8_dynamic", fp8_dynamic, n * k, "per-token e4m3 quantization in PyTorch, then _scaled_mm")
    row("w4_gemv", lambda i: w4_gemv(xb[i], w4[i], w_s), n * k // 2, "scale pass + GEMV quantizing inside")
    row("act_quant+w4_gemv_codes", act_then(w4_gemv_codes), n * k // 2)
    row("act_quant+w4a4_gemm", act_then(w4a4_matmul), n * k // 2)
    return rows


# ----------------------------------------------------------------------------- activation quantize


def bench_act_quant(shapes=ACT_SHAPES, quick: bool = False, device="cuda") -> list[dict]:
    """Fused quantize and fused RMSNorm + quantize (with and without the Hadamard) against a bf16 copy of the
    same tensor; ``of_copy`` is the share of the copy's bandwidth (bytes moved: bf16 read, int4 codes and
    scales written)."""
    rows = []
    for m, k, block in shapes:
        rows += _act_case(m, k, block, quick, device)
    return rows


def _act_case(m: int, k: int, block: int, quick: bool, device) -> list[dict]:
    copies = _copies(m * k * 2, device)
    xs = [torch.randn((m, k), device=device, dtype=torch.bfloat16) for _ in range(copies)]
    ys = [torch.empty_like(x) for x in xs]
    copy_ms = time_ms(lambda i: ys[i].copy_(xs[i]), copies, quick)
    copy_gbs = 2 * m * k * 2 / copy_ms / 1e6
    rows = [{"bench": "act_quant", "M": m, "K": k, "method": "bf16_copy", "hadamard": None,
             "ms": copy_ms, "gbs": copy_gbs, "of_copy": 1.0}]  # fmt: skip
    moved = m * k * 2 + m * k // 2 + m * 4  # read bf16, write int4 codes and a scale
    for had in (None, block):
        t = time_ms(lambda i: quantize_activation_triton(xs[i], 4, 1.0, had), copies, quick)
        rows.append({"bench": "act_quant", "M": m, "K": k, "method": "act_quant_int4", "hadamard": had,
                     "ms": t, "gbs": moved / t / 1e6, "of_copy": moved / t / 1e6 / copy_gbs})  # fmt: skip
    for had in (None, block):  # the norm weight folded (QuaRot), as the rotated models run it
        t = time_ms(lambda i: rmsnorm_quantize_triton(xs[i], None, 1e-6, 4, 1.0, had), copies, quick)
        rows.append({"bench": "act_quant", "M": m, "K": k, "method": "rmsnorm_quant_int4", "hadamard": had,
                     "ms": t, "gbs": moved / t / 1e6, "of_copy": moved / t / 1e6 / copy_gbs})  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- decode attention


def _fill_cache(b, hkv, ctx, bits, device, gen):
    codes, scale, zero = allocate_kv_cache(b, hkv, ctx, HEAD_DIM, bits, KV_GROUP, device)
    codes.copy_(torch.randint(0, 256, codes.shape, generator=gen, device=device, dtype=torch.uint8))
    scale.copy_(torch.rand(scale.shape, generator=gen, device=device) * 0.1 + 0.01)
    zero.copy_(torch.randn(zero.shape, generator=gen, device=device) * 0.5)
    return codes, scale, zero


def bench_decode_attention(contexts=ATTN_CONTEXTS, batches=ATTN_BATCHES, heads=ATTN_HEADS, quick=False,
                           device="cuda") -> list[dict]:  # fmt: skip
    """KV4 decode attention against ``scaled_dot_product_attention`` on a bf16 cache: the bandwidth-bound kernel
    (``kv4_triton``, :mod:`quota.kernels.kv_decode_splitk`, autotuned) and the first one (``kv4_triton_v1``).

    No FP8-cache row: a fair one needs an attention kernel that reads e4m3 codes itself (FlashInfer, FA3);
    PyTorch has none, and converting the cache to bf16 before SDPA would read it twice, which flatters KV4."""
    rows = []
    for hq, hkv in heads:
        for b in batches:
            for ctx in contexts:
                rows += _attention_case(b, hq, hkv, ctx, quick, device)
                torch.cuda.empty_cache()
    return rows


def kv4_bytes(b: int, hkv: int, ctx: int, head_dim: int = HEAD_DIM, group: int = KV_GROUP) -> int:
    """Bytes a KV4 decode step reads: codes, float32 scales and zeros, of K and V."""
    return 2 * b * hkv * ctx * (head_dim // 2 + 8 * (head_dim // group))


def _attention_case(b: int, hq: int, hkv: int, ctx: int, quick: bool, device) -> list[dict]:
    gen = torch.Generator(device=device).manual_seed(ctx + b + hq + hkv)
    bf16_bytes = 2 * b * hkv * ctx * HEAD_DIM * 2
    copies = _copies(bf16_bytes, device, cap=4)

    def randn(shape):
        return torch.randn(shape, generator=gen, device=device, dtype=torch.bfloat16)

    q = [randn((b, hq, 1, HEAD_DIM)) for _ in range(copies)]
    kv4 = [(_fill_cache(b, hkv, ctx, 4, device, gen), _fill_cache(b, hkv, ctx, 4, device, gen)) for _ in range(copies)]
    kv4_read = kv4_bytes(b, hkv, ctx)
    kvb = [(randn((b, hkv, ctx, HEAD_DIM)), randn((b, hkv, ctx, HEAD_DIM))) for _ in range(copies)]
    gqa = {"enable_gqa": True} if hq != hkv else {}
    sdpa = torch.nn.functional.scaled_dot_product_attention
    t_sdpa = time_ms(lambda i: sdpa(q[i], kvb[i][0], kvb[i][1], **gqa), copies, quick)
    t_new = time_ms(lambda i: kv_attention_decode(q[i], kv4[i][0], kv4[i][1], ctx, 4, KV_GROUP, kernel="splitk"),
                    copies, quick)  # fmt: skip
    cfg = kv_decode_splitk.best_config(hq // hkv, HEAD_DIM, KV_GROUP, ctx)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    splits = kv_decode_splitk.decode_splits(b, hkv, ctx, sms, None, hq // hkv, HEAD_DIM)[0]
    t_v1 = time_ms(lambda i: kv_attention_decode(q[i], kv4[i][0], kv4[i][1], ctx, 4, KV_GROUP, kernel="v1"), copies,
                   quick)  # fmt: skip
    base = {"bench": "decode_attention", "B": b, "H_q": hq, "H_kv": hkv, "ctx": ctx}
    return [
        {**base, "method": "sdpa_bf16", "ms": t_sdpa, "gbs": bf16_bytes / t_sdpa / 1e6, "speedup": 1.0, "note": ""},
        {**base, "method": "kv4_triton", "ms": t_new, "gbs": kv4_read / t_new / 1e6, "speedup": t_sdpa / t_new,
         "note": f"{splits} splits, {_config_text(cfg)}"},
        {**base, "method": "kv4_triton_v1", "ms": t_v1, "gbs": kv4_read / t_v1 / 1e6, "speedup": t_sdpa / t_v1,
         "note": "the first decode kernel"},
    ]  # fmt: skip


def _config_text(cfg) -> str:
    if cfg is None:
        return "config n/a"
    kw = cfg.kwargs
    path = "tensor cores" if kw.get("MMA") else "CUDA cores"
    return f"{path}, BLOCK_N={kw.get('BLOCK_N')}, {cfg.num_warps} warps, {kw.get('STAGES')} stages"


# ----------------------------------------------------------------------------- targets and report


def _get(rows, **match):
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def evaluate_targets(rows: list[dict]) -> list[dict]:
    """One entry per target and shape: the measured figure, the threshold and whether it is met."""
    out = []
    for k, n in sorted({(r["K"], r["N"]) for r in rows if r["bench"] == "gemm"}):
        for m in sorted({r["M"] for r in rows if r["bench"] == "gemm" and r["K"] == k and r["N"] == n}):
            ours = _get(rows, bench="gemm", K=k, N=n, M=m, method="w4a4_triton")
            bf16 = _get(rows, bench="gemm", K=k, N=n, M=m, method="bf16_linear")
            imm = _get(rows, bench="gemm", K=k, N=n, M=m, method="int8_int_mm")
            if not ours or not ours["ms"] or not bf16 or not bf16["ms"]:
                continue
            shape = f"M={m} K={k} N={n}"
            if m >= 2048:
                out.append(_target("gemm_prefill_vs_bf16", shape, bf16["ms"] / ours["ms"], "x bf16"))
                if imm and imm["ms"]:
                    out.append(_target("gemm_prefill_vs_int_mm", shape, imm["ms"] / ours["ms"], "x int_mm throughput"))
            elif m <= 16:
                out.append(_target("gemm_decode_vs_bf16", shape, bf16["ms"] / ours["ms"], "x bf16"))
    for r in rows:
        if r["bench"] == "act_quant" and r["method"] in ("act_quant_int4", "rmsnorm_quant_int4"):
            shape = f"M={r['M']} K={r['K']} hadamard={r['hadamard']}"
            if r["method"] != "act_quant_int4":
                shape += f" {r['method']}"
            name = "act_quant_bandwidth" if r["hadamard"] is None else "act_quant_bandwidth_hadamard"
            out.append(_target(name, shape, r["of_copy"], "of copy bandwidth"))
        if r["bench"] == "decode_attention" and r["method"] == "kv4_triton" and r["ctx"] == 16384 and r["B"] == 16:
            shape = f"B=16 ctx=16k H_q={r['H_q']} H_kv={r['H_kv']}"
            out.append(_target("decode_attention_vs_sdpa", shape, r["speedup"], "x SDPA bf16"))
    return out


def _target(name, shape, value, unit):
    need = TARGETS[name]
    return {"target": name, "shape": shape, "value": value, "need": need, "unit": unit, "met": value >= need}


def device_info(device="cuda") -> dict:
    import triton

    props = torch.cuda.get_device_properties(device)
    return {"device": props.name, "sms": props.multi_processor_count, "capability": f"{props.major}.{props.minor}",
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version()}  # fmt: skip


PARTS = ("gemm", "gemv", "act_quant", "attention")


def run_all(quick: bool = False, device="cuda", parts=PARTS) -> dict:
    """The benchmarks of ``parts`` (default: every one), the PTX check (with ``gemm``) and the target
    evaluation, as one JSON-ready dict."""
    if not torch.cuda.is_available():
        raise ValueError("kernel benchmarks need a CUDA device")
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown benchmark parts {sorted(unknown)}; choose among {PARTS}")
    gemm_shapes = GEMM_SHAPES[:2] if quick else GEMM_SHAPES
    gemm_ms = (1, 16, 576, 2048, 4096) if quick else GEMM_MS
    contexts = (4096, 16384) if quick else ATTN_CONTEXTS
    rows = []
    if "gemm" in parts:
        rows += bench_gemm(gemm_shapes, gemm_ms, quick, device)
    if "gemv" in parts:
        rows += bench_gemv(GEMV_SHAPES, GEMV_MS, quick, device)
    if "act_quant" in parts:
        rows += bench_act_quant(ACT_SHAPES[:1] if quick else ACT_SHAPES, quick, device)
    if "attention" in parts:
        rows += bench_decode_attention(contexts, ATTN_BATCHES, ATTN_HEADS, quick, device)
    ptx = check_wgmma_s8(device=device) if "gemm" in parts else None
    return {"info": device_info(device), "quick": quick, "rows": rows, "ptx": ptx,
            "gemm_configs": gemm_config_report(), "targets": evaluate_targets(rows)}  # fmt: skip


def _short(err: Exception) -> str:
    return str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__


def _f(x, fmt="{:.3f}"):
    return "n/a" if x is None else fmt.format(x)


def render_markdown(result: dict) -> str:
    """A report of :func:`run_all`'s result: device, every row, the PTX check and the targets."""
    info = result["info"]
    lines = [f"# Kernel benchmarks on {info['device']}", "",
             f"{info['sms']} SMs, compute capability {info['capability']}; torch {info['torch']}, "
             f"triton {info['triton']}, Python {info['python']}. Medians of `triton.testing.do_bench_cudagraph` "
             "(calls captured in a CUDA graph; inputs rotated over more than twice the L2 size).", ""]  # fmt: skip
    rows = result["rows"]
    lines += ["## W4A4 GEMM", "", "Codes and scales ready for every method (FP8: e4m3 with per-token x per-channel "
              "scales, `use_fast_accum=True`). `x bf16` and `x fp8`: that baseline's time over the row's (above 1: "
              "the row is faster).", "",
              "| K | N | M | method | ms | TOPS | x bf16 | x fp8 | note |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in (r for r in rows if r["bench"] == "gemm"):
        lines.append(f"| {r['K']} | {r['N']} | {r['M']} | {r['method']} | {_f(r['ms'], '{:.4f}')} | "
                     f"{_f(r['tops'], '{:.1f}')} | {_f(r.get('vs_bf16'), '{:.2f}')} | {_f(r.get('vs_fp8'), '{:.2f}')} | "
                     f"{r['note']} |")  # fmt: skip
    gemv = [r for r in rows if r["bench"] == "gemv"]
    if gemv:
        lines += ["", "## Decode GEMV (LLaMA-7B shapes)", "",
                  "From a bf16 input except `fp8_scaled_mm` (input already e4m3). GB/s counts weight bytes.", "",
                  "| K | N | M | method | ms | weight GB/s | x bf16 | x fp8 | note |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in gemv:
            lines.append(f"| {r['K']} | {r['N']} | {r['M']} | {r['method']} | {_f(r['ms'], '{:.4f}')} | "
                         f"{_f(r['gbs'], '{:.0f}')} | {_f(r.get('vs_bf16'), '{:.2f}')} | "
                         f"{_f(r.get('vs_fp8'), '{:.2f}')} | {r['note']} |")  # fmt: skip
    lines += ["", "## Activation quantize (int4)", "", "`of copy`: share of a bf16 copy's bandwidth (target 0.70 "
              "without the Hadamard, 0.50 with it). `rmsnorm_quant_int4`: RMSNorm (weight folded) fused with it.", "",
              "| M | K | method | Hadamard block | ms | GB/s | of copy |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in (r for r in rows if r["bench"] == "act_quant"):
        lines.append(f"| {r['M']} | {r['K']} | {r['method']} | {r['hadamard']} | {_f(r['ms'], '{:.4f}')} | "
                     f"{_f(r['gbs'], '{:.0f}')} | {_f(r['of_copy'], '{:.2f}')} |")  # fmt: skip
    lines += ["", "## Decode attention (KV4, D=128, group 64)", "",
              "GB/s counts the bytes each method reads: the bf16 cache for SDPA; codes, scales and zeros for KV4. "
              "No FP8-cache baseline: it needs an attention kernel that reads e4m3 itself, which PyTorch lacks.", "",
              "| B | H_q | H_kv | ctx | method | ms | GB/s | speedup vs SDPA | note |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in (r for r in rows if r["bench"] == "decode_attention"):
        lines.append(f"| {r['B']} | {r['H_q']} | {r['H_kv']} | {r['ctx']} | {r['method']} | {_f(r['ms'], '{:.4f}')} | "
                     f"{_f(r['gbs'], '{:.0f}')} | {_f(r['speedup'], '{:.2f}')} | {r.get('note', '')} |")  # fmt: skip
    ptx = result.get("ptx")
    if ptx:
        lines += ["", "## int8 wgmma check", "", f"W4A4 kernel config `{ptx['config']}`: {ptx['wgmma_s8_lines']} of "
                  f"{ptx['wgmma_lines']} wgmma lines are s8; first: `{ptx['line']}`", ""]  # fmt: skip
    else:
        lines.append("")
    lines += ["## Targets", "", "| target | shape | measured | needed | met |", "|---|---|---|---|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['shape']} | {t['value']:.2f} {t['unit']} | {t['need']} | "
                     f"{'met' if t['met'] else 'MISSED'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m quota.bench.kernels [--quick] [--out DIR] [PART ...]``: some benchmarks only (``quota bench
    kernels`` runs them all); prints the Markdown report, and with ``--out`` writes JSON and Markdown there."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m quota.bench.kernels")
    parser.add_argument("parts", nargs="*", choices=PARTS, default=list(PARTS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run_all(args.quick, parts=tuple(args.parts))
    text = render_markdown(result)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        name = "bench_kernels_" + "_".join(args.parts)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        (args.out / f"{name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
