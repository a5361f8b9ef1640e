"""``quota quantize``: quantize a model once (rotation, GPTQ or RTN weights, int4 activations and KV) and save it
as a self-contained low-bit checkpoint folder, which ``quota.load(QDIR)`` reads back without calibrating again."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

QUANT_HELP = ("quantization: a QuantConfig JSON file, or 'rtn' (round-to-nearest weights and a fixed activation clip: "
              "no calibration data); default: the recipe's config, else W4A4 GPTQ + rotation + KV4")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="quantize a model and save it as a low-bit checkpoint folder")
    p.add_argument("--model", default="testbed",
                   help="'testbed' (default) or a local Hugging Face checkpoint folder of a supported class")
    p.add_argument("--out", required=True, metavar="QDIR", help="checkpoint folder to write (whole or not at all)")
    p.add_argument("--recipe", default=None, help="recipe JSON to store with the checkpoint (quota.load prunes with it)")
    p.add_argument("--quant", default=None, metavar="FILE|rtn", help=QUANT_HELP)
    p.add_argument("--data", default=None, metavar="CALIB.jsonl",
                   help="calibration records (JSONL: image, question, answer) for a checkpoint folder; the testbed "
                        "calibrates on its own calibration split")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="calibrate on the first N records (or testbed calibration questions) only")
    p.add_argument("--overwrite", action="store_true", help="replace QDIR when it is an earlier saved checkpoint")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when there is one)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=run)


def quant_config(recipe, choice: str | None):
    """The :class:`~quota.quant.config.QuantConfig` for ``--quant choice``: a JSON file, ``rtn`` (the default or
    recipe's bits by round-to-nearest, no activation clip search) or ``None`` (the recipe's config, else the
    default W4A4 + KV4 with GPTQ). ``ValueError`` names ``--quant`` when it cannot apply."""
    from quota.quant.config import QuantConfig

    base = recipe.quant_config if recipe is not None and recipe.quant is not None else QuantConfig(impl="auto")
    if choice is None:
        config = base
    elif choice == "rtn":
        config = base.replace(weight_method="rtn", a_clip_search=False)
    else:
        try:
            config = QuantConfig.from_dict(json.loads(Path(choice).read_text()))
            if recipe is not None:  # the recipe's per-layer precision and KV bits, unless the file has its own
                config = recipe.with_precision(config)
        except FileNotFoundError:
            raise ValueError(f"--quant must be 'rtn' or a QuantConfig JSON file, got {choice!r}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"--quant {choice}: not valid JSON ({err})") from None
    if config.is_identity:
        raise ValueError("--quant: this config quantizes nothing and rotates nothing; there is nothing to save")
    return config


def _check_options(args: argparse.Namespace, needs_data: bool, testbed: bool) -> None:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be a number of calibration records >= 1, got {args.limit}")
    if not needs_data and (args.data is not None or args.limit is not None):
        raise ValueError("--data/--limit: this quantization calibrates nothing (round-to-nearest, fixed clipping); "
                         "leave them out")
    if testbed and args.data is not None:
        raise ValueError("--data: the testbed calibrates on its own calibration split (use --limit); --data is for "
                         "a checkpoint folder given as --model DIR")
    if needs_data and not testbed and args.data is None:
        raise ValueError("--data: GPTQ and the clipping search calibrate on data: give --data calib.jsonl (records "
                         "with image, question, answer), or --quant rtn")


def _quantize_testbed(args, config, needs_data: bool, device: str, dtype, recipe):
    """``(quantized model, save keyword arguments, source model)`` for ``--model testbed``."""
    from quota.quantize.model import quantize_model
    from quota.saved import Source
    from quota.testbed import model as testbed
    from quota.testbed.quantized import quantize_testbed

    tb = testbed.load(device, dtype)
    source = Source.of_testbed(tb.model)
    _check_recipe(tb.model, recipe, source.model_hash)
    if needs_data:
        quantized = quantize_testbed(tb.model, tb.tokenizer, config, calibration_limit=args.limit)
    else:
        quantized = quantize_model(tb.model, config, None)
    return quantized, dict(source=source, config=tb.model.config, processor=tb.tokenizer), tb.model


def _quantize_folder(args, config, needs_data: bool, device: str, dtype, recipe):
    """``(quantized model, save keyword arguments, source model)`` for ``--model DIR``."""
    from quota.data.profile import data_version, load_records, quantize_on_records
    from quota.models.checkpoint import load_checkpoint
    from quota.quantize.model import quantize_model
    from quota.saved import Source

    records = load_records(args.data, args.limit) if needs_data else None
    loaded = load_checkpoint(args.model, device, dtype)
    _check_recipe(loaded.model, recipe, loaded.model_hash)
    if records:  # through the quantized-model cache: `quota profile` on the same records then loads this result
        quantized = quantize_on_records(loaded, records, config, data_version(args.data, records))
    else:
        quantized = quantize_model(loaded.model, config, None)
    return quantized, dict(source=Source.of_checkpoint(loaded), files_from=loaded.folder), loaded.model


def _check_recipe(model, recipe, model_hash: str) -> None:
    """Refuse a recipe that does not fit the model before the long work; warn when it was made for other weights."""
    import sys

    from quota.runtime.apply import check_fits

    if recipe is None:
        return
    check_fits(model, recipe)
    if recipe.model_hash and recipe.model_hash != model_hash:
        print(f"quota quantize: warning: the recipe was made for model hash {recipe.model_hash[:12]}, this model's is "
              f"{model_hash[:12]} (other weights)", file=sys.stderr)


def _mib(n: int) -> float:
    return n / 2**20


def run(args: argparse.Namespace) -> int:
    from quota.cli.apply import quant_label
    from quota.device import placement
    from quota.models.registry import check_model_name
    from quota.quantize.model import needs_calibration
    from quota.recipe import Recipe
    from quota.saved import MANIFEST_NAME, read_manifest, save
    from quota.saved.folder import check_target

    is_folder = args.model != "testbed" and Path(args.model).is_dir()
    if not is_folder:
        check_model_name(args.model, "quantize")
    out = Path(args.out)
    if is_folder and out.resolve() == Path(args.model).resolve():
        raise ValueError(f"--out {out} is the source checkpoint folder; choose another folder")
    check_target(out, args.overwrite, MANIFEST_NAME)
    recipe = Recipe.load(args.recipe) if args.recipe else None
    config = quant_config(recipe, args.quant)
    needs_data = needs_calibration(config)
    _check_options(args, needs_data, testbed=not is_folder)
    device, dtype = placement(args.device)

    start = time.monotonic()
    prepare = _quantize_folder if is_folder else _quantize_testbed
    quantized, where, source_model = prepare(args, config, needs_data, device, dtype, recipe)
    quantize_s = time.monotonic() - start
    start = time.monotonic()
    save(quantized, out, overwrite=args.overwrite, recipe=recipe, **where)
    save_s = time.monotonic() - start

    manifest = read_manifest(out)
    shards = manifest["shards"]["files"]
    bf16 = sum(t.numel() * 2 for t in source_model.state_dict().values() if t.is_floating_point())
    summary = {"out": str(out), "model": args.model, "model_class": manifest["source"]["model_class"],
               "quant": quant_label(config, args.quant or "recipe"), "recipe": args.recipe, "shards": len(shards),
               "bytes": sum(f["bytes"] for f in shards), "bf16_bytes": bf16,
               "quantize_seconds": round(quantize_s, 2), "save_seconds": round(save_s, 2)}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['quant']} {summary['model_class']} -> {out}: {len(shards)} safetensors files, "
          f"{_mib(summary['bytes']):.1f} MiB (bf16: {_mib(bf16):.1f} MiB); quantized in {quantize_s:.1f} s, "
          f"saved in {save_s:.1f} s; load it with quota.load({str(out)!r})")
    return 0
