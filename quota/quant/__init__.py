"""Quantization primitives: pure tensor math with no modules and no kernels.

- :mod:`~quota.quant.config`: ``QuantConfig``, shared by the reference and the kernel paths;
- :mod:`~quota.quant.int4`: packing of 4-bit codes;
- :mod:`~quota.quant.quantizers`: the reference quantizers (the kernels' test oracle and the CPU path);
- :mod:`~quota.quant.hadamard`: Hadamard transforms.

The transforms built on them and on the kernels are in :mod:`quota.quantize`.
"""
