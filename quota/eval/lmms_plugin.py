"""An lmms-eval model plugin: run quota recipes and stage-wise baselines through lmms-eval's benchmarks.

lmms-eval is not a dependency of quota. With it installed, register the model and launch lmms-eval's
own command line in one step::

    python -m quota.eval.lmms_plugin --model quota \
        --model_args pretrained=testbed,recipe=recipe.json --tasks pope --batch_size 8

``register()`` adds the model under the name ``quota`` to lmms-eval's registry; any lmms-eval entry
point can then load it by that name. ``model_args``: ``pretrained`` (``testbed``, or a Hugging Face
checkpoint folder of a supported family), ``recipe`` (a recipe JSON: quantization + schedule),
``baseline`` and ``tokens`` (a stage-wise preset instead, e.g. ``baseline=fastv,tokens=64``),
``device``, ``max_new_tokens``. Generation tasks only (``generate_until``).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from quota.device import placement
from quota.models.registry import check_model_name
from quota.recipe import Recipe
from quota.runtime.apply import apply
from quota.runtime.baselines import baseline_plan_for
from quota.runtime.vision import expected_visual_tokens
from quota.testbed import model as testbed
from quota.testbed.model import IMAGE_SIZE, encode_batch, pixel_values

MODEL_NAME = "quota"


def _parse_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


class QuotaVLM:
    """The model wrapper lmms-eval drives. Built on lmms-eval's ``lmms`` base class by :func:`register`."""

    def __init__(self, pretrained: str = "testbed", recipe: str | None = None, baseline: str | None = None,
                 tokens: float | None = None, device: str | None = None, max_new_tokens: int = 16,
                 batch_size: int = 1, model=None, tokenizer=None, **_: Any) -> None:
        super().__init__()
        self.device_name, dtype = placement(device)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size_per_gpu = int(batch_size)
        if model is None:
            check_model_name(pretrained, "lmms plugin (pass a loaded checkpoint as QuotaVLM(model=..., tokenizer=...))")
            tb = testbed.load(self.device_name, dtype)
            model, tokenizer = tb.model, tb.tokenizer
        self.tokenizer = tokenizer
        self.model = self._prepare(model, recipe, baseline, tokens)

    def _prepare(self, model, recipe, baseline, tokens):
        if recipe is not None and baseline is not None:
            raise ValueError("give recipe or baseline, not both")
        if recipe is not None:
            return apply(model, Recipe.load(recipe))
        if baseline is not None:
            if tokens is None:
                raise ValueError(f"baseline={baseline} needs tokens=<equivalent visual tokens>")
            plan = baseline_plan_for(model, baseline, tokens)
            return apply(model, Recipe.from_plan(plan, expected_visual_tokens(model)))
        return model

    # lmms-eval interface --------------------------------------------------------------------------
    def generate_until(self, requests) -> list[str]:
        """Each request's ``args``: (context, gen_kwargs, doc_to_visual, doc_id, task, split)."""
        outputs = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            if len(visuals) != 1:
                raise ValueError(f"{task}/{doc_id}: the testbed takes exactly one image, got {len(visuals)}")
            image = visuals[0]
            if hasattr(image, "convert"):
                image = np.asarray(image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)))
            batch = encode_batch(self.tokenizer, [str(context)])
            device = next(self.model.parameters()).device
            out = self.model.generate(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                pixel_values=pixel_values(np.asarray(image)[None]).to(device, next(self.model.parameters()).dtype),
                max_new_tokens=int((gen_kwargs or {}).get("max_new_tokens", self.max_new_tokens)), do_sample=False,
                eos_token_id=self.tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_token_id=self.tokenizer.pad_token_id,
            )
            text = self.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            for stop in (gen_kwargs or {}).get("until", []) or []:
                text = text.split(stop)[0]
            outputs.append(text.strip())
        return outputs

    def loglikelihood(self, requests):
        raise NotImplementedError("the quota lmms-eval plugin supports generation tasks (generate_until) only")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("the quota lmms-eval plugin supports single-round generation only")


def register():
    """Register :class:`QuotaVLM` with lmms-eval under ``MODEL_NAME``; returns the registered class."""
    try:
        from lmms_eval.api.model import lmms
        from lmms_eval.api.registry import register_model
    except ImportError as err:
        raise ImportError("lmms-eval is not installed: `pip install lmms-eval` to use quota through it") from err
    cls = type("QuotaLMMS", (QuotaVLM, lmms), {"__module__": __name__})
    return register_model(MODEL_NAME)(cls)


def main(argv: list[str] | None = None) -> None:
    register()
    from lmms_eval.__main__ import cli_evaluate

    sys.argv = [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]
    cli_evaluate()


if __name__ == "__main__":
    main()
