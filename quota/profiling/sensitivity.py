"""Damage of pruning, measured with the deployed (possibly quantized) model through the pruning runtime.

For a batch of calibration questions, the answer tokens are teacher-forced: the prompt is prefilled
with pruning, then each answer token is fed as a decode step, giving log-probabilities of every
answer position. Damage against the same model with all tokens: ``kl`` (sum over answer tokens of
KL(full || pruned), mean over questions) and ``task_loss`` (increase of the answer's cross-entropy). With a
``teacher`` (the full-precision model's all-token answers), also ``kl_teacher``: how much farther from the
teacher's answers the pruned model is than the all-token one, ``KL(teacher || pruned) - KL(teacher || full)``.

Why the teacher: a low-bit model re-rolls its answers on any change of input (0.001 pixel noise moves the
quantized testbed's by 1.3-1.8 nats, the float model's by 4e-9; docs/results/joint_h100). ``kl`` against its own
all-token answers charges every pruned schedule that re-roll, about a nat for one dropped token as for 32;
``kl_teacher`` and ``task_loss`` compare both runs with a fixed target instead, so the re-roll cancels on average.

Per-layer curves: ``from_layer[l, g]`` is the damage of the schedule that keeps all N tokens in layers
``< l`` and ``grid[g]`` tokens from layer ``l`` on (FastV-style pruning at layer ``l``; every such
schedule is non-increasing). Under the additive model ``D(s) = sum_l h_l(k_l)``, the per-layer
contribution is ``h_l(k) = from_layer[l, k] - from_layer[l + 1, k]`` (``from_layer[L] = 0``):
that is what the solver receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from quota.models.registry import spec_for
from quota.profiling.sharding import item_key
from quota.recipe import ScoringSpec
from quota.runtime.generate import PrunedRunner


@dataclass
class CalibrationBatch:
    """``input_ids``/``attention_mask`` ``[B, S]`` (left-padded prompts), ``pixel_values``, the answer
    tokens ``answer_ids`` ``[B, A]`` (right-padded with ``pad``) and ``answer_mask`` ``[B, A]``, and
    the task of each question."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor
    answer_ids: torch.Tensor
    answer_mask: torch.Tensor
    tasks: list[str]


def batch_image_inputs(batch: CalibrationBatch) -> dict[str, torch.Tensor]:
    """The image tensors a batch carries beside ``pixel_values`` (``image_inputs`` of a user-data batch, such as
    Qwen2-VL's ``image_grid_thw``); empty for the testbed's batches."""
    return dict(getattr(batch, "image_inputs", None) or {})


def batch_visual_tokens(batch: CalibrationBatch) -> int | None:
    """The visual tokens of every image of ``batch`` (``n_visual`` of a user-data batch, one value per batch),
    ``None`` when the batch does not say (the testbed's: the model's config does)."""
    counts = set(getattr(batch, "n_visual", None) or [])
    if len(counts) > 1:
        raise ValueError(f"a calibration batch mixes images of {sorted(counts)} visual tokens: batch images of one "
                         f"size together (quota.data.calibration.calibration_batches does)")
    return counts.pop() if counts else None


@torch.no_grad()
def answer_logprobs(runner: PrunedRunner, batch: CalibrationBatch) -> torch.Tensor:
    """float32 log-probabilities ``[B, A, V]`` of each answer position under teacher forcing."""
    steps = batch.answer_ids.shape[1]
    logits, state = runner.prefill(batch.input_ids, batch.attention_mask, batch.pixel_values, reserve=steps,
                                   **batch_image_inputs(batch))
    out = [F.log_softmax(logits.float(), -1)]
    for t in range(steps - 1):
        logits = runner.decode_step(batch.answer_ids[:, t], state)
        out.append(F.log_softmax(logits.float(), -1))
    return torch.stack(out, dim=1)


