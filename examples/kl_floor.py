"""Why a KL against the low-bit model's own answers has a floor: the quantized testbed re-rolls its answers on any
change of input, even one the float model does not notice.

Measures, on held-out calibration questions, the KL (summed over answer tokens, averaged over questions) of the
low-bit model's answers after a change of input, against two references: the low-bit model's own all-token answers
and the float model's. The changes: Gaussian noise on the pixels, and dropping one visual token at a layer.

    python examples/kl_floor.py --questions 16 --calibration 32            # CPU: about 10 minutes on 2 cores
    python examples/kl_floor.py --questions 64 --device cuda

Prints one JSON line per change. Results: docs/results/joint_h100/README.md ("The low-bit KL floor").
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from quota.device import placement
from quota.profiling.profile import Profile
from quota.profiling.sensitivity import answer_logprobs, damage
from quota.quant.config import QuantConfig
from quota.runtime.generate import PrunedRunner
from quota.testbed import model as testbed
from quota.testbed.batches import make_batches
from quota.testbed.quantized import quantize_testbed
from quota.testbed.splits import refinement_split


def mean_kl(reference: list[torch.Tensor], answers: list[torch.Tensor], batches) -> float:
    """Mean over questions of KL(reference || answers) summed over each question's answer tokens."""
    kls = [damage(r, a, b)[0] for r, a, b in zip(reference, answers, batches)]
    return float(sum(k.sum() for k in kls) / sum(len(k) for k in kls))


def with_pixel_noise(batches, scale: float, seed: int = 0):
    """The batches with ``scale`` times standard Gaussian noise added to their pixels (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for b in batches:
        noise = torch.randn(b.pixel_values.shape, generator=gen).to(b.pixel_values)
        out.append(dataclasses.replace(b, pixel_values=b.pixel_values + scale * noise))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="docs/results/joint_h100/testbed_joint.json",
                    help="profile whose quantization config and scoring to use")
    ap.add_argument("--questions", type=int, default=16, help="held-out calibration questions (refinement split)")
    ap.add_argument("--calibration", type=int, default=None, help="calibrate the quantization on the first N only")
    ap.add_argument("--layer", type=int, default=4, help="layer at which one token is dropped")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    device, dtype = placement(args.device)
    profile = Profile.load(args.profile)
    tb = testbed.load(device, dtype)
    batches = make_batches(tb.tokenizer, refinement_split(args.questions), 16, device, dtype)
    noisy = {scale: with_pixel_noise(batches, scale) for scale in (1e-3, 1e-2)}
    n, layers = profile.n_visual_tokens, profile.n_layers

    def answers(model, schedule, data):
        runner = PrunedRunner.from_scoring(model, schedule, profile.scoring)
        return [answer_logprobs(runner, b).cpu() for b in data]

    float_ref = answers(tb.model, [n] * layers, batches)
    print(json.dumps({"change": "float model, pixel noise 0.001",
                      "kl_vs_own": mean_kl(float_ref, answers(tb.model, [n] * layers, noisy[1e-3]), batches)}))
    model = quantize_testbed(tb.model, tb.tokenizer, QuantConfig.from_dict(profile.quant),
                             calibration_limit=args.calibration, inplace=True)
    low_ref = answers(model, [n] * layers, batches)
    print(json.dumps({"change": "none (low-bit, all tokens)", "kl_vs_low_bit": 0.0,
                      "kl_vs_float": mean_kl(float_ref, low_ref, batches)}))
    cases = [(f"pixel noise {s}", [n] * layers, noisy[s]) for s in (1e-3, 1e-2)]
    cases.append((f"drop 1 token at layer {args.layer}", [n] * args.layer + [n - 1] * (layers - args.layer), batches))
    for name, schedule, data in cases:
        out = answers(model, schedule, data)
        print(json.dumps({"change": name, "kl_vs_low_bit": mean_kl(low_ref, out, batches),
                          "kl_vs_float": mean_kl(float_ref, out, batches)}), flush=True)


if __name__ == "__main__":
    main()
