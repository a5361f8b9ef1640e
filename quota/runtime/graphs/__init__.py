"""CUDA graphs for the runtime: ``StaticDecoder`` (decode steps) and ``StaticPrefill`` (prefills of one input
shape), each recorded once and replayed.

An eager decode step of a 7B model issues a few thousand kernel launches; at batch 1 the host cannot issue
them as fast as the GPU runs them (a W4A4 step measured the GPU busy 5% of the time). Replaying a CUDA graph
issues the whole step at once. A graph replays fixed launches, so every launch of the step must read what
changes from one step to the next from device memory:

- the token ids: a static ``[B]`` buffer, copied into before each replay;
- the position: the prefill's ``base_position`` plus a device step counter advanced inside the step;
- each layer's cache length: the cache's static mode (``device_lengths``, see
  :class:`~quota.runtime.kv.layerwise.LayerwiseKVCache` and :class:`~quota.runtime.kv.quantized.QuantizedKVStore`), with
  which the KV write lands at the stored length and attention reads it (the full-precision cache masks the
  slots past it; the quantized cache's kernels read it);
- no step may synchronize with the host (tested on the CPU by :func:`forbid_host_sync`).

The first step runs eagerly (it compiles and autotunes the kernels for these shapes), the second is captured
and replayed, and so is every later one. Without CUDA (or with ``graph=False``) every step runs the same
static code eagerly, which is how the CPU tests check it against :meth:`PrunedRunner.decode_step`.

A prefill is static once its input shapes are fixed: :class:`StaticPrefill` records
:meth:`PrunedRunner.prefill_language` (and the image encoder, where the architecture allows it,
``ArchSpec.static_vision``) with every host-side check left out, and checks each request on the host before
it replays. Pruning keeps exactly ``k_l`` tokens per layer, so every shape is known in advance.
"""

from quota.runtime.graphs.host_sync import HostSyncError, forbid_host_sync
from quota.runtime.graphs.static_decode import StaticDecoder
from quota.runtime.graphs.static_prefill import StaticPrefill

__all__ = ["HostSyncError", "StaticDecoder", "StaticPrefill", "forbid_host_sync"]
