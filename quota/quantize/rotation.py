"""QuaRot-style rotation of a decoder-only language model, computed in float64 and folded into weights.

After :func:`rotate_language_model` the model computes the same function (up to float rounding) while
its residual stream lives in a rotated basis ``h' = h @ Q`` in which outlier channels (massive
activations) are spread over many channels, so per-token quantization of the linears' inputs loses
far less. Steps, for every decoder layer and the head:

1. every RMSNorm scale is folded into the linears that read the normalized stream
   (``W <- W diag(g)``, ``g <- 1``), which makes RMSNorm commute with the rotation;
2. ``Q`` (a randomized orthogonal Hadamard, see :func:`random_hadamard_rotation`) is fused into the
   embeddings (``E <- E Q``), the stream readers (``W <- W Q``: q/k/v, gate/up, lm_head) and the stream
   writers (``W <- Q^T W``, ``b <- b Q``: o_proj, down_proj);
3. optionally, a Hadamard of size head_dim is fused per head into v_proj's outputs and o_proj's inputs,
   so values are quantized in a rotated basis too;
4. in a VLM, the projector's output (the visual tokens that take the place of image-token embeddings) is
   rotated too (:class:`RotatedOutput`); without it the image reaches the rotated stream in the wrong basis
   and the model keeps its text skills but loses the picture.

The online Hadamard on the ``down_proj`` input is not done here: it belongs to the quantized linear
(:class:`quota.quantize.linear.QuantLinear`), which folds ``H`` into its weight and applies it to inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from quota.models.spec import ArchSpec, get_submodule, set_submodule
from quota.quant.hadamard import hadamard_matrix, is_power_of_two, random_hadamard_rotation


@dataclass(frozen=True)
class RotationInfo:
    """What :func:`rotate_language_model` did (recorded in recipes and reports)."""

    hidden_size: int
    seed: int
    mix_blocks: bool
    value_head_hadamard: bool
    projector_rotated: bool = False


class RotatedOutput(nn.Module):
    """``inner`` followed by the residual-stream rotation: ``y = inner(x) @ Q`` (``Q`` ``[d, d]``, computed in at
    least float32). Wraps a VLM projector whose last operation (a norm, say) does not commute with ``Q``, so
    the rotation cannot be folded into a weight."""

    def __init__(self, inner: nn.Module, rotation: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("rotation", rotation.detach().to(torch.float32).clone())  # [d, d]

    def forward(self, *args, **kwargs) -> torch.Tensor:
        out = self.inner(*args, **kwargs)  # [..., d]
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"RotatedOutput needs a projector that returns a tensor, got {type(out).__name__}")
        compute = torch.promote_types(out.dtype, torch.float32)
        return (out.to(compute) @ self.rotation.to(compute)).to(out.dtype)


def _set_weight(linear: nn.Linear, value: torch.Tensor) -> None:
    linear.weight.data = value.to(linear.weight.dtype).contiguous()


@torch.no_grad()
def untie_lm_head(model: nn.Module, spec: ArchSpec) -> None:
    """Give lm_head its own weight when it shares the embedding matrix (rotation folds differ)."""
    head, emb = spec.lm_head_of(model), spec.embeddings_of(model)
    if head.weight is emb.weight or head.weight.data_ptr() == emb.weight.data_ptr():
        head.weight = nn.Parameter(emb.weight.detach().clone(), requires_grad=False)
    for config in {id(c): c for c in (getattr(model, "config", None), spec.text_config_of(model)) if c is not None}.values():
        if getattr(config, "tie_word_embeddings", False):
            config.tie_word_embeddings = False


@torch.no_grad()
def fold_norms(model: nn.Module, spec: ArchSpec) -> None:
    """Fold each RMSNorm's scale into the linears that follow it and reset the scale to 1."""
    lspec = spec.layer

    def fold(norm: nn.Module, readers: list[nn.Linear]) -> None:
        g = norm.weight.detach().double()
        for lin in readers:
            _set_weight(lin, lin.weight.detach().double() * g.unsqueeze(0))
        norm.weight.data.fill_(1.0)

    for layer in spec.layers_of(model):
        attn, mlp = get_submodule(layer, lspec.attention), get_submodule(layer, lspec.mlp)
        fold(get_submodule(layer, lspec.input_norm),
             [getattr(attn, n) for n in (lspec.q_proj, lspec.k_proj, lspec.v_proj)])
        fold(get_submodule(layer, lspec.post_attention_norm),
             [getattr(mlp, n) for n in (lspec.gate_proj, lspec.up_proj)])
    fold(spec.final_norm_of(model), [spec.lm_head_of(model)])


