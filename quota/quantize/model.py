"""``quantize_model``: rotate, calibrate and replace the language model's linears by quantized ones,
and route its attention through the KV quantizer.

:class:`ProgressBar` is the progress display of long CPU work (this module's GPTQ and clipping searches, and
the evaluation harness's questions): a rich bar with the time left on a terminal, plain lines elsewhere.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from quota.models.registry import spec_for
from quota.models.spec import ArchSpec, get_submodule, set_submodule
from quota.quantize.calibration import LayerInputs, capture_first_layer_inputs, run_layer, validate_batches
from quota.quant.config import QuantConfig
from quota.quantize.gptq import HessianAccumulator, gptq_quantize, one_cpu_thread
from quota.quant.hadamard import apply_block_hadamard, hadamard_block_size
from quota.quantize.attention import KVQuantizer, install_kv_quantizer, use_quota_attention
from quota.quantize.linear import QuantLinear
from quota.quantize.precision import build_linear, layer_config
from quota.quant.quantizers import (
    QuantizedWeight,
    fake_quantize_activation,
    quantize_weight_rtn,
    search_weight_clip,
)
from quota.quantize.rotation import rotate_language_model

ACT_CLIP_GRID = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)
_CLIP_SAMPLE_TOKENS = 2048
PLAIN_PROGRESS_EVERY_S = 30.0  # plain progress lines (not a terminal) come at most this often


def wants_progress(progress: bool | None, stream=None) -> bool:
    """``progress`` when it is a bool, else (``None``) whether ``stream`` (default stderr) is a terminal: long
    work shows progress in a terminal and stays quiet in tests, pipes and logs unless asked."""
    if progress is not None:
        return bool(progress)
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


class ProgressBar:
    """Progress of ``total`` steps of ``label`` on stderr, a context manager; :meth:`advance` after each step.

    On a terminal: a rich bar with the elapsed time and an estimate of the time left. Elsewhere (a pipe, a log):
    one plain line at most every :data:`PLAIN_PROGRESS_EVERY_S` seconds and one at the end, each with the
    estimate. ``title``: one line printed first (what the steps are), so the bar's own text stays short enough
    for 80 columns. ``show=False`` shows nothing; ``console``: a rich ``Console`` to draw on (default: stderr's).
    """

    def __init__(self, total: int, label: str, show: bool = True, console=None, title: str = "") -> None:
        self.total, self.label, self.show, self.title = int(total), label, bool(show), title
        self.done, self.detail = 0, ""
        self._console, self._rich, self._task = console, None, None
        self._start = self._last_line = 0.0

    def __enter__(self) -> "ProgressBar":
        self._start = self._last_line = time.monotonic()
        if not self.show:
            return self
        from rich.console import Console

        self._console = self._console or Console(stderr=True)
        if self.title:
            self._console.print(self.title, highlight=False, soft_wrap=True)
        if self._console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            from rich.progress import TimeRemainingColumn

            self._rich = Progress(
                TextColumn("{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("left"), TimeRemainingColumn(), console=self._console, transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(self.label, total=self.total)
        return self

    def advance(self, detail: str = "") -> None:
        """One more step done; ``detail`` (e.g. the layer just finished) is shown beside the label."""
        self.done += 1
        self.detail = detail
        if self._rich is not None:
            self._rich.update(self._task, advance=1, description=f"{self.label} {detail}".rstrip())
        elif self.show:
            now = time.monotonic()
            if self.done == self.total or now - self._last_line >= PLAIN_PROGRESS_EVERY_S:
                self._last_line = now
                self._console.print(self.line(now - self._start), highlight=False, soft_wrap=True)

    def line(self, elapsed: float) -> str:
        """``label detail: done/total, 12s elapsed, about 1m05s left``."""
        left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        return (f"{self.label} {self.detail}".rstrip() + f": {self.done}/{self.total}, {_duration(elapsed)} elapsed, "
                + (f"about {_duration(left)} left" if left == left else "time left unknown"))

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


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
        with one_cpu_thread(w.device):  # many small elementwise ops, like GPTQ's sweep
            clip = search_weight_clip(w, config.w_bits, config.w_group_size, sq)
    return quantize_weight_rtn(w, config.w_bits, config.w_group_size, clip)


def _quantize_weights(ws: list[torch.Tensor], stats: _InputStats | None, config: QuantConfig) -> list:
    """:func:`_quantize_weight` of each weight ``[N_i, K]`` of linears that saw the same inputs. GPTQ quantizes
    every row against the one Hessian on its own (scales, clipping and error feedback are per row), so a group
    runs as one sweep over the stacked rows ``[sum N_i, K]``: one Hessian inverse and one column loop."""
    if not (config.quantizes_weights and config.weight_method == "gptq" and len(ws) > 1):
        return [_quantize_weight(w, stats, config) for w in ws]
    fused = _quantize_weight(torch.cat(ws), stats, config)
    sizes = [w.shape[0] for w in ws]
    return [QuantizedWeight(c.contiguous(), sc.contiguous(), fused.bits, fused.group_size)
            for c, sc in zip(fused.codes.split(sizes), fused.scale.split(sizes))]


def _search_act_clips(modules: list[QuantLinear], weights: list[torch.Tensor], samples: torch.Tensor) -> list[float]:
    """Per module, the clipping ratio in ACT_CLIP_GRID minimizing ``||Q_a(x) W_q^T - x W^T||^2`` on ``samples``
    ``[n, K]`` (``weights``: the full-precision ``[N, K]`` weights in the modules' input basis). The modules share
    their input, so each ratio's quantized samples are computed once."""
    w_qs = [m.dequantized_weight() for m in modules]  # each [N, K]
    targets = [samples @ w.float().T for w in weights]  # each [n, N]
    best, best_err = [1.0] * len(modules), [float("inf")] * len(modules)
    fake_quantize = getattr(modules[0], "fake_quantize_input", None)  # FP8 activations (W4A8, FP8 linears)
    for ratio in ACT_CLIP_GRID:
        if fake_quantize is not None:
            x_q = fake_quantize(samples, ratio)  # [n, K]
        else:
            x_q = fake_quantize_activation(samples, modules[0].a_bits, ratio)  # [n, K]
        for j, (w_q, target) in enumerate(zip(w_qs, targets)):
            err = (x_q @ w_q.T - target).pow(2).mean().item()
            if err < best_err[j]:
                best[j], best_err[j] = ratio, err
    return best


def _input_basis_weight(linear: nn.Linear, hadamard_block: int | None) -> torch.Tensor:
    """float32 ``[N, K]`` weight of ``linear`` in its input basis (``W H`` after an online block-Hadamard)."""
    w = linear.weight.detach().float()  # [N, K]
    if hadamard_block:
        w = apply_block_hadamard(w.double(), hadamard_block).float()  # W H (H symmetric)
    return w


def _build_group(
    linears: list[nn.Linear], config: QuantConfig, stats: _InputStats | None, hadamard_block: int | None,
    precision: str | None = None,
) -> list[QuantLinear]:
    """:class:`QuantLinear` replacements of ``linears``, which all saw the inputs summarized by ``stats`` (one
    linear, or e.g. q/k/v of one layer): weights by GPTQ or RTN, then the activation clipping search.
    ``precision`` (a name of :data:`quota.quant.precision.PRECISIONS`, not ``bf16``) builds that option's module
    (``config`` then being :func:`~quota.quantize.precision.layer_config`'s); ``None``: a QuantLinear of
    ``config``'s bits."""
    ws = [_input_basis_weight(lin, hadamard_block) for lin in linears]
    fp8 = precision == "fp8"
    qws = ws if fp8 else _quantize_weights(ws, stats, config)  # FP8 weights are rounded by the module
    modules = []
    for linear, qw in zip(linears, qws):
        bias = linear.bias.detach() if linear.bias is not None else None
        if precision is None:
            module = QuantLinear.from_quantized(
                qw, bias, config.a_bits, config.a_clip_ratio, hadamard_block, config.impl, dtype=linear.weight.dtype)
        else:
            module = build_linear(precision, qw, bias, config.a_clip_ratio, hadamard_block, config.impl,
                                  linear.weight.dtype)
        modules.append(module.to(linear.weight.device))
    if config.quantizes_activations and config.a_clip_search and stats is not None and stats.samples:
        samples = torch.cat(stats.samples).to(linears[0].weight.device)  # [n, K], transformed basis
        for module, ratio in zip(modules, _search_act_clips(modules, ws, samples)):
            module.a_clip_ratio = ratio
    return modules


def _build_linear(
    linear: nn.Linear, config: QuantConfig, stats: _InputStats | None, hadamard_block: int | None
) -> QuantLinear:
    return _build_group([linear], config, stats, hadamard_block)[0]


def _same_inputs(a: _InputStats, b: _InputStats) -> bool:
    """Whether two linears saw the very same calibration inputs (q/k/v of a layer, gate/up): equal counts,
    sums of squares, Hessians and samples."""
    if a.count != b.count or a.sq_sum.shape != b.sq_sum.shape or not torch.equal(a.sq_sum, b.sq_sum):
        return False
    if (a.hessian is None) != (b.hessian is None):
        return False
    if a.hessian is not None and not torch.equal(a.hessian.hessian, b.hessian.hessian):
        return False
    return len(a.samples) == len(b.samples) and all(torch.equal(x, y) for x, y in zip(a.samples, b.samples))


def _input_groups(targets: dict[str, int | None], stats: dict[str, _InputStats]) -> list[list[str]]:
    """The target paths in groups of linears with the same online transform and the same calibration inputs
    (in first-seen order); every path is its own group without calibration statistics."""
    groups: list[list[str]] = []
    for path, block in targets.items():
        for group in groups:
            head = group[0]
            if path in stats and head in stats and targets[head] == block and _same_inputs(stats[head], stats[path]):
                group.append(path)
                break
        else:
            groups.append([path])
    return groups


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
    layer: nn.Module, spec: ArchSpec, config: QuantConfig, inputs: LayerInputs | None, report: QuantReport, index: int,
    on_linear: Callable[[str], None] | None = None, precision: str | None = None,
) -> None:
    """Quantize the linears of decoder layer ``index`` in place, calibrated on ``inputs`` (GPTQ and the clipping
    searches; linears that read the same input, such as q/k/v, are quantized together); ``on_linear(path)``
    after each linear. ``precision``: the layer's option of a per-layer config (``config`` then being its
    :func:`~quota.quantize.precision.layer_config`); ``bf16`` leaves the layer's ``nn.Linear`` modules as they are."""
    targets = _linear_targets(spec, config, layer)
    if precision == "bf16":
        for path in targets:
            if on_linear is not None:
                on_linear(path)
        return
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
    for group in _input_groups(targets, stats):
        linears = [get_submodule(layer, path) for path in group]
        built = _build_group(linears, config, stats.get(group[0]), targets[group[0]], precision)
        for path, module in zip(group, built):
            set_submodule(layer, path, module)
            report.act_clip[f"layers.{index}.{path}"] = module.a_clip_ratio
            if on_linear is not None:
                on_linear(path)


def _quantize_other_linears(root: nn.Module, config: QuantConfig) -> None:
    """RTN-quantize every nn.Linear under ``root`` (a part not kept in full precision)."""
    for name, module in list(root.named_modules()):
        if isinstance(module, nn.Linear) and module.in_features % 2 == 0:
            set_submodule(root, name, _build_linear(module, config.replace(weight_method="rtn"), None, None))


def _work_of(config: QuantConfig, calibrated: bool) -> str:
    """What quantizing one linear involves under ``config``, for the progress label (``GPTQ + clip search``)."""
    parts = []
    if config.quantizes_weights:
        parts.append("GPTQ" if config.weight_method == "gptq" else "RTN")
        if config.w_clip_search:
            parts.append("weight clip search")
    if calibrated and config.quantizes_activations and config.a_clip_search:
        parts.append("act clip search")
    return " + ".join(parts) or "activations only"


def needs_calibration(config: QuantConfig) -> bool:
    """Whether ``config`` needs calibration data (GPTQ, or the activation clipping search); a per-layer config
    when one of its layers' options does."""
    if config.layer_precision is not None:
        return any(needs_calibration(layer_config(config, p)) for p in set(config.layer_precision) if p != "bf16")
    return (config.quantizes_weights and config.weight_method == "gptq") or (
        config.quantizes_activations and config.a_clip_search
    )


def quantize_model(
    model: nn.Module,
    config: QuantConfig,
    calibration_batches: Iterable[Any] | None = None,
    inplace: bool = False,
    progress: bool | Callable[[int, int], None] | None = None,
) -> nn.Module:
    """Return ``model`` with its language model quantized per ``config``.

    The decoder layers' seven linears become :class:`QuantLinear` (GPTQ or RTN weights, per-token
    activations with a calibrated clipping ratio), attention quantizes K (after RoPE) and V, and with
    ``config.rotate`` the residual stream is rotated first. Layers are processed in order; each layer
    is calibrated on the outputs of the already-quantized layers before it. Parts named in
    ``config.keep_full_precision`` are untouched (embeddings and lm_head are still rotated when the
    rotation is on: it is exact in full precision). Unless ``inplace``, the caller's model is not
    modified: a copy is returned. The choices made are in ``model.quota_report``.

    With ``config.layer_precision``, decoder layer ``i``'s linears are built for its option (``w4a4``:
    QuantLinear; ``w4a8``/``w4a8_int8``: W4A8Linear; ``fp8``: Fp8Linear; ``bf16``: the ``nn.Linear`` kept), each
    quantized with :func:`~quota.quantize.precision.layer_config` (GPTQ or RTN for 4-bit weights, the clipping
    search for quantized activations); the rotation stays global. ``config.layer_kv_bits`` gives each layer's KV
    quantizer its bits. A per-layer list whose length is not the model's layer count raises QuantConfigError.

    ``progress``: a callable is called as ``progress(layers done, layers)`` after each layer; ``True`` shows a
    :class:`ProgressBar` over the linears (GPTQ and the clipping searches, with the time left), ``None`` shows it
    only when stderr is a terminal, ``False`` never.
    """
    spec = spec_for(model)
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
    config.check_layers(len(spec.layers_of(model)))
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

    layers = spec.layers_of(model)
    inputs = capture_first_layer_inputs(model, spec, batches) if batches is not None else None
    on_layer = progress if callable(progress) else None
    show = False if on_layer is not None else wants_progress(progress)
    steps = len(layers) * len(spec.layer.linear_paths)
    work = _work_of(config, inputs is not None) if config.layer_precision is None else "per-layer precision"
    title = f"quantize {len(layers)} layers, {steps} linears: {work}"
    with ProgressBar(steps, "quantize", show, title=title) as bar:
        for i, layer in enumerate(layers):
            name = config.precision_of_layer(i)
            lconfig = config if name is None else layer_config(config, name)
            _quantize_layer(layer, spec, lconfig, inputs, report, i,
                            on_linear=lambda path, i=i: bar.advance(f"layer {i + 1}/{len(layers)} {path.rsplit('.', 1)[-1]}"),
                            precision=name)
            kv = KVQuantizer(config.kv_bits_of_layer(i), config.kv_group_size, config.kv_clip_ratio, config.kv_hadamard)
            install_kv_quantizer(get_submodule(layer, spec.layer.attention), kv, head_dim)
            if inputs is not None:
                inputs.hidden = run_layer(layer, inputs)
            if on_layer is not None:
                on_layer(i + 1, len(layers))

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
