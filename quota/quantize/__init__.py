"""Quantization transforms: what turns a model into its low-bit form, on top of the kernels.

- :mod:`~quota.quantize.rotation`: QuaRot-style rotation folded into the weights;
- :mod:`~quota.quantize.gptq`: GPTQ weight quantization;
- :mod:`~quota.quantize.linear`: ``QuantLinear`` (reference and Triton paths);
- :mod:`~quota.quantize.attention`: the KV quantizer and the ``quota`` attention function;
- :mod:`~quota.quantize.calibration`: calibration inputs layer by layer;
- :mod:`~quota.quantize.model`: ``quantize_model``;
- :mod:`~quota.quantize.disk_cache`: a disk cache of quantized models;
- :mod:`~quota.quantize.serialize`: quantized modules as JSON records and tensors (what :mod:`quota.saved` writes).

The primitives they use (config, int4 packing, reference quantizers, Hadamard) are in :mod:`quota.quant`.
"""
