"""The autotuners' timing waits for queued GPU work before its first call on a side stream (see
quota.kernels._env.settled_bench); checked on the CPU with the device calls recorded."""

import triton.testing

from quota.kernels import _env, w4_gemv, w4a4_gemm, w4a8_gemm


def test_it_synchronizes_before_timing_and_returns_one_value_per_quantile(monkeypatch):
    calls = []
    monkeypatch.setattr(_env.torch.cuda, "synchronize", lambda: calls.append("synchronize"))

    def graph_timer(fn, rep=20, quantiles=None):
        calls.append(("time", rep, quantiles))
        fn()
        return [1.0, 0.5, 2.0] if quantiles else 1.0

    monkeypatch.setattr(triton.testing, "do_bench_cudagraph", graph_timer)
    bench = _env.settled_bench(rep=7)
    assert bench(lambda: calls.append("kernel"), quantiles=(0.5, 0.2, 0.8)) == [1.0, 0.5, 2.0]
    assert calls == ["synchronize", ("time", 7, (0.5, 0.2, 0.8)), "kernel"]


def test_a_timer_without_quantiles_gives_its_value_for_each(monkeypatch):
    monkeypatch.setattr(_env.torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(triton.testing, "do_bench_cudagraph", lambda fn, rep=20: 3.0)
    bench = _env.settled_bench()
    assert bench(lambda: None, quantiles=(0.5, 0.2)) == [3.0, 3.0] and bench(lambda: None) == 3.0


def test_the_cuda_graph_timed_kernels_use_it_on_a_gpu():
    """Under the interpreter the kernels keep one config and no timer; on a GPU their autotuners time through
    settled_bench, never through Triton's own use_cuda_graph timing (which starts without waiting)."""
    for module in (w4a4_gemm, w4_gemv, w4a8_gemm):
        source = open(module.__file__).read()
        assert "use_cuda_graph" not in source and "do_bench=None if INTERPRET else settled_bench()" in source
