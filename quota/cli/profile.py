"""``quota profile``: sensitivity and cost curves of a model under its deployed quantization: the testbed on its
calibration split, or a checkpoint folder (``--model DIR``) on the user's records (``--data calib.jsonl``).

Runs on one process, or sharded over ranks with ``torchrun --nproc_per_node=G -m quota.cli.main profile``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure per-layer pruning damage and cost curves (writes a profile JSON)")
    p.add_argument("--model", default="testbed",
                   help="model to profile: 'testbed' (the built-in VLM, default) or a local checkpoint folder of a "
                        "supported class (LLaVA-1.5, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL, Idefics3, SmolVLM), read offline")
    p.add_argument("--data", default=None, metavar="FILE",
                   help="calibration records (JSONL: image, question, answer, optional choices and task) for a "
                        "checkpoint folder; the damage is the teacher-forced KL and loss on the answer tokens "
                        "(the testbed uses its own calibration split)")
    p.add_argument("-o", "--output", default="profile.json",
                   help="profile JSON to write (atomically); partial files <stem>.rank<r>of<w>.partial.json sit "
                        "beside it while it runs (default: profile.json)")
    p.add_argument("--grid-steps", type=int, default=32, metavar="STEPS",
                   help="number of keep-count intervals: the candidate keep counts are the multiples of N/STEPS "
                        "visual tokens (rounded), from 0 to N (N = 576 for the testbed: 32 gives 0, 18, 36, ..., 576; "
                        "default 32)")
    p.add_argument("--interactions", type=int, default=None, metavar="S",
                   help="also measure KL interaction terms between adjacent pruning points on a subgrid of about S+1 "
                        "keep counts (0 and N included): (layers - 1) * m(m-1)/2 more schedules for the m subgrid "
                        "counts below N; quota solve then uses them with --damage kl (default: none)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="calibration questions per forward pass; lower it when memory is short; part of the "
                        "settings a resume must match (default 64)")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first LIMIT calibration questions (or --data records), for quantizing and "
                        "for measuring (default: all; the testbed has 256)")
    p.add_argument("--quant", default=None, help="QuantConfig JSON file (default: W4A4 GPTQ + rotation + KV4)")
    p.add_argument("--device", default=None,
                   help="torch device to run on, e.g. cuda, cuda:1 or cpu (default: cuda when available, else cpu; "
                        "under torchrun each rank takes its own GPU)")
    p.add_argument("--resume", nargs="?", const="strict", default=None, choices=("strict", "recompute"),
                   help="continue an interrupted run from its partial files; plain --resume reuses only results "
                        "measured with exactly these settings and refuses otherwise, --resume=recompute discards "
                        "those of other settings and measures them again")
    p.add_argument("--no-latency", action="store_true", help="skip the latency curve")
    p.add_argument("--selections", default=None, metavar="S1,S2,...",
                   help="the selection rules and merging the profile chooses among (default: all of topk, "
                        "topk+merge8, divprune, cdpruner, divprune+recycle); e.g. the first four to profile like a "
                        "profile written before recycling")
    p.add_argument("--no-teacher", action="store_true",
                   help="skip the full-precision answers behind the kl_teacher curve (taken by default for the "
                        "testbed and a checkpoint folder when the config quantizes something)")
    p.add_argument("--precisions", default=None, metavar="P1,P2,...",
                   help="also profile per-layer precision (testbed, one process): the damage of each layer alone at "
                        "each option against bf16, the token curves under the lowest option and bf16, each option's "
                        "prefill and decode latency on this device; writes a precision profile for quota solve "
                        "(e.g. w4a4,w4a8,fp8,bf16)")
    p.add_argument("--precision-additivity", type=int, default=8, metavar="N",
                   help="with --precisions: random mixed configurations measured to check the precision table's "
                        "additivity (Spearman; default 8, 0: none)")
    p.add_argument("--validate", type=int, default=0, metavar="N",
                   help="then check the additive damage model on N random schedules (Spearman, held-out questions)")
    p.add_argument("--validate-only", action="store_true", help="only run --validate on the existing --output profile")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from quota.models.registry import check_model_name
    from quota.profiling.measure import SELECTION_CANDIDATES, ProfileSettings, selection_candidates
    from quota.quant.config import QuantConfig
    from quota.testbed.profile import profile_testbed

    model = check_model_name(args.model, "profile", folders=True)
    folder = model not in ("testbed",)
    if folder and args.data is None:
        raise ValueError(f"--model {model} is a checkpoint folder: give its calibration records with --data FILE")
    if not folder and args.data is not None:
        raise ValueError("--data is for a checkpoint folder (--model DIR); the testbed profiles on its own "
                         "calibration split")
    if folder and (args.validate or args.validate_only):
        raise ValueError("--validate runs on the testbed's held-out test split; it is not available for --model DIR")
    if folder and args.quant is not None and Path(model, "quota_checkpoint.json").is_file():
        raise ValueError(f"--quant: {model} is already quantized (quota quantize); leave --quant out")
    if args.validate_only:
        return _validate(args)
    if args.grid_steps < 1:
        raise ValueError(f"--grid-steps must be a positive integer, got {args.grid_steps}")
    if args.interactions is not None and args.interactions < 1:
        raise ValueError(f"--interactions must be a positive integer (subgrid steps), got {args.interactions}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be a number of calibration questions >= 1, got {args.limit}")
    quant = QuantConfig.from_dict(json.loads(open(args.quant).read())) if args.quant else QuantConfig(impl="auto")
    selections = (selection_candidates([n.strip() for n in args.selections.split(",")]) if args.selections
                  else list(SELECTION_CANDIDATES))
    settings = ProfileSettings(grid_steps=args.grid_steps, batch_size=args.batch_size, latency=not args.no_latency,
                               interaction_steps=args.interactions, selection_candidates=selections)
    if args.precisions is not None:
        return _profile_precisions(args, folder, quant, settings)
    if folder and Path(model, "quota_checkpoint.json").is_file():
        prof = _profile_saved(model, args, settings)
    elif folder:
        from quota.data.profile import profile_checkpoint

        prof = profile_checkpoint(model, args.data, quant, settings, args.output, args.resume or False, args.device,
                                  args.limit, teacher=False if args.no_teacher else None)
    else:
        prof = profile_testbed(quant, settings, args.output, args.resume or False, args.device, args.limit,
                               teacher=False if args.no_teacher else None)
    if prof is not None:
        print(f"profile of {prof.model_id} on {prof.device}: {prof.n_layers} layers x {len(prof.grid)} keep counts, "
              f"score weights {prof.score_weights}"
              + (f" (before layer 0: {prof.pre_llm_weights})" if prof.pre_llm_weights else "")
              + f", selection {prof.selection}, merging {prof.merge} ({prof.merge_rule}), {prof.timing['total_s']}s"
              + f" -> {args.output}")
        if args.validate:
            return _validate(args)
    return 0


def _profile_precisions(args: argparse.Namespace, folder: bool, quant, settings) -> int:
    """``quota profile --precisions``: the testbed's precision profile (:mod:`quota.testbed.precision_profile`)."""
    from quota.testbed.precision_profile import profile_testbed_precisions

    if folder:
        raise ValueError("--precisions profiles the testbed; for a checkpoint folder call "
                         "quota.profiling.precision_run.profile_precisions with one quantized model per option")
    for flag, on in (("--resume", args.resume), ("--interactions", args.interactions is not None),
                     ("--validate", args.validate)):
        if on:
            raise ValueError(f"{flag} is not available with --precisions")
    if args.precision_additivity < 0:
        raise ValueError(f"--precision-additivity must be >= 0, got {args.precision_additivity}")
    prof = profile_testbed_precisions(args.precisions, quant, settings, args.output, args.device, args.limit,
                                      additivity=args.precision_additivity)
    rho = prof.additivity.get("spearman")
    print(f"precision profile of {prof.profile.model_id}: {prof.n_layers} layers x {len(prof.precisions)} options "
          f"({', '.join(prof.precisions)}) x {len(prof.grid)} keep counts, latency {prof.latency['method']} on "
          f"{prof.device}; additivity Spearman {'n/a' if rho is None else f'{rho:.3f}'}; {prof.timing['total_s']}s "
          f"-> {args.output}")
    return 0


