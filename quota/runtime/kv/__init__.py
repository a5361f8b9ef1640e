"""Per-layer KV caches of the pruning runtime: each decoder layer holds its own compacted visual tokens.

- :mod:`~quota.runtime.kv.layerwise`: full-precision (or simulated-quantization) keys and values;
- :mod:`~quota.runtime.kv.quantized`: int4/int8 codes read inside the attention kernels;
- :mod:`~quota.runtime.kv.static_lengths`: the device-held lengths both use under CUDA graphs.
"""
