"""GPTQ: weight quantization that compensates each column's rounding error on the columns not yet
quantized, using the inverse Hessian ``H = 2 X^T X / n`` of the layer's calibration inputs."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from quota.quant.quantizers import (
    QuantizedWeight,
    expand_group_scale,
    quantize_symmetric,
    search_weight_clip,
    weight_scale,
)


class HessianAccumulator:
    """Running ``H = 2/n sum_i x_i^T x_i`` over calibration inputs ``x`` ``[..., K]`` (kept in float64)."""

    def __init__(self, in_features: int, device: torch.device | str = "cpu") -> None:
        self.hessian = torch.zeros(in_features, in_features, dtype=torch.float64, device=device)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(self.hessian.device, torch.float32)  # [n, K]
        n = x.shape[0]
        self.hessian *= self.count / (self.count + n)
        self.count += n
        self.hessian += (2.0 / self.count) * (x.T @ x).double()  # float32 products, float64 running sum

    def input_sq_norm(self) -> torch.Tensor:
        """Diagonal of ``H / 2``: mean squared input per channel (for the RTN clipping search)."""
        return torch.diagonal(self.hessian) / 2


@contextlib.contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """One intra-op CPU thread while work on ``device`` runs (restored after), for work made of many small ops
    (GPTQ's sweep, the weight clipping search): a second thread only adds synchronization, and on cores shared
    with other processes each synchronization can wait for a descheduled thread. Measured on 2 busy cores:
    GPTQ of three testbed-sized weights 1.5-2.0 s with one thread against 6.5-8.5 s with two (the same codes);
    the clipping search of three 0.3-0.9 M-weight matrices 0.24-0.31 s against 3.3-5.5 s."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int = 4,
    group_size: int | None = None,
    damp: float = 0.01,
    act_order: bool = True,
    block_size: int = 128,
    clip_search: bool = True,
) -> QuantizedWeight:
    """Quantize ``weight`` ``[N, K]`` with GPTQ against ``hessian`` ``[K, K]``.

    Scales are fixed before the sweep from the original weight (per channel, or per static group),
    optionally with the Hessian-weighted clipping search. ``damp`` adds ``damp * mean(diag H)`` to the
    diagonal; ``act_order`` processes columns by decreasing ``diag H``. Returns codes in the original
    column order. On a CPU it runs on one intra-op thread (:func:`one_cpu_thread`).
    """
    with one_cpu_thread(weight.device):
        return _gptq(weight, hessian, bits, group_size, damp, act_order, block_size, clip_search)


def _gptq(weight, hessian, bits, group_size, damp, act_order, block_size, clip_search) -> QuantizedWeight:
    """:func:`gptq_quantize`'s work, on the caller's threads."""
    w = weight.detach().to(torch.float64).clone()  # [N, K]
    n, k = w.shape
    h = hessian.detach().to(w.device, torch.float64).clone()
    if h.shape != (k, k):
        raise ValueError(f"Hessian shape {tuple(h.shape)} does not match weight K={k}")
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0

    diag = torch.diagonal(h).clone()
    clip = search_weight_clip(w.float(), bits, group_size, diag / 2) if clip_search else 1.0
    scale = weight_scale(w.float(), bits, group_size, clip)  # [N, 1] or [N, G]
    col_scale = expand_group_scale(scale, group_size, k).double().expand(n, k)  # [N, K]

    perm = torch.argsort(diag, descending=True) if act_order else torch.arange(k, device=w.device)
    w, h, col_scale = w[:, perm], h[perm][:, perm], col_scale[:, perm]

    h += damp * torch.mean(torch.diagonal(h)) * torch.eye(k, dtype=torch.float64, device=h.device)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    codes = torch.zeros(n, k, dtype=torch.int8, device=w.device)
    _sweep(w, hinv, col_scale, codes, bits, block_size)
    inverse = torch.argsort(perm)
    return QuantizedWeight(codes[:, inverse].contiguous(), scale.float(), bits, group_size)


def _sweep(w: torch.Tensor, hinv: torch.Tensor, col_scale: torch.Tensor, codes: torch.Tensor, bits: int,
           block_size: int) -> None:
    """GPTQ's column loop, in place: quantize column after column of ``w`` ``[N, K]`` (float64, columns in
    processing order) into ``codes`` ``[N, K]`` (int8), feeding each column's rounding error to the columns not
    yet quantized through the upper Cholesky factor ``hinv`` ``[K, K]`` of the inverse Hessian, ``block_size``
    columns at a time (lazy batch updates); ``col_scale`` ``[N, K]``: each weight's scale."""
    k = w.shape[1]
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i]  # [N]
            s = col_scale[:, i1 + i]  # [N]
            q = quantize_symmetric(col, s, bits)
            codes[:, i1 + i] = q
            err = (col - q.double() * s) / hinv1[i, i]  # [N]
            w1[:, i:].addr_(err, hinv1[i, i:], alpha=-1)  # the outer product err x hinv1[i, i:], subtracted in place
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