def _profile_saved(folder: str, args: argparse.Namespace, settings):
    """Profile a checkpoint saved by ``quota quantize`` as it is (no calibration again; ``--quant`` must be left
    out), under the source model's id and hash so that its recipes fit the source checkpoint too."""
    from quota.data.profile import data_version, load_records, profile_on_records
    from quota.profiling.sharding import init_from_env, rank_placement
    from quota.saved import load

    init_from_env()
    records = load_records(args.data, args.limit)
    saved = load(folder, rank_placement(args.device)[0])
    source = saved.manifest["source"]
    if source.get("kind") == "testbed":
        raise ValueError(f"{folder} holds the quantized testbed: profile the testbed with `quota profile` (its "
                         f"calibration split), not with --data records")
    return profile_on_records(saved.module, saved.processor, records, saved.quant_config, model_id=source["model_id"],
                              model_hash=source["model_hash"], version=data_version(args.data, records),
                              settings=settings, output=args.output, resume=args.resume or False,
                              extra={"model_class": source["model_class"], "saved_checkpoint": str(Path(folder).name)})


def _validate(args: argparse.Namespace) -> int:
    from quota.testbed.profile import validate_testbed_profile

    if args.validate < 3:
        raise ValueError(f"--validate needs at least 3 schedules for a rank correlation, got {args.validate}")
    report = validate_testbed_profile(args.output, args.validate, device=args.device)
    print(f"additive damage model: Spearman {report['spearman']:.3f} (p={report['p_value']:.2g}) over "
          f"{len(report['schedules'])} random schedules, {report['questions']} held-out questions")
    if report.get("spearman_with_interactions") is not None:
        print(f"with the interaction terms, on the same schedules: Spearman {report['spearman_with_interactions']:.3f}")
    fitted = report.get("fitted")
    if fitted:
        line = f"the solver's {fitted['damage_fit']} fit of the same curves: Spearman {fitted['spearman']:.3f}"
        if fitted.get("spearman_with_interactions") is not None:
            line += f", {fitted['spearman_with_interactions']:.3f} with the interaction terms"
        print(line)
    for name, other in (report.get("others") or {}).items():
        print(f"{name} on the same schedules: Spearman {other['spearman']:.3f} as measured, "
              f"{other['fitted']:.3f} under the fit")
    return 0