def damage(reference: torch.Tensor, pruned: torch.Tensor, batch: CalibrationBatch) -> tuple[np.ndarray, np.ndarray]:
    """Per question: (KL(reference || pruned) summed over answer tokens, increase of the answer CE)."""
    mask = batch.answer_mask.float()  # [B, A]
    kl = ((reference.exp() * (reference - pruned)).sum(-1) * mask).sum(-1)  # [B]
    tgt = batch.answer_ids.unsqueeze(-1)
    ce_ref = -(reference.gather(-1, tgt).squeeze(-1) * mask).sum(-1)
    ce = -(pruned.gather(-1, tgt).squeeze(-1) * mask).sum(-1)
    return kl.cpu().numpy(), (ce - ce_ref).cpu().numpy()


@dataclass
class ScheduleDamage:
    kl: float
    task_loss: float
    per_task: dict[str, float]
    kl_teacher: float | None = None  # with a teacher: KL(teacher || pruned) - KL(teacher || all tokens), mean


def as_scoring(scoring: ScoringSpec | Mapping[str, float]) -> ScoringSpec:
    """``scoring`` as a :class:`ScoringSpec`: one is returned as is, a signal -> weight mapping becomes the
    default scoring with those weights at every pruning point."""
    return scoring if isinstance(scoring, ScoringSpec) else ScoringSpec(dict(scoring))


REFERENCE_TOLERANCE = 1e-3
"""Largest difference of any log-probability (nats) between two all-token passes that counts as the same reference."""


class UnstableReferenceError(RuntimeError):
    """The all-token reference did not repeat: two successive passes over the same batches disagreed."""


def stable_reference(compute: Callable[[], list[torch.Tensor]], tolerance: float = REFERENCE_TOLERANCE,
                     ) -> tuple[list[torch.Tensor], dict]:
    """The all-token log-probabilities from ``compute`` once two successive passes agree within ``tolerance``
    (``[B, A, V]`` per batch), and a record ``{"passes", "first_pass_max_abs_diff"}``.

    A damage is only as good as its reference, and the first pass of a process is where kernels compile, autotune
    and allocate their workspaces: on an H100, profiles whose reference came from that first pass were off by
    2-4 nats on 7 of 8 ranks. So the reference is the second pass when it repeats the first; otherwise a third pass
    must repeat the second, and :class:`UnstableReferenceError` is raised if it does not."""
    passes = [compute()]
    first_diff = None
    while True:
        passes.append(compute())
        diff = max(float((a - b).abs().max()) for a, b in zip(passes[-2], passes[-1])) if passes[-1] else 0.0
        first_diff = diff if first_diff is None else first_diff
        if diff <= tolerance:
            return passes[-1], {"passes": len(passes), "first_pass_max_abs_diff": first_diff}
        if len(passes) == 3:
            raise UnstableReferenceError(
                f"the all-token reference does not repeat: passes 1-2 differ by up to {first_diff:.4g} and passes "
                f"2-3 by {diff:.4g} nats (tolerance {tolerance}); the model's forward is not deterministic here")


def reference_digest(reference: Sequence[torch.Tensor], batches: Sequence[CalibrationBatch]) -> float:
    """Sum over every question of the answer tokens' log-probabilities under ``reference`` (minus the total
    cross-entropy): one number that processes measuring the same model on the same batches must share."""
    total = 0.0
    for r, b in zip(reference, batches):
        tgt = b.answer_ids.unsqueeze(-1).to(r.device)
        total += float((r.gather(-1, tgt).squeeze(-1) * b.answer_mask.to(r.device).float()).sum())
    return total


