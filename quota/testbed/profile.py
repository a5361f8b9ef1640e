"""Profiling the testbed (the Python form of ``quota profile``): load it, quantize it on the calibration split
(the only data profiling may see), measure its profile, and check the profile's additive damage model on
held-out test questions."""

from __future__ import annotations

from pathlib import Path


from quota.device import placement
from quota.models.registry import check_model_name
from quota.profiling.additivity import check_additivity
from quota.profiling.measure import ProfileSettings, profile_model, progress_reporter, settings_record
from quota.profiling.profile import Profile
from quota.profiling.sensitivity import DamageMeter, takes_teacher
from quota.profiling.sharding import check_partials, init_from_env, rank_placement
from quota.quant.config import QuantConfig
from quota.testbed import model as testbed
from quota.testbed.batches import make_batches
from quota.testbed.quantized import quantize_after_teacher
from quota.testbed.splits import DATA_VERSION, calibration_split, test_split


def profile_testbed(
    quant: QuantConfig | None = None, settings: ProfileSettings | None = None, output: str | Path | None = None,
    resume: bool | str = False, device: str | None = None, limit: int | None = None, teacher: bool | None = None,
) -> Profile | None:
    """Load the testbed, quantize it on the calibration split (the only data profiling may see) and profile it.

    ``teacher`` (default: whenever ``quant`` quantizes something): first take the full-precision testbed's
    answers on the same batches, so that the profile also has the ``kl_teacher`` curve (a KL without the low-bit
    model's re-roll floor; :mod:`quota.profiling.sensitivity`).

    ``resume`` (with ``output``): ``True``/``"strict"`` continues from partial files of the very same settings
    (model hash, quantization, questions, grid, score candidates, batch size, versions, device) and refuses
    any other with :class:`quota.atomic.ResumeMismatchError` before loading the model; ``"recompute"``
    discards the partial results of other settings."""

    init_from_env()
    settings = settings or ProfileSettings()
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"--limit must be a number of calibration questions >= 1, got {limit!r}")
    quant = quant or QuantConfig(impl="auto")
    teacher = takes_teacher(quant, teacher)
    device, dtype = rank_placement(device)
    questions = calibration_split()[:limit] if limit else calibration_split()
    identity = dict(model_id=testbed.MODEL_ID, model_hash=testbed.model_hash(), data_version=DATA_VERSION)
    extra = {"calibration_questions": len(questions)}  # the quantization's calibration set
    if teacher:
        extra["teacher"] = True
    if output is not None:
        early = settings_record(**identity, quant=quant, questions=len(questions), n_visual=testbed.N_VISUAL_TOKENS,
                                settings=settings, device=device, extra=extra)
        check_partials(Path(output).with_suffix(""), early, resume)
    tb = testbed.load(device, dtype)
    batches = make_batches(tb.tokenizer, questions, settings.batch_size, device, dtype)
    model, answers = quantize_after_teacher(tb.model, tb.tokenizer, quant, batches, testbed.N_VISUAL_TOKENS, teacher,
                                            calibration_limit=limit, impl=settings.impl)
    return profile_model(model, batches, quant, **identity, settings=settings, output=output, resume=resume,
                         extra_settings=extra, teacher=answers)


def validate_testbed_profile(profile_path: str | Path, count: int = 30, questions_per_task: int = 52,
                             device: str | None = None, seed: int = 0) -> dict:
    """Spearman check of the additive damage model of a testbed profile, on held-out test questions.

    The testbed is quantized as the profile says (calibrated on the calibration split), ``count`` random
    feasible schedules are measured on ``questions_per_task`` test questions per task (with the full-precision
    teacher's answers too when the profile has a ``kl_teacher`` curve), and the report is stored in the profile's
    ``extra["additivity"]`` (the file is rewritten atomically)."""

    profile = Profile.load(profile_path)
    device, dtype = placement(device)
    tb = testbed.load(device, dtype)
    quant = QuantConfig.from_dict(profile.quant)
    questions = test_split(limit=questions_per_task)
    batches = make_batches(tb.tokenizer, questions, 64, device, dtype)
    model, teacher = quantize_after_teacher(tb.model, tb.tokenizer, quant, batches, profile.n_visual_tokens,
                                            "kl_teacher" in profile.damage)
    meter = DamageMeter(model, batches, profile.scoring, teacher=teacher)
    result = check_additivity(profile, meter, count, seed, on_item=progress_reporter("additivity schedules"))
    report = result.to_dict()
    report["questions"] = len(questions)
    data = profile.to_dict()
    data["extra"] = {**data.get("extra", {}), "additivity": report}
    Profile.from_dict(data).save(profile_path)
    return report


def profile(
    model: str = "testbed", output: str | Path | None = None, quant: QuantConfig | None = None, grid_steps: int = 32,
    batch_size: int = 64, resume: bool | str = False, device: str | None = None, limit: int | None = None,
    latency: bool = True,
) -> Profile | None:
    """The Python form of ``quota profile``: profile ``model`` (the testbed) under ``quant`` (default W4A4 GPTQ
    + rotation + KV4 on the deployed kernels) and write the profile to ``output`` atomically. ``grid_steps``:
    the candidate keep counts are the multiples of N / grid_steps; ``resume``: see :func:`profile_testbed`."""
    check_model_name(model, "profile")
    if not isinstance(grid_steps, int) or grid_steps < 1:
        raise ValueError(f"grid_steps must be a positive integer, got {grid_steps!r}")
    settings = ProfileSettings(grid_steps=grid_steps, batch_size=batch_size, latency=latency)
    return profile_testbed(quant, settings, output, resume, device, limit)
