"""Saved quantized checkpoints: quantize once, :func:`save`, then :func:`load` anywhere without calibrating again.

A checkpoint is a folder::

    quota_checkpoint.json                 the manifest (type quota.checkpoint, version 1: quota.saved.manifest)
    config.json                           the source model's config, as it was
    tokenizer.json, preprocessor_config.json, chat_template.jinja, ...   the processor files, as they were
    model-00001-of-0000N.safetensors      every tensor of the quantized model, each file < 16 MiB
    model.safetensors.index.json          tensor name -> file

The shards hold the quantized linears' packed int4 codes (``weight`` ``[N, K/2]`` int8) and float32 scales, and
every other parameter and buffer after the rotation was folded in (norms, embeddings, vision tower, projector and
its rotation, lm_head). The manifest holds what is not a tensor: the QuantConfig, the recipe, the source model's
hash and class, the quantization report, per-module records (bits, group sizes, clipping ratios, Hadamard
blocks, KV quantizer settings: :mod:`quota.quantize.serialize`), how to rebuild the architecture from
``config.json`` (:mod:`quota.saved.architecture`), and the sha256 of every file. Only safetensors and JSON are
read back: nothing is unpickled.

Modules: :mod:`~quota.saved.manifest` (the versioned manifest), :mod:`~quota.saved.shards` (size-bounded,
checksummed safetensors shards), :mod:`~quota.saved.architecture` (the model's structure as edits of what
``config.json`` builds), :mod:`~quota.saved.folder` (a folder written whole or not at all),
:mod:`~quota.saved.writer` and :mod:`~quota.saved.loader`.
"""

from quota.saved.loader import LoadedQuantized, load
from quota.saved.manifest import MANIFEST_NAME, SavedCheckpointError, read_manifest
from quota.saved.writer import Source, save
from quota.saved.shards import MAX_SHARD_BYTES

__all__ = ["LoadedQuantized", "MANIFEST_NAME", "MAX_SHARD_BYTES", "SavedCheckpointError", "Source", "load",
           "read_manifest", "save"]
