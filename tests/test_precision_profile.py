"""Precision profiling: the token-curve interpolation (exact on an affine synthetic case), the PrecisionProfile file
(round trip, malformed files refused with the field named, plain profiles still load), and the whole path on a
tiny Llava on the CPU: precision table, additivity, latency, the joint solve, its version 3 recipe applied to the
model, and the command lines (quota solve, quota profile --precisions with the fake testbed)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from quota.profiling.precision import interpolate_token_curves, interpolation_weights, random_configurations
from quota.profiling.precision_profile import PrecisionProfile, PrecisionProfileError, load_any
from tests.synthetic_profile import synthetic_profile

NAMES = ("w4a4", "fp8", "bf16")


def synthetic_precision_profile(n_layers: int = 4, seed: int = 0, names=NAMES, n_tokens: int = 64,
                                steps: int = 8) -> PrecisionProfile:
    """A precision profile with no model behind it: damage grows as precision drops, times from bits."""
    rng = np.random.default_rng(seed)
    token = synthetic_profile(n_layers=n_layers, n_tokens=n_tokens, steps=steps, seed=seed)
    bits = np.array([{"w4a4": 8, "w4a8": 12, "fp8": 16, "bf16": 32}[n] for n in names], dtype=float)
    table = rng.uniform(0.5, 1.5, (n_layers, 1)) * (32 - bits)[None, :] / 24  # [L, P], 0 at bf16
    hi = token.damage["kl"]
    curves = {names[0]: hi * 1.5, names[-1]: hi}
    k = np.asarray(token.grid, dtype=float)
    prefill = (40 + k)[None, :] * 1e-6 * (bits / 32 + 0.5)[:, None]  # [P, G]
    decode = 1e-5 * (bits / 32)[:, None] + 1e-9 * (40 + k)[None, :]
    return PrecisionProfile(
        profile=token, precisions=tuple(names), precision_damage=table, token_damage=curves,
        latency={"prefill": prefill, "decode": decode, "method": "synthetic", "device": "none"},
        layer_weights=1e6, kv_bytes_per_token=np.array([{"w4a4": 160.0, "w4a8": 288.0, "fp8": 288.0,
                                                         "bf16": 512.0}[n] for n in names]),
        kv_bits=tuple({"w4a4": 4, "w4a8": 8, "fp8": 8, "bf16": 16}[n] for n in names), reference="bf16",
        text_tokens=40.0)


# ---- interpolation ----------------------------------------------------------------------------------------------

def test_interpolation_is_exact_when_curves_are_affine_in_the_precision_damage():
    rng = np.random.default_rng(1)
    n_l, n_g = 5, 7
    table = np.stack([rng.uniform(1, 2, n_l), rng.uniform(0.2, 0.9, n_l), np.zeros(n_l)], axis=1)  # [L, P]
    hi = rng.uniform(0, 1, (n_l, n_g))
    slope = rng.uniform(0, 1, (n_l, n_g))
    truth = np.stack([hi + table[:, [p]] * slope for p in range(3)])  # [P, L, G], affine in D[l, p]
    curves, how = interpolate_token_curves(table, {"w4a4": truth[0], "bf16": truth[2]}, NAMES)
    assert np.allclose(curves, truth)
    assert how["fp8"].startswith("interpolated") and how["w4a4"] == how["bf16"] == "measured"


def test_interpolation_weights_are_clipped_and_zero_where_the_low_option_did_no_harm():
    table = np.array([[1.0, 0.5, 0.0], [0.0, 0.3, 0.0], [1.0, 2.0, 0.0], [1.0, -0.5, 0.0]])
    w = interpolation_weights(table, 0, 2)
    assert np.allclose(w[:, 0], [1, 0, 1, 1]) and np.allclose(w[:, 2], 0)
    assert np.allclose(w[:, 1], [0.5, 0.0, 1.0, 0.0])


def test_one_measured_curve_serves_every_option():
    table = np.zeros((2, 3))
    h = np.ones((2, 4))
    curves, how = interpolate_token_curves(table, {"bf16": h}, NAMES)
    assert curves.shape == (3, 2, 4) and np.all(curves == 1) and "only one measured" in how["w4a4"]
    with pytest.raises(ValueError, match="not among the precisions"):
        interpolate_token_curves(table, {"w4a8": h}, NAMES)


def test_random_configurations_are_distinct_and_use_the_options():
    configs = random_configurations(6, NAMES, 8, seed=0)
    assert len(configs) == len(set(configs)) == 8 and all(len(c) == 6 for c in configs)
    assert {p for c in configs for p in c} <= set(NAMES)


# ---- the file ---------------------------------------------------------------------------------------------------

def test_round_trip_and_plain_profiles_still_load(tmp_path):
    pp = synthetic_precision_profile()
    path = pp.save(tmp_path / "pp.json")
    again = load_any(path)
    assert isinstance(again, PrecisionProfile) and again.precisions == NAMES
    assert np.array_equal(again.precision_damage, pp.precision_damage)
    assert np.array_equal(again.latency["prefill"], pp.latency["prefill"])
    data = json.loads(path.read_text())
    assert data["type"] == "quota.precision_profile" and data["version"] == 1
    pp.profile.save(tmp_path / "plain.json")
    assert type(load_any(tmp_path / "plain.json")).__name__ == "Profile"


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(version=2), "version 2 is not supported"),
    (lambda d: d.update(precisions=["w4a4", "int3", "bf16"]), "unknown precision 'int3'"),
    (lambda d: d.update(precision_damage=[[0.0]]), "precision_damage has shape"),
    (lambda d: d["latency"].update(prefill=[[2.0] + [1.0] * 8] * 3), "latency.prefill is not non-decreasing"),
    (lambda d: d["token_damage"].update(w4a8=[[0.0] * 9] * 4), "token_damage.w4a8: not among the precisions"),
    (lambda d: d.update(kv_bits=[4, 8]), "kv_bits must give one of"),
    (lambda d: d.update(reference="w4a8"), "reference 'w4a8' is not among"),
    (lambda d: d.update(surprise=1), "unknown field"),
    (lambda d: d.pop("latency"), "missing field"),
])
def test_malformed_files_are_refused_naming_the_field(tmp_path, change, message):
    data = synthetic_precision_profile().to_dict()
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PrecisionProfileError, match=message):
        PrecisionProfile.load(path)


# ---- the whole path on a tiny model -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    from quota.profiling.measure import ProfileSettings
    from quota.profiling.precision_profile import default_kv_bits
    from quota.profiling.precision_run import profile_precisions, uniform_config
    from quota.quant.config import QuantConfig
    from quota.quantize.gptq import one_cpu_thread
    from quota.quantize.model import quantize_model
    from tests.profiling.fake_testbed import CANDIDATES, fake_batches
    from tests.runtime.models import tiny_llava

    with one_cpu_thread(torch.device("cpu")):
        model = tiny_llava(layers=3)
        base = QuantConfig(weight_method="rtn", w_clip_search=False, a_clip_search=False)
        models = {p: quantize_model(model, uniform_config(base, p, 3, default_kv_bits(p))) for p in NAMES}
        questions = [SimpleNamespace(task=t) for t in ("counting", "reading", "counting", "reading")]
        batches = fake_batches(None, questions, 4, "cpu", torch.float32)
        settings = ProfileSettings(grid_steps=2, batch_size=4, score_candidates=list(CANDIDATES),
                                   pre_llm_candidates=[])
        path = tmp_path_factory.mktemp("pp") / "pp.json"
        prof = profile_precisions(models, batches, base, NAMES, model_id="tiny", model_hash="0" * 64,
                                  data_version="v", settings=settings, additivity=4, output=path)
    return model, prof, path


def test_profile_of_a_tiny_model(measured):
    _, prof, path = measured
    assert PrecisionProfile.load(path).precisions == NAMES
    table = prof.precision_damage
    assert table.shape == (3, 3) and np.all(table[:, 2] == 0) and np.all(table[:, 0] > 0)
    assert set(prof.token_damage) == {"w4a4", "bf16"} and prof.extra["lowest"] == "w4a4"
    # the lowest option's curves are measured against the reference's (bf16) answers, not its own
    assert np.allclose(prof.token_damage["w4a4"], prof.profile.damage["kl_teacher"])
    assert not np.allclose(prof.profile.damage["kl_teacher"], prof.profile.damage["kl"])
    assert len(prof.additivity["configurations"]) == 4
    assert prof.latency["method"] == "cpu_perf_counter" and prof.latency["prefill"].shape == (3, len(prof.grid))


def test_joint_recipe_round_trips_and_applies_each_layers_precision(measured, tmp_path):
    from quota.profiling.precision_problem import solve_precision
    from quota.quantize.precision import layer_precisions
    from quota.recipe import Recipe
    from quota.runtime.apply import apply

    model, prof, _ = measured
    result = solve_precision(prof, {"weight_bytes": 0.4, "tokens": 0.8})  # forces 4-bit or fp8 layers
    recipe = result.recipe
    assert set(recipe.layer_precision) <= {"w4a4", "fp8"} and recipe.to_dict()["version"] == 3
    assert recipe.quant_config.layer_precision == recipe.layer_precision
    again = Recipe.load(recipe.save(tmp_path / "r.json"))
    assert again == recipe and again.layer_kv_bits == tuple({"w4a4": 4, "fp8": 8}[p] for p in recipe.layer_precision)
    applied = apply(model, again)
    inner = getattr(applied, "model", applied)
    assert layer_precisions(inner) == list(recipe.layer_precision)


def test_quota_solve_on_a_precision_profile(measured, tmp_path, capsys):
    from quota.cli.main import main

    _, _, path = measured
    out = tmp_path / "r.json"
    assert main(["solve", "--profile", str(path), "--budget-kind", "weight_bytes", "--budget", "0.5",
                 "--precisions", "w4a4,fp8,bf16", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cost_ratios"]["weight_bytes"] <= 0.5 + 1e-9 and summary["recipe"]["version"] == 3
    assert main(["solve", "--profile", str(path), "--budget-kind", "weight_bytes", "--budget", "0.1",
                 "-o", str(out)]) != 0
    assert "least achievable weight_bytes cost" in capsys.readouterr().err
    png = tmp_path / "pareto.png"
    assert main(["solve", "--profile", str(path), "--budget-kind", "latency", "--sweep", "0.8:1:0.1",
                 "-o", str(png)]) == 0
    sweep = json.loads(png.with_suffix(".json").read_text())
    labels = [p["label"] for p in sweep["points"]]
    assert "uniform w4a4, all tokens" in labels and "uniform fp8 + tokens 0.3" in labels
    assert all(p["predicted"] for p in sweep["points"]) and png.with_suffix(".md").is_file()


def test_quota_solve_refuses_joint_flags_on_a_token_profile(tmp_path, capsys):
    from quota.cli.main import main

    path = synthetic_profile().save(tmp_path / "plain.json")
    assert main(["solve", "--profile", str(path), "--precisions", "w4a4,bf16", "-o", str(tmp_path / "r.json")]) != 0
    assert "needs a precision profile" in capsys.readouterr().err


def test_quota_profile_precisions_with_the_fake_testbed(monkeypatch, tmp_path, one_thread):
    import quota.testbed.precision_profile as tpp
    from quota.cli.main import main
    from tests.profiling import fake_testbed

    for module, name, value in fake_testbed.patches():
        monkeypatch.setattr(module, name, value)
    monkeypatch.setattr(tpp.testbed, "load", fake_testbed.fake_load)
    monkeypatch.setattr(tpp, "make_batches", fake_testbed.fake_batches)
    monkeypatch.setattr(tpp, "quantize_testbed", fake_testbed.fake_quantize)
    quant = tmp_path / "q.json"
    from quota.quant.config import QuantConfig

    quant.write_text(json.dumps(QuantConfig(weight_method="rtn", w_clip_search=False, a_clip_search=False).to_dict()))
    out = tmp_path / "pp.json"
    assert main(["profile", "--precisions", "w4a4,bf16", "--limit", "2", "--grid-steps", "2", "--device", "cpu",
                 "--batch-size", "2", "--quant", str(quant), "--precision-additivity", "3", "--no-latency",
                 "-o", str(out)]) == 0
    prof = PrecisionProfile.load(out)
    assert prof.precisions == ("w4a4", "bf16") and prof.latency["method"] == "synthetic"
    assert main(["solve", "--profile", str(out), "--budget-kind", "latency", "--budget", "0.9",
                 "--precisions", "w4a4,bf16", "-o", str(tmp_path / "r.json")]) == 0
