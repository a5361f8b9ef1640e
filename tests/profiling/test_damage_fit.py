"""The monotone fit of a profile's damage curves: terms >= 0, non-increasing in the keep count, 0 at all tokens,
the least-squares fit of the measured prune-from-layer damages (checked against a general constrained solver),
exact on curves that already have the shape; the solver reads profiles through it by default, and the raw
reading stays available."""

import dataclasses
import json

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import spearmanr

from quota.allocate import build_problem, solve
from quota.cli.main import main
from quota.profiling.additivity import fitted_ranking, predictions, random_schedules
from quota.profiling.damage_fit import (
    DAMAGE_FITS, EXACT_TERMS, TIE_BREAK, fitted_curve, fitted_interactions, from_layer_damage, layerwise_contributions,
    monotone_contributions,
)
from quota.profiling.damage_terms import interaction_terms, per_layer_contributions
from quota.solvers import solve_problem
from tests.synthetic_profile import synthetic_profile


def shaped(h: np.ndarray) -> bool:
    return bool((h >= -1e-12).all() and (np.diff(h, axis=1) <= 1e-12).all() and np.allclose(h[:, -1], 0))


def shaped_terms(seed: int, layers: int, grid: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = np.sort(rng.uniform(0, 1, (layers, grid)), axis=1)[:, ::-1] * np.linspace(2, 0.2, layers)[:, None]
    h[:, -1] = 0
    return h


def noisy_from_layer(seed: int, layers: int = 5, grid: int = 6, noise: float = 0.4) -> np.ndarray:
    """Prune-from-layer damages of a shaped model (:func:`shaped_terms`) plus noise (last column 0: all tokens
    kept)."""
    d = from_layer_damage(shaped_terms(seed, layers, grid))
    d += np.random.default_rng(seed + 100).normal(0, noise, (layers, grid))
    d[:, -1] = 0
    return d


@pytest.mark.parametrize("seed", range(4))
def test_fit_has_the_shape_and_is_the_least_squares_optimum(seed):
    d = noisy_from_layer(seed, layers=3, grid=4)
    h = monotone_contributions(d)
    assert shaped(h)
    loss = lambda x: float(((from_layer_damage(x.reshape(3, 4)) - d)[:, :-1] ** 2).sum())  # noqa: E731
    cons = [{"type": "ineq", "fun": lambda x, i=i: x.reshape(3, 4)[i // 3, i % 3] - x.reshape(3, 4)[i // 3, i % 3 + 1]}
            for i in range(9)]
    cons += [{"type": "eq", "fun": lambda x: x.reshape(3, 4)[:, -1]}]
    oracle = minimize(loss, np.zeros(12), constraints=cons, method="SLSQP", options={"ftol": 1e-12, "maxiter": 500})
    assert oracle.success
    assert loss(h.reshape(-1)) <= oracle.fun + 1e-7  # no feasible point the general solver finds is better


def test_fit_is_exact_on_curves_that_already_have_the_shape():
    p = synthetic_profile()
    h = p.damage["kl"]
    assert shaped(h)
    np.testing.assert_allclose(monotone_contributions(from_layer_damage(h)), h, atol=1e-9)
    np.testing.assert_allclose(per_layer_contributions(from_layer_damage(h)), h, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_raw_differences_of_noisy_measurements_go_negative_and_the_fit_recovers_the_terms_better(seed):
    d = noisy_from_layer(seed, layers=12, grid=9)
    raw, fit, truth = per_layer_contributions(d), monotone_contributions(d), shaped_terms(seed, 12, 9)
    assert (raw < 0).any() and (np.diff(raw, axis=1) > 0).any()
    assert shaped(fit)
    assert np.abs(fit - truth).mean() < 0.75 * np.abs(raw - truth).mean()
    np.testing.assert_array_equal(fit, monotone_contributions(d.copy()))  # deterministic


def test_fitted_curve_breaks_ties_toward_keeping_tokens():
    flat = np.zeros((3, 5))
    grid = (0, 4, 8, 12, 16)
    fit = fitted_curve(flat, "monotone", grid)
    assert (np.diff(fit, axis=1) < 0)[:, :].all() and fit[:, -1].tolist() == [0, 0, 0]
    assert fit[0, 0] == pytest.approx(TIE_BREAK)
    assert fitted_curve(flat, "raw", grid) is flat
    with pytest.raises(ValueError, match="damage fit must be one of monotone, raw"):
        fitted_curve(flat, "smooth", grid)
    with pytest.raises(ValueError, match="finite"):
        monotone_contributions(np.array([[np.nan, 0.0]]))


def noisy_profile():
    """The synthetic profile with noise on its prune-from-layer damages, and interaction terms measured as
    two-step schedules of a known pairwise effect."""
    p = synthetic_profile(n_layers=6, n_tokens=64, steps=8)
    rng = np.random.default_rng(3)
    d = from_layer_damage(p.damage["kl"]) + rng.normal(0, 0.3, (6, len(p.grid)))
    d[:, -1] = 0
    sub = [0, 4, 8]
    pairs = [[layer, p.grid[a], p.grid[b], float(d[layer + 1, b] + per_layer_contributions(d)[layer, a] + 0.05)]
             for layer in range(5) for a in sub[:-1] for b in sub if b < a]
    return dataclasses.replace(
        p, damage={"kl": per_layer_contributions(d), "task_loss": per_layer_contributions(d)},
        interactions=interaction_terms(d, {(l, p.grid.index(a), p.grid.index(b)): v for l, a, b, v in pairs}, sub),
        extra={"kl_two_step": pairs, "interaction_subgrid": [p.grid[i] for i in sub]},
    )


def test_interaction_terms_are_recomputed_against_the_fit():
    p = noisy_profile()
    assert fitted_interactions(p, "raw") is p.interactions
    fitted = fitted_interactions(p, "monotone")
    d_fit = from_layer_damage(fitted_curve(p.damage["kl"], "monotone", p.grid))
    h_fit = per_layer_contributions(d_fit)
    layer, a, b = 2, 4, 0  # a measured pair: J = measured - (h_l(a) + D(l + 1, b)) under the fit
    measured = {(l, p.grid.index(x), p.grid.index(y)): v for l, x, y, v in p.extra["kl_two_step"]}
    assert fitted[layer, a, b] == pytest.approx(measured[(layer, a, b)] - (h_fit[layer, a] + d_fit[layer + 1, b]))
    bare = dataclasses.replace(p, extra={})  # terms given by hand, without the measurements: taken as they are
    assert fitted_interactions(bare, "monotone") is bare.interactions


def test_solver_reads_the_fit_by_default_and_raw_on_request():
    p = noisy_profile()
    mono, raw = build_problem(p, 0.3), build_problem(p, 0.3, damage_fit="raw")
    np.testing.assert_array_equal(raw.damage, p.damage["kl"])
    assert shaped(mono.damage - TIE_BREAK * (1 - np.asarray(p.grid) / 64))
    sol = solve_problem(mono, "dp")
    assert sol.objective == pytest.approx(predictions(p, [sol.schedule], "kl", True, "monotone")[0])
    result = solve(p, 0.3, solver="dp")
    assert result.recipe.solver["damage_fit"] == "monotone"
    assert solve(p, 0.3, solver="dp", damage_fit="raw").recipe.solver["damage_fit"] == "raw"
    with pytest.raises(ValueError, match="damage fit must be one of"):
        build_problem(p, 0.3, damage_fit="isotonic")


def test_fitted_ranking_reports_both_readings_on_the_same_schedules():
    p = noisy_profile()
    truth = synthetic_profile(n_layers=6, n_tokens=64, steps=8)
    schedules = random_schedules(truth, 30, seed=0)
    measured = predictions(truth, schedules)  # the noiseless model measures them
    report = fitted_ranking(p, schedules, measured)
    raw = spearmanr(predictions(p, schedules), measured)[0]
    assert report["damage_fit"] == "monotone" and len(report["predicted"]) == 30
    assert "spearman_with_interactions" in report
    assert report["spearman"] > raw + 0.1  # the noise the fit removes is what misranked them


def test_cli_flag_names_the_library_fits_and_the_recipe_records_it(tmp_path, capsys):
    from quota.cli.solve import DAMAGE_FITS as CLI_FITS

    assert CLI_FITS == DAMAGE_FITS
    path = tmp_path / "p.json"
    noisy_profile().save(path)
    for fit in DAMAGE_FITS:
        out = tmp_path / f"{fit}.json"
        assert main(["solve", "--profile", str(path), "--solver", "dp", "--budget", "0.3", "--damage-fit", fit,
                     "-o", str(out), "--json"]) == 0
        assert json.loads(out.read_text())["solver"]["damage_fit"] == fit
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["solve", "--profile", str(path), "--damage-fit", "smooth"])
    assert "invalid choice: 'smooth'" in capsys.readouterr().err


def test_the_joint_precision_program_reads_its_token_curves_through_the_fit_too():
    from quota.profiling.precision_problem import build_joint_problem, solve_precision
    from tests.test_precision_profile import synthetic_precision_profile

    pp = synthetic_precision_profile()
    rng = np.random.default_rng(5)
    noisy = {}
    for name, curve in pp.token_damage.items():
        d = from_layer_damage(curve) + rng.normal(0, 0.3, curve.shape)
        d[:, -1] = 0
        noisy[name] = per_layer_contributions(d)
    pp = dataclasses.replace(pp, token_damage=noisy)
    raw = build_joint_problem(pp, {"latency": 0.6}, damage_fit="raw")
    mono = build_joint_problem(pp, {"latency": 0.6})
    assert (raw.token_damage < 0).any() and (mono.token_damage >= 0).all()
    for p in range(mono.token_damage.shape[0]):  # every option's curve, measured or interpolated, has the shape
        assert (np.diff(mono.token_damage[p], axis=1) < 0).all()
    assert solve_precision(pp, {"latency": 0.6}).recipe.solver["damage_fit"] == "monotone"
    assert solve_precision(pp, {"latency": 0.6}, damage_fit="raw").recipe.solver["damage_fit"] == "raw"


def test_large_profiles_are_fitted_layer_by_layer_in_linear_time():
    layers, grid = 40, 65  # 2,560 terms: past EXACT_TERMS
    assert layers * (grid - 1) > EXACT_TERMS
    d = noisy_from_layer(11, layers=layers, grid=grid)
    fit = monotone_contributions(d)
    assert shaped(fit)
    np.testing.assert_array_equal(fit, layerwise_contributions(d))
    truth = shaped_terms(11, layers, grid)
    np.testing.assert_allclose(layerwise_contributions(from_layer_damage(truth)), truth, atol=1e-9)
    raw = per_layer_contributions(d)
    for layer in (0, 17, 39):  # each layer's terms are the least-squares projection of its raw terms
        row = fit[layer, :-1]
        assert np.sum((row - raw[layer, :-1]) ** 2) <= np.sum((np.sort(raw[layer, :-1].clip(0))[::-1] - raw[layer, :-1]) ** 2) + 1e-12
