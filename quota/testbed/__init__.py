"""The synthetic world quota is measured on: a small VLM built from real parts and a dense synthetic VQA suite.

- :mod:`~quota.testbed.scenes`, :mod:`~quota.testbed.font`: procedural 192 x 192 scenes;
- :mod:`~quota.testbed.tasks`, :mod:`~quota.testbed.splits`: five question families and fixed, versioned splits;
- :mod:`~quota.testbed.model`: the testbed VLM (SmolLM2-135M + a small ViT), its prompts and weights;
- :mod:`~quota.testbed.batches`: prompts and calibration batches in its format;
- :mod:`~quota.testbed.quantized`: the testbed quantized once per config, through the disk cache;
- :mod:`~quota.testbed.profile`: ``quota profile`` on the testbed (and the additivity check);
- :mod:`~quota.testbed.train`: its training (``python -m quota.testbed.train``, resumable, data-parallel).
"""
