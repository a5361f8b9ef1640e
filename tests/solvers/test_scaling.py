"""The integer scaling rule: integer rows never admit a rejected schedule nor exclude an exact fit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from quota.solvers.constraints import Row
from quota.solvers.scaling import exact_quantum, integer_objective, integer_row


def _schedules(n_layers: int, n_cand: int) -> np.ndarray:
    return np.array(list(itertools.product(range(n_cand), repeat=n_layers)))


def _int_values(int_row, idx: np.ndarray) -> np.ndarray:
    return int_row.coef[np.arange(idx.shape[1]), idx].sum(axis=1)


@pytest.mark.parametrize("seed", range(30))
def test_float_rows_follow_the_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_layers, n_cand = int(rng.integers(2, 5)), int(rng.integers(2, 5))
    coef = np.cumsum(rng.uniform(0, 1, (n_layers, n_cand)) * 10.0 ** rng.uniform(-3, 6), axis=1)
    idx = _schedules(n_layers, n_cand)
    lhs = coef[np.arange(n_layers), idx].sum(axis=1)
    sense = "<=" if seed % 2 == 0 else ">="
    for rhs in (float(rng.choice(lhs)), float(rng.choice(lhs)) * (1 + 1e-12), float(np.median(lhs))):
        row = Row(coef, rhs, sense, "test", "LinearConstraint")
        int_row = integer_row(row)
        admitted = _int_values(int_row, idx) <= int_row.rhs
        exact_fit = lhs <= rhs if sense == "<=" else lhs >= rhs
        assert admitted[exact_fit].all(), "an exact fit was excluded"
        assert row.holds(lhs[admitted]).all(), "a schedule outside the tolerance was admitted"
        assert (int_row.coef.min(axis=1) == 0).all()


def test_integer_rows_are_exact() -> None:
    """Token counts: the integer row is the float row, boundary included (0.3 * 30 is not 9 in binary)."""
    coef = np.tile(np.arange(11.0), (3, 1))
    row = Row(coef, 0.3 * 30, "<=", "budget", "budget")
    int_row = integer_row(row)
    assert int_row.exact
    idx = _schedules(3, 11)
    lhs = coef[np.arange(3), idx].sum(axis=1)
    np.testing.assert_array_equal(_int_values(int_row, idx) <= int_row.rhs, lhs <= 9)


def test_exact_quantum() -> None:
    assert exact_quantum(np.array([[0.0, 18.0, 36.0]])) == 1.0
    assert exact_quantum(np.array([[0.5, 1.25, 3.0]])) == 0.25
    assert exact_quantum(np.array([[0.1, 0.3]])) is None
    halves = Row(np.array([[0.5, 1.5], [0.0, 2.5]]), 2.0, "<=", "halves", "budget")
    assert integer_row(halves).exact


def test_gcd_reduction_keeps_decisions() -> None:
    coef = np.tile(np.arange(0.0, 577.0, 18.0), (4, 1))  # default grid: gcd 18
    row = Row(coef, 0.3 * coef[:, -1].sum(), "<=", "budget", "budget")
    int_row = integer_row(row)
    assert int_row.coef[0, 1] == 1 and int_row.rhs == int(0.3 * 4 * 576) // 18


def test_objective_rounding_error_is_tiny() -> None:
    rng = np.random.default_rng(0)
    matrices = rng.normal(size=(2, 5, 6)) * 1e-3
    scaled = integer_objective(matrices)
    idx = _schedules(5, 6)[::7]
    true = matrices[:, np.arange(5), idx].sum(axis=2)  # [K, M]
    approx = scaled.coef[:, np.arange(5), idx].sum(axis=2) / scaled.scale + scaled.shift
    span = (matrices.max(axis=2) - matrices.min(axis=2)).sum(axis=1).max()
    assert np.abs(true - approx).max() <= 5 / scaled.scale
    assert 5 / scaled.scale < 1e-10 * span
