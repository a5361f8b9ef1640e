"""Profiling a checkpoint folder on the user's own calibration data (the Python form of
``quota profile --model DIR --data calib.jsonl``).

The folder is loaded offline (:func:`quota.models.checkpoint.load_checkpoint`), quantized per ``quant`` with its
GPTQ and clipping searches calibrated on the records' prompts (through the quantized-model disk cache, keyed by
the checkpoint's hash and :func:`data_version`), and profiled on the same records: the damage of each schedule is
the teacher-forced KL and loss on the answer tokens, against the same quantized model with all tokens
(:mod:`quota.profiling.sensitivity`). Records are batched by image size (one ``N`` per batch); for a
dynamic-resolution model the profile's keep counts refer to the largest image's ``N`` and every other image runs
them as fractions (:func:`quota.schedule.resolve_schedule`). Under ``torchrun`` the grid is shared out over the
ranks as for the testbed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path


from quota.data.calibration import calibration_batches, calibration_inputs
from quota.data.records import Record, read_records
from quota.models.checkpoint import LoadedCheckpoint, load_checkpoint
from quota.profiling.measure import ProfileSettings, profile_model, reference_visual_tokens
from quota.profiling.profile import Profile
from quota.profiling.sensitivity import takes_teacher, teacher_answers
from quota.profiling.sharding import init_from_env, rank_placement
from quota.quant.config import QuantConfig
from quota.quantize.disk_cache import quantize_cached


def data_version(path: str | Path, records: Sequence[Record]) -> str:
    """``jsonl:<16 hex>``: sha256 of the data file's bytes and of every image file the records use (in record
    order), so that changing a question, an answer or an image changes it, and moving the folder does not."""
    h = hashlib.sha256(Path(path).read_bytes())
    for r in records:
        h.update(r.image.read_bytes())
    return f"jsonl:{h.hexdigest()[:16]}"


def load_records(path: str | Path, limit: int | None = None) -> list[Record]:
    """The first ``limit`` records (default: all) of the JSONL file, every one checked first
    (:func:`~quota.data.records.read_records`)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"--limit must be a number of records >= 1, got {limit!r}")
    records = read_records(path)
    return records[:limit] if limit else records


def quantize_on_records(loaded: LoadedCheckpoint, records: Sequence[Record], quant: QuantConfig, version: str,
                        batch_size: int = 16, inplace: bool = False):
    """``loaded.model`` quantized per ``quant``, GPTQ and the clipping searches calibrated on the prompts of
    ``records`` (named ``version``, :func:`data_version`), through the quantized-model disk cache: a second call
    with the same checkpoint, data and config (profiling, then saving) loads the first one's result."""
    param = next(loaded.model.parameters())
    identity = {"model_hash": loaded.model_hash, "data_version": version, "calibration": len(records)}
    return quantize_cached(
        loaded.model, quant,
        lambda: calibration_inputs(loaded.processor, records, batch_size, param.device, param.dtype),
        identity, inplace=inplace,
    )


def profile_on_records(
    model, processor, records: Sequence[Record], quant: QuantConfig, *, model_id: str, model_hash: str, version: str,
    settings: ProfileSettings | None = None, output: str | Path | None = None, resume: bool | str = False,
    extra: dict | None = None, teacher=None,
) -> Profile | None:
    """Profile ``model`` (already quantized per ``quant``) on ``records`` with its ``processor``: the records are
    batched by image size on the model's device and dtype, and the damage is teacher-forced on their answers.
    ``version`` names the data (:func:`data_version`); ``teacher``: the full-precision model's answers on the same
    batches (:func:`record_batches`, :func:`~quota.profiling.sensitivity.teacher_answers`); the rest as
    :func:`~quota.profiling.measure.profile_model`."""
    settings = settings or ProfileSettings()
    batches = record_batches(model, processor, records, settings.batch_size)
    extra = {"calibration_questions": len(records), **(extra or {})}
    return profile_model(model, batches, quant, model_id=model_id, model_hash=model_hash, data_version=version,
                         settings=settings, output=output, resume=resume, extra_settings=extra, teacher=teacher)


def record_batches(model, processor, records: Sequence[Record], batch_size: int) -> list:
    """The calibration batches of ``records`` on ``model``'s device and dtype, batched by image size."""
    param = next(model.parameters())
    return calibration_batches(processor, records, batch_size, param.device, param.dtype)


def profile_checkpoint(
    folder: str | Path, data: str | Path, quant: QuantConfig | None = None, settings: ProfileSettings | None = None,
    output: str | Path | None = None, resume: bool | str = False, device: str | None = None,
    limit: int | None = None, teacher: bool | None = None,
) -> Profile | None:
    """Load the checkpoint in ``folder``, quantize it per ``quant`` (default: W4A4 GPTQ + rotation + KV4)
    calibrated on the records of ``data`` (the first ``limit``), and profile it on the same records. ``teacher``
    (default: whenever ``quant`` quantizes something): first take the full-precision checkpoint's answers, so that
    the profile also has the ``kl_teacher`` curve.

    Returns the :class:`~quota.profiling.profile.Profile` on rank 0 (``None`` on other ranks), written to
    ``output`` when given; ``resume`` as in :func:`~quota.profiling.measure.profile_model`. Bad records, an
    unsupported checkpoint or a missing processor raise before any weight is quantized."""
    init_from_env()
    settings = settings or ProfileSettings()
    quant = quant or QuantConfig(impl="auto")
    records = load_records(data, limit)
    version = data_version(data, records)
    device, dtype = rank_placement(device)
    loaded = load_checkpoint(folder, device, dtype)
    answers = None
    if takes_teacher(quant, teacher):
        batches = record_batches(loaded.model, loaded.processor, records, settings.batch_size)
        answers = teacher_answers(loaded.model, batches, reference_visual_tokens(loaded.model, batches), settings.impl)
    model = quantize_on_records(loaded, records, quant, version, settings.batch_size, inplace=True)
    return profile_on_records(model, loaded.processor, records, quant, model_id=loaded.model_id,
                              model_hash=loaded.model_hash, version=version, settings=settings, output=output,
                              resume=resume, extra={"model_class": loaded.model_class,
                                                    "dynamic_resolution": loaded.dynamic_resolution},
                              teacher=answers)
