"""Benchmarks: the Triton kernels against PyTorch baselines (:mod:`~quota.bench.kernels`), end-to-end speed
of a VLM under the runtime (:mod:`~quota.bench.e2e`) and the allocation solvers (:mod:`~quota.bench.solvers`)."""