@torch.no_grad()
def _rotate_readers(linears: list[nn.Linear], q: torch.Tensor) -> None:
    for lin in linears:
        _set_weight(lin, lin.weight.detach().double() @ q)


@torch.no_grad()
def _rotate_writer(lin: nn.Linear, q: torch.Tensor) -> None:
    _set_weight(lin, q.T @ lin.weight.detach().double())
    if lin.bias is not None:
        lin.bias.data = (lin.bias.detach().double() @ q).to(lin.bias.dtype)


@torch.no_grad()
def _rotate_value_heads(v_proj: nn.Linear, o_proj: nn.Linear, head_dim: int) -> None:
    """v <- v H per kv head (rows of v_proj), and o_proj's input columns per q head by H."""
    h = hadamard_matrix(head_dim, torch.float64).to(v_proj.weight.device)
    wv = v_proj.weight.detach().double()  # [Hkv*D, d]
    wv = (h.T @ wv.view(-1, head_dim, wv.shape[-1])).reshape_as(wv)
    _set_weight(v_proj, wv)
    if v_proj.bias is not None:
        v_proj.bias.data = (v_proj.bias.detach().double().view(-1, head_dim) @ h).flatten().to(v_proj.bias.dtype)
    wo = o_proj.weight.detach().double()  # [d, Hq*D]
    wo = (wo.view(wo.shape[0], -1, head_dim) @ h).reshape_as(wo)
    _set_weight(o_proj, wo)


@torch.no_grad()
def rotate_language_model(
    model: nn.Module, spec: ArchSpec, seed: int = 0, mix_blocks: bool = True, value_head_hadamard: bool = True
) -> RotationInfo:
    """Rotate ``model``'s language model in place (see the module docstring). Returns what was done."""
    lspec = spec.layer
    config = spec.text_config_of(model)
    hidden = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    untie_lm_head(model, spec)
    fold_norms(model, spec)
    device = spec.embeddings_of(model).weight.device
    q = random_hadamard_rotation(hidden, seed, mix_blocks=mix_blocks).to(device)  # [d, d] float64

    emb = spec.embeddings_of(model)
    emb.weight.data = (emb.weight.detach().double() @ q).to(emb.weight.dtype)
    for layer in spec.layers_of(model):
        attn, mlp = get_submodule(layer, lspec.attention), get_submodule(layer, lspec.mlp)
        _rotate_readers([getattr(attn, n) for n in (lspec.q_proj, lspec.k_proj, lspec.v_proj)], q)
        _rotate_writer(getattr(attn, lspec.o_proj), q)
        _rotate_readers([getattr(mlp, n) for n in (lspec.gate_proj, lspec.up_proj)], q)
        _rotate_writer(getattr(mlp, lspec.down_proj), q)
        if value_head_hadamard and is_power_of_two(head_dim):
            _rotate_value_heads(getattr(attn, lspec.v_proj), getattr(attn, lspec.o_proj), head_dim)
    _rotate_readers([spec.lm_head_of(model)], q)
    projector_rotated = False
    if spec.projector is not None:
        projector = get_submodule(model, spec.projector)
        if isinstance(projector, RotatedOutput):
            raise ValueError("the projector is already rotated: rotate_language_model was applied twice")
        set_submodule(model, spec.projector, RotatedOutput(projector, q))
        projector_rotated = True
    return RotationInfo(hidden, seed, mix_blocks, value_head_hadamard and is_power_of_two(head_dim), projector_rotated)
