"""A stand-in for the testbed that makes ``quota profile`` cheap on the CPU while keeping its whole path (the
command line, the settings record, quantization, score calibration, the sharded grid and its partial files):
a tiny random Llava (3 decoder layers, 16 visual tokens) with random prompts instead of the trained testbed,
and two score candidates instead of nine (two selection variants instead of four). ``install()`` patches the
modules (for a subprocess);
``patches()`` lists the same patches for ``monkeypatch``.

``QUOTA_TEST_KILL_AFTER=K`` makes the process SIGKILL itself when grid item K+1 starts (K items finished and
checkpointed), as ``kill -9`` would. Each finished grid item prints ``grid item <item>`` on stderr and each
model load ``testbed loaded``.
"""

from __future__ import annotations

import os
import signal
import sys

import torch

from tests.runtime.models import left_pad, pixels, prompt, tiny_llava

N_VISUAL = 16
CANDIDATES = ({"attn_last": 0.9, "magnitude": 0.1}, {"magnitude": 0.5, "risk": 0.5})
SELECTIONS = ({"selection": "topk", "merge": 0}, {"selection": "topk", "merge": 2})


def fake_load(device="cpu", dtype=torch.float32, weights_dir=None):
    from quota.testbed.model import Testbed

    print("testbed loaded", file=sys.stderr, flush=True)
    return Testbed(tiny_llava(layers=3).to(device=device, dtype=dtype), None, {})


def fake_batches(tokenizer, questions, batch_size, device, dtype):
    from quota.profiling.sensitivity import CalibrationBatch

    out = []
    for i in range(0, len(questions), batch_size):
        chunk = questions[i: i + batch_size]
        ids, mask = left_pad([prompt(N_VISUAL, 2, 3 + j, seed=i + j) for j in range(len(chunk))])
        answers = torch.tensor([[5, 6]] * len(chunk))
        out.append(CalibrationBatch(ids.to(device), mask.to(device), pixels(len(chunk), seed=i).to(device, dtype),
                                    answers.to(device), torch.ones_like(answers, dtype=torch.bool).to(device),
                                    [q.task for q in chunk]))
    return out


def fake_quantize(model, tokenizer, config, weights_dir=None, calibration_limit=None, inplace=False):
    from quota.quantize.model import quantize_model

    return quantize_model(model, config, None, inplace=inplace)  # the test configs need no calibration


def counting_run_sharded(real):
    """``run_sharded`` whose items report themselves, and which SIGKILLs the process at the set point."""
    kill_after = int(os.environ.get("QUOTA_TEST_KILL_AFTER", "-1"))

    def run(items, compute, *args, **kwargs):
        done = [0]

        def wrapped(item):
            if done[0] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            value = compute(item)
            done[0] += 1
            print(f"grid item {list(item)}", file=sys.stderr, flush=True)
            return value

        return real(items, wrapped, *args, **kwargs)

    return run


def patches() -> list[tuple[object, str, object]]:
    import quota.profiling.measure as measure
    import quota.testbed.profile as testbed_profile
    import quota.testbed.quantized as testbed_quantized

    return [
        (testbed_profile.testbed, "load", fake_load),
        (testbed_profile.testbed, "N_VISUAL_TOKENS", N_VISUAL),
        (testbed_profile, "make_batches", fake_batches),
        (testbed_quantized, "quantize_testbed", fake_quantize),  # behind quantize_after_teacher
        (measure, "SCORE_CANDIDATES", CANDIDATES),
        (measure, "SELECTION_CANDIDATES", SELECTIONS),
        (measure, "run_sharded", counting_run_sharded(measure.run_sharded)),
    ]


def install() -> None:
    for module, name, value in patches():
        setattr(module, name, value)


if __name__ == "__main__":  # python -m tests.profiling.fake_testbed profile ... (the quota command line)
    torch.set_num_threads(1)
    install()
    from quota.cli.main import main

    sys.exit(main(sys.argv[1:]))
