"""The lmms-eval plugin offline: registration with a stand-in registry, and the generate_until call path."""

import sys
import types

import numpy as np
import pytest

from quota.eval import lmms_plugin


@pytest.fixture()
def fake_lmms_eval(monkeypatch):
    registry = {}

    class lmms:  # noqa: N801  (lmms-eval's base class name)
        def __init__(self):
            self.task_dict = {}

    def register_model(name):
        def deco(cls):
            registry[name] = cls
            return cls
        return deco

    root, api = types.ModuleType("lmms_eval"), types.ModuleType("lmms_eval.api")
    model_mod, reg_mod = types.ModuleType("lmms_eval.api.model"), types.ModuleType("lmms_eval.api.registry")
    model_mod.lmms, reg_mod.register_model = lmms, register_model
    for name, mod in (("lmms_eval", root), ("lmms_eval.api", api), ("lmms_eval.api.model", model_mod),
                      ("lmms_eval.api.registry", reg_mod)):
        monkeypatch.setitem(sys.modules, name, mod)
    return registry, lmms


def test_register_adds_the_model_by_name(fake_lmms_eval):
    registry, base = fake_lmms_eval
    cls = lmms_plugin.register()
    assert registry["quota"] is cls and issubclass(cls, base)


def test_missing_lmms_eval_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lmms_eval", None)
    with pytest.raises(ImportError, match="pip install lmms-eval"):
        lmms_plugin.register()


class Request:
    def __init__(self, *args):
        self.args = args


def test_generate_until_runs_a_baseline_on_the_testbed(fake_lmms_eval, small_testbed):
    cls = lmms_plugin.register()
    model, tok = small_testbed
    lm = cls(model=model, tokenizer=tok, baseline="random", tokens=64, device="cpu", max_new_tokens=2)
    image = np.random.default_rng(0).integers(0, 255, (192, 192, 3), dtype=np.uint8)
    lm.task_dict = {"toy": {"test": {0: {"image": image}}}}
    requests = [Request("How many stars are there?", {"until": ["\n"], "max_new_tokens": 2},
                        lambda doc: [doc["image"]], 0, "toy", "test")]
    out = lm.generate_until(requests)
    assert len(out) == 1 and isinstance(out[0], str)
    assert lm.model.runner.kept_indices[-1].shape == (1, 64)  # exactly 64 visual tokens kept


def test_recipe_and_baseline_together_are_refused(fake_lmms_eval, small_testbed):
    cls = lmms_plugin.register()
    model, tok = small_testbed
    with pytest.raises(ValueError, match="not both"):
        cls(model=model, tokenizer=tok, recipe="r.json", baseline="fastv", tokens=64)
