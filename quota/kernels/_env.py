"""Where the Triton kernels run: on CUDA, or on the CPU under the Triton interpreter.

``TRITON_INTERPRET=1`` (set before ``triton`` is imported) runs every kernel in NumPy on the CPU;
that is how CI checks the kernels. The interpreter differs from the compiler in ways the kernels
account for through :data:`INTERPRET`:

- ``tl.dot`` on bfloat16 operands is wrong in the interpreter (it multiplies the raw bit patterns),
  so kernels upcast dot operands to float32 there (``DOT_F32``);
- inline PTX does not run there, so the int4 unpack uses its plain-Triton form;
- autotuning would time configs with CUDA events, so each kernel keeps a single config there.
"""

from __future__ import annotations

import inspect
import os

import torch

INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"
"""True when Triton runs kernels in its CPU interpreter (read once, at import)."""


def check_device(name: str, *tensors: torch.Tensor) -> torch.device:
    """All ``tensors`` on one device that can run the kernels; returns it, else raises ValueError."""
    device = tensors[0].device
    for t in tensors:
        if t.device != device:
            raise ValueError(f"{name}: all tensors must be on one device, got {device} and {t.device}")
    if device.type == "cuda":
        return device
    if device.type == "cpu" and INTERPRET:
        return device
    raise ValueError(
        f"{name}: Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for the CPU interpreter), "
        f"got a tensor on {device}; use the reference function on other devices"
    )


def pick_configs(configs: list, interpret_config):
    """The autotune list on a GPU, a single small config under the interpreter."""
    return [interpret_config] if INTERPRET else configs


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def m_bucket(m: int) -> int:
    """Autotune key for a GEMM's M: powers of two up to 4096, so prefill lengths do not retune every call."""
    return min(next_power_of_2(m), 4096)


def configs_among(configs: list, wanted: list) -> list:
    """The autotune candidates of ``configs`` that are in ``wanted`` (same kwargs and warps), else the first alone
    (an ``early_config_prune`` must leave one)."""
    keep = [c for c in configs if any(c.kwargs == w.kwargs and c.num_warps == w.num_warps for w in wanted)]
    return keep or configs[:1]


def settled_bench(rep: int = 100):
    """A ``do_bench`` for ``triton.autotune``: waits for all queued GPU work, then times a candidate from a CUDA graph
    of back-to-back calls (no launch gaps: decode kernels take microseconds), replayed on a side stream.

    Triton's own CUDA-graph timing (``use_cuda_graph=True``) launches its first call on a fresh side stream without
    waiting for the current stream. A candidate then writes its output while queued kernels of the current stream may
    still read that memory: the caching allocator hands a new tensor the memory of one freed on the current stream,
    whose last readers may not have run yet. Autotuning happens in the first call of each shape, so the first forward
    of a process could differ from every later one. Waiting first removes the race.

    Returns ``bench(kernel_call, quantiles=None)``: the median time in ms, or one value per quantile."""

    def bench(kernel_call, quantiles=None, **_):
        import triton.testing

        torch.cuda.synchronize()
        timer = triton.testing.do_bench_cudagraph
        if "quantiles" in inspect.signature(timer).parameters:
            return timer(kernel_call, rep=rep, quantiles=quantiles)
        ms = timer(kernel_call, rep=rep)
        return [ms] * len(quantiles) if quantiles else ms

    return bench
