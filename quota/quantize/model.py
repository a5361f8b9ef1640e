"""``quantize_model``: rotate, calibrate and replace the language model's linears by quantized ones,
and route its attention through the KV quantizer."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from quota.models.registry import spec_for
from quota.models.spec import ArchSpec, get_submodule, set_submodule
from quota.quantize.calibration import LayerInputs, capture_first_layer_inputs, run_layer, validate_batches
from quota.quant.config import QuantConfig
from quota.quantize.gptq import HessianAccumulator, gptq_quantize
from quota.quant.hadamard import apply_block_hadamard, hadamard_block_size
from quota.quantize.attention import KVQuantizer, install_kv_quantizer, use_quota_attention
from quota.quantize.linear import QuantLinear
from quota.quant.quantizers import (
    QuantizedWeight,
    fake_quantize_activation,
    quantize_weight_rtn,
    search_weight_clip,
)
from quota.quantize.rotation import rotate_language_model

ACT_CLIP_GRID = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)
_CLIP_SAMPLE_TOKENS = 2048


@dataclass
class QuantReport:
    """What :func:`quantize_model` chose: per-linear activation clipping ratios, rotation, timing."""

    config: dict[str, Any]
    act_clip: dict[str, float] = field(default_factory=dict)
    rotated: bool = False


class _InputStats:
    """Per-linear statistics gathered from calibration inputs (after the online transform)."""

    def __init__(self, in_features: int, device, keep_hessian: bool) -> None:
        self.hessian = HessianAccumulator(in_features, device) if keep_hessian else None
        self.sq_sum = torch.zeros(in_features, dtype=torch.float64, device=device)
        self.count = 0
        self.samples: list[torch.Tensor] = []
        self.sampled = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()  # [n, K]
        if self.hessian is not None:
            self.hessian.add(x)
        self.sq_sum += x.pow(2).sum(0).double().to(self.sq_sum.device)
        self.count += x.shape[0]
        if self.sampled < _CLIP_SAMPLE_TOKENS:
            take = x[: _CLIP_SAMPLE_TOKENS - self.sampled]
            self.samples.append(take.clone())
            self.sampled += take.shape[0]


def _quantize_weight(w: torch.Tensor, stats: _InputStats | None, config: QuantConfig) -> QuantizedWeight | torch.Tensor:
    if not config.quantizes_weights:
        return w
    if config.weight_method == "gptq":
        return gptq_quantize(
            w, stats.hessian.hessian, config.w_bits, config.w_group_size, config.gptq_damp,
            config.gptq_act_order, config.gptq_block_size, config.w_clip_search,
        )
    clip = 1.0
    if config.w_clip_search:
        sq = stats.sq_sum / max(stats.count, 1) if stats is not None and stats.count else None
        clip = search_weight_clip(w, config.w_bits, config.w_group_size, sq)
    return quantize_weight_rtn(w, config.w_bits, config.w_group_size, clip)


def _search_act_clip(module: QuantLinear, weight: torch.Tensor, samples: torch.Tensor) -> float:
    """The clipping ratio in ACT_CLIP_GRID minimizing ``||Q_a(x) W_q^T - x W^T||^2`` on ``samples``
    (``weight``: the full-precision ``[N, K]`` weight in the module's input basis)."""
    w_q = module.dequantized_weight()  # [N, K]
    target = samples @ weight.float().T  # [n, N]
    best, best_err = 1.0, float("inf")
    for ratio in ACT_CLIP_GRID:
        err = (fake_quantize_activation(samples, module.a_bits, ratio) @ w_q.T - target).pow(2).mean().item()
        if err < best_err:
            best, best_err = ratio, err
    return best


def _build_linear(
    linear: nn.Linear, config: QuantConfig, stats: _InputStats | None, hadamard_block: int | None
) -> QuantLinear:
    w = linear.weight.detach().float()  # [N, K]
    if hadamard_block:
        w = apply_block_hadamard(w.double(), hadamard_block).float()  # W H (H symmetric)
    qw = _quantize_weight(w, stats, config)
    bias = linear.bias.detach() if linear.bias is not None else None
    module = QuantLinear.from_quantized(
        qw, bias, config.a_bits, config.a_clip_ratio, hadamard_block, config.impl, dtype=linear.weight.dtype
    ).to(linear.weight.device)
    if config.quantizes_activations and config.a_clip_search and stats is not None and stats.samples:
        samples = torch.cat(stats.samples).to(linear.weight.device)  # [n, K], transformed basis
        module.a_clip_ratio = _search_act_clip(module, w, samples)
    return module


def _linear_targets(spec: ArchSpec, config: QuantConfig, layer: nn.Module) -> dict[str, int | None]:
    """Dotted path -> online Hadamard block (``down_proj`` only) of the linears to quantize in a layer."""
    targets = {}
    down = f"{spec.layer.mlp}.{spec.layer.down_proj}"
    for path in spec.layer.linear_paths:
        block = None
        if path == down and config.rotate and config.online_hadamard:
            block = hadamard_block_size(get_submodule(layer, path).in_features)
        targets[path] = block
    return targets


@torch.no_grad()
def _quantize_layer(
    layer: nn.Module, spec: ArchSpec, config: QuantConfig, inputs: LayerInputs | None, report: QuantReport, index: int
) -> None:
    targets = _linear_targets(spec, config, layer)
    stats: dict[str, _InputStats] = {}
    if inputs is not None:
        handles = []
        need_h = config.quantizes_weights and config.weight_method == "gptq"
        for path, block in targets.items():
            lin = get_submodule(layer, path)
            stats[path] = _InputStats(lin.in_features, "cpu" if not lin.weight.is_cuda else lin.weight.device, need_h)

            def hook(_m, args, _path=path, _block=block):
                x = args[0]
                stats[_path].add(apply_block_hadamard(x, _block) if _block else x)

            handles.append(lin.register_forward_pre_hook(hook))
        try:
            run_layer(layer, inputs)
        finally:
            for h in handles:
                h.remove()
    for path, block in targets.items():
        module = _build_linear(get_submodule(layer, path), config, stats.get(path), block)
        set_submodule(layer, path, module)
        report.act_clip[f"layers.{index}.{path}"] = module.a_clip_ratio


def _quantize_other_linears(root: nn.Module, config: QuantConfig) -> None:
    """RTN-quantize every nn.Linear under ``root`` (a part not kept in full precision)."""
    for name, module in list(root.named_modules()):
        if isinstance(module, nn.Linear) and module.in_features % 2 == 0:
            set_submodule(root, name, _build_linear(module, config.replace(weight_method="rtn"), None, None))


def needs_calibration(config: QuantConfig) -> bool:
    """Whether ``config`` needs calibration data (GPTQ, or the activation clipping search)."""
    return (config.quantizes_weights and config.weight_method == "gptq") or (
        config.quantizes_activations and config.a_clip_search
    )


def quantize_model(
    model: nn.Module,
    config: QuantConfig,
    calibration_batches: Iterable[Any] | None = None,
    inplace: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> nn.Module:
    """Return ``model`` with its language model quantized per ``config``.

    The decoder layers' seven linears become :class:`QuantLinear` (GPTQ or RTN weights, per-token
    activations with a calibrated clipping ratio), attention quantizes K (after RoPE) and V, and with
    ``config.rotate`` the residual stream is rotated first. Layers are processed in order; each layer
    is calibrated on the outputs of the already-quantized layers before it. Parts named in
    ``config.keep_full_precision`` are untouched (embeddings and lm_head are still rotated when the
    rotation is on: it is exact in full precision). Unless ``inplace``, the caller's model is not
    modified: a copy is returned. The choices made are in ``model.quota_report``.
    """
    spec = spec_for(model)
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
    vocab = getattr(spec.text_config_of(model), "vocab_size", None)
    batches = validate_batches(calibration_batches, vocab) if (
        needs_calibration(config) or calibration_batches is not None
    ) else None
    if not inplace:
        model = copy.deepcopy(model)
    text_config = spec.text_config_of(model)
    model.eval()
    report = QuantReport(config=config.to_dict())
    if config.is_identity:
        model.quota_report = report
        return model

    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    if config.rotate:
        rotate_language_model(
            model, spec, seed=config.rotation_seed, mix_blocks=config.rotation_mix_blocks, value_head_hadamard=True
        )
        report.rotated = True
    use_quota_attention(text_config)
    kv = KVQuantizer(config.kv_bits, config.kv_group_size, config.kv_clip_ratio, config.kv_hadamard)

    layers = spec.layers_of(model)
    inputs = capture_first_layer_inputs(model, spec, batches) if batches is not None else None
    for i, layer in enumerate(layers):
        _quantize_layer(layer, spec, config, inputs, report, i)
        install_kv_quantizer(get_submodule(layer, spec.layer.attention), kv, head_dim)
        if inputs is not None:
            inputs.hidden = run_layer(layer, inputs)
        if progress is not None:
            progress(i + 1, len(layers))

    if "lm_head" not in config.keep_full_precision:
        head = spec.lm_head_of(model)
        set_submodule(model, spec.lm_head, _build_linear(head, config.replace(weight_method="rtn"), None, None))
    for role, path in (("vision_tower", spec.vision_tower), ("projector", spec.projector)):
        if path is not None and role not in config.keep_full_precision:
            _quantize_other_linears(get_submodule(model, path), config)
    if "embeddings" not in config.keep_full_precision and config.quantizes_weights:
        emb = spec.embeddings_of(model)
        emb.weight.data = quantize_weight_rtn(emb.weight.float(), config.w_bits).dequantize().to(emb.weight.dtype)
    model.quota_report = report
    return model