class DamageMeter:
    """Measures the damage of schedules against the all-tokens run of the same model (computed once, checked by
    :func:`stable_reference`; :attr:`reference_check` records the check).

    ``scoring``: how the measured schedules pick their tokens, a :class:`ScoringSpec` (per-stage weights
    included, so that a schedule pruning before layer 0 is scored with the ``pre_llm`` weights) or a signal ->
    weight mapping used at every pruning point; :attr:`score_weights` is its ``weights``.

    ``teacher``: the full-precision model's all-token answer log-probabilities, ``[B, A, V]`` per batch
    (:func:`teacher_answers`); with it every measurement also has ``kl_teacher``."""

    def __init__(self, model, batches: Sequence[CalibrationBatch], scoring: ScoringSpec | Mapping[str, float],
                 impl: str = "auto", reference_tokens: int | None = None,
                 teacher: Sequence[torch.Tensor] | None = None) -> None:
        self.model, self.batches, self.impl = model, list(batches), impl
        self.scoring = as_scoring(scoring)
        self.reference_tokens = reference_tokens  # schedules are resolved per batch from this N (dynamic resolution)
        self._reference: list[torch.Tensor] | None = None
        self.reference_check: dict | None = None
        if teacher is not None and len(teacher) != len(self.batches):
            raise ValueError(f"teacher: one answer tensor per batch expected, got {len(teacher)} for "
                             f"{len(self.batches)} batches")
        self.teacher = None if teacher is None else list(teacher)
        self._teacher_gap: list[np.ndarray] | None = None  # KL(teacher || all tokens) per question, per batch

    @property
    def score_weights(self) -> dict[str, float]:
        """The scoring's ``weights`` (those of the stages without their own)."""
        return dict(self.scoring.weights)

    def _runner(self, schedule: Sequence[int], scoring: ScoringSpec | Mapping[str, float] | None = None,
                ) -> PrunedRunner:
        scoring = self.scoring if scoring is None else as_scoring(scoring)
        return PrunedRunner.from_scoring(self.model, schedule, scoring, impl=self.impl,
                                         reference_tokens=self.reference_tokens)

    def reference(self, n_visual: int, n_layers: int) -> list[torch.Tensor]:
        if self._reference is None:
            runner = self._runner([n_visual] * n_layers)
            self._reference, self.reference_check = stable_reference(
                lambda: [answer_logprobs(runner, b).cpu() for b in self.batches])
        return self._reference

    def measure(self, schedule: Sequence[int], n_visual: int,
                scoring: ScoringSpec | Mapping[str, float] | None = None) -> ScheduleDamage:
        """Damage of ``schedule`` scored by ``scoring`` (default: the meter's)."""
        ref = self.reference(n_visual, len(schedule))
        runner = self._runner(schedule, scoring)
        kls, losses, gaps, tasks = [], [], [], []
        for i, (b, r) in enumerate(zip(self.batches, ref)):
            pruned = answer_logprobs(runner, b)
            kl, loss = damage(r.to(b.input_ids.device), pruned, b)
            kls.append(kl)
            losses.append(loss)
            if self.teacher is not None:
                gaps.append(damage(self.teacher[i].to(pruned.device), pruned, b)[0] - self.teacher_gap()[i])
            tasks += b.tasks
        kl, loss = np.concatenate(kls), np.concatenate(losses)
        per_task = {t: float(kl[[i for i, x in enumerate(tasks) if x == t]].mean()) for t in sorted(set(tasks))}
        kl_teacher = float(np.concatenate(gaps).mean()) if gaps else None
        return ScheduleDamage(float(kl.mean()), float(loss.mean()), per_task, kl_teacher)

    def teacher_gap(self) -> list[np.ndarray]:
        """``KL(teacher || all tokens)`` per question (one array per batch): what quantization alone costs against
        the teacher, the baseline of ``kl_teacher``. Needs a teacher and the reference (computed on first use)."""
        if self.teacher is None:
            raise ValueError("this DamageMeter has no teacher")
        if self._teacher_gap is None:
            if self._reference is None:
                raise ValueError("the all-token reference is computed by the first measure() or reference() call")
            self._teacher_gap = [damage(t.to(r.device), r, b)[0]
                                 for t, r, b in zip(self.teacher, self._reference, self.batches)]
        return self._teacher_gap


def takes_teacher(quant, teacher: bool | None) -> bool:
    """Whether profiling under ``quant`` (a :class:`~quota.quant.config.QuantConfig`) takes the full-precision
    teacher's answers: as ``teacher`` says, or by default whenever ``quant`` quantizes something."""
    return (not quant.is_identity) if teacher is None else bool(teacher)


def teacher_answers(model, batches: Sequence[CalibrationBatch], n_visual: int,
                    impl: str = "auto") -> list[torch.Tensor]:
    """The all-token answer log-probabilities of ``model`` (the full-precision one, before it is quantized),
    ``[B, A, V]`` float32 on the CPU per batch, as :class:`DamageMeter` takes them for ``teacher``: the reference a
    meter on ``model`` computes (``n_visual`` tokens per image, or each batch's own count under dynamic resolution;
    checked to repeat, :func:`stable_reference`)."""
    n_layers = len(spec_for(model).layers_of(model))
    meter = DamageMeter(model, batches, {"attn_last": 1.0}, impl=impl, reference_tokens=n_visual)
    return meter.reference(n_visual, n_layers)


