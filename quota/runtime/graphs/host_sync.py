"""``forbid_host_sync``: fail on any operator that would read device data back to the host, on any device.

A CUDA graph records launches and cannot hold a read-back (``.item()``, ``bool(t)``, ``nonzero``, an output
sized by data) or a copy between host and device; capture fails on them, but only on a GPU. Run a region
under :func:`forbid_host_sync` on the CPU to find them first.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class HostSyncError(RuntimeError):
    """An operation that reads a tensor back to the host (or sizes its output by data) ran where none may."""


_SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "_unique", "unique_consecutive",
            "unique_dim", "item", "is_nonzero", "equal", "repeat_interleave", "nonzero_static"}


def _crosses_host(func, args, kwargs) -> bool:
    """A copy between the host and a device (``.to(device)``, ``copy_``): a recorded graph may not hold one."""
    name = func._schema.name.split("::")[-1]
    if name == "_to_copy" and args and isinstance(args[0], torch.Tensor):
        target = kwargs.get("device")
        return target is not None and (torch.device(target).type == "cpu") != (args[0].device.type == "cpu")
    if name == "copy_" and len(args) >= 2 and all(isinstance(a, torch.Tensor) for a in args[:2]):
        return (args[0].device.type == "cpu") != (args[1].device.type == "cpu")
    return False


def _masks_by_bool(func, args) -> bool:
    """Indexing by a boolean mask sizes its output by the data (it runs ``nonzero`` inside)."""
    if func._schema.name.split("::")[-1] not in ("index", "index_put", "index_put_"):
        return False
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


class _ForbidSync(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name.split("::")[-1]
        if name in _SYNCING or _masks_by_bool(func, args) or _crosses_host(func, args, kwargs):
            raise HostSyncError(f"{func} synchronizes with the host (or copies across it)")
        return func(*args, **kwargs)


@contextmanager
def forbid_host_sync():
    """Raise :class:`HostSyncError` on any operator that would read device data back to the host (``.item()``,
    ``bool(t)``, ``nonzero``, ``torch.equal``, indexing by a boolean mask...) or copy between the host and a
    device: what a CUDA graph capture forbids, checkable on the CPU. ``Tensor.tolist()`` does not pass through
    the operator dispatcher and is not caught; on the CPU a host-to-device copy is no copy and is not seen
    either (on CUDA it is)."""
    with _ForbidSync():
        yield