def prune_from_schedule(n_layers: int, n_visual: int, layer: int, keep: int) -> tuple[int, ...]:
    """All N tokens in layers ``< layer``, ``keep`` from ``layer`` on."""
    return tuple([n_visual] * layer + [keep] * (n_layers - layer))


def measure_grid(
    meter: DamageMeter, n_layers: int, n_visual: int, grid: Sequence[int],
    run_items: Callable[[list, Callable], dict | None] | None = None,
) -> dict[tuple[int, int], ScheduleDamage] | None:
    """Damage of every prune-from-layer schedule of the grid (``k = N`` is not measured: it is 0).

    ``run_items(items, compute)`` may distribute the items (e.g. :func:`quota.profiling.sharding.run_sharded`);
    it returns ``{item_key(item): value}``, or ``None`` on ranks other than 0, which then return ``None``."""
    items = [(layer, k) for layer in range(n_layers) for k in grid if k < n_visual]

    def compute(item):
        layer, k = item
        d = meter.measure(prune_from_schedule(n_layers, n_visual, layer, k), n_visual)
        return {"kl": d.kl, "task_loss": d.task_loss, "per_task": d.per_task, "kl_teacher": d.kl_teacher}

    if run_items is None:
        results = {item: compute(item) for item in items}
    else:
        raw = run_items(items, compute)
        if raw is None:
            return None
        results = {item: raw[item_key(item)] for item in items}
    return {k: ScheduleDamage(v["kl"], v["task_loss"], v["per_task"], v.get("kl_teacher")) for k, v in results.items()}


# --- two-step schedules (the measurements of the interaction terms) ----------------------------------------------

def two_step_schedule(n_layers: int, n_visual: int, layer: int, first: int, second: int) -> tuple[int, ...]:
    """All N tokens in layers ``< layer``, ``first`` at ``layer`` and ``second`` from ``layer + 1`` on."""
    return tuple([n_visual] * layer + [first] + [second] * (n_layers - layer - 1))


def pair_items(n_layers: int, grid: Sequence[int], subgrid: Sequence[int]) -> list[tuple[str, int, int, int]]:
    """The two-step schedules measured for the interaction terms, as items ``("pair", layer, a, b)`` (grid
    indices ``a > b`` of ``subgrid``, ``layer`` in ``0 .. L-2``). Pairs with ``grid[a] = N`` are left out: that
    schedule is the grid's prune-from-``layer + 1`` schedule, whose interaction is 0 by construction. Their count
    is ``(L - 1) (m - 1) (m - 2) / 2`` for a subgrid of ``m`` indices."""
    top = len(grid) - 1
    return [("pair", layer, a, b) for layer in range(n_layers - 1) for a in subgrid if a != top
            for b in subgrid if b < a]


def measure_pairs(
    meter: DamageMeter, n_layers: int, n_visual: int, grid: Sequence[int], subgrid: Sequence[int],
    run_items: Callable[[list, Callable], dict | None] | None = None,
) -> dict[tuple[int, int, int], ScheduleDamage] | None:
    """Damage of every two-step schedule of :func:`pair_items`, keyed ``(layer, a, b)``; ``run_items`` shares
    them out as in :func:`measure_grid` (``None`` on ranks other than 0)."""
    items = pair_items(n_layers, grid, subgrid)

    def compute(item):
        _, layer, a, b = item
        d = meter.measure(two_step_schedule(n_layers, n_visual, layer, grid[a], grid[b]), n_visual)
        return {"kl": d.kl, "task_loss": d.task_loss, "per_task": d.per_task, "kl_teacher": d.kl_teacher}

    if run_items is None:
        raw = {item_key(item): compute(item) for item in items}
    else:
        raw = run_items(items, compute)
        if raw is None:
            return None
    return {item[1:]: ScheduleDamage(**raw[item_key(item)]) for item in items}
