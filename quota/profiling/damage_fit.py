"""The damage model fitted under the shape every real damage curve has, instead of taken as raw differences.

A profile measures ``D[l, g]``: the damage of keeping all tokens before layer ``l`` and ``grid[g]`` from ``l`` on
(the prune-from-layer schedules). The additive model's per-layer term is the difference
``h_l(k) = D[l, k] - D[l + 1, k]`` (:func:`quota.profiling.damage_terms.per_layer_contributions`), a difference
of two noisy measurements: on the testbed's GPU profiles about a quarter of the terms come out negative, so the solver "gains" by pruning
layers whose true cost is small but positive, and it is indifferent to keeping tokens it has paid for.

The ``monotone`` fit keeps the additive model and imposes what pruning means on its terms:

- ``h_l(k) >= 0``: pruning one more layer never lowers the damage;
- ``h_l(k)`` non-increasing in ``k``: keeping more tokens at a layer never costs more;
- ``h_l(N) = 0``: keeping every token costs nothing.

Among all such terms it takes those whose prune-from-layer sums ``F[l, g] = sum_{j >= l} h_j(g)`` are closest to
the measured ``D`` in least squares. Writing ``h_l(g) = sum_{m >= g} u[l, m]`` with ``u >= 0`` turns this into a
non-negative least-squares problem, solved exactly (``scipy.optimize.nnls``) up to :data:`EXACT_TERMS` terms
(540 on the testbed, 1,024 at 32 layers x 33 keep counts). Beyond that the dense solve grows as the cube of the
terms (minutes at 80 x 129), so each layer's raw terms are projected onto the same shape instead (isotonic
regression per layer, ``scipy.optimize.isotonic_regression``, linear time). On the shipped H200 profile's 30
validation schedules the two rank at Spearman 0.800 (exact fit) and 0.792 (per layer), the raw terms at 0.487.

Interaction terms (measured two-step schedules, :func:`quota.profiling.damage_terms.interaction_terms`) are the
measurement less the additive prediction, so under the fit they are recomputed against the fitted ``F`` from the
measured two-step damages the profile records (``extra.kl_two_step``)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.optimize import nnls

from quota.profiling.profile import Profile, ProfileError
from quota.profiling.damage_terms import interaction_terms, per_layer_contributions

EXACT_TERMS = 2048
"""Largest ``layers x (keep counts - 1)`` fitted exactly in the measured damages; larger profiles are fitted layer by
layer (module docstring)."""

TIE_BREAK = 1e-6
"""Nats per pruned share of a layer added to the ``monotone`` fit's terms: a least-squares isotonic fit is flat in
places, and among schedules it predicts equal the solver should keep the tokens it may keep (far below any
measured difference)."""

DAMAGE_FITS = ("monotone", "raw")
"""How the solver reads a profile's damage curves: ``monotone`` (default) fits the per-layer terms under the
shape constraints above; ``raw`` takes the measured differences as they are."""

DEFAULT_DAMAGE_FIT = DAMAGE_FITS[0]


def check_damage_fit(fit: str) -> str:
    if fit not in DAMAGE_FITS:
        raise ValueError(f"damage fit must be one of {', '.join(DAMAGE_FITS)}, got {fit!r}")
    return fit


def from_layer_damage(contributions: np.ndarray) -> np.ndarray:
    """``D[l] = sum_{j >= l} h[j]`` (``[L, G]``): the prune-from-layer damages whose per-layer terms are
    ``contributions`` (the inverse of :func:`quota.profiling.damage_terms.per_layer_contributions`)."""
    return np.cumsum(contributions[::-1], axis=0)[::-1]


def monotone_contributions(from_layer: np.ndarray) -> np.ndarray:
    """Per-layer terms ``h`` ``[L, G]`` (grid ascending, its last point all tokens) with ``h >= 0``, each row
    non-increasing along the grid and 0 at its last point, whose prune-from-layer sums are the least-squares fit
    of the measured ``from_layer`` ``[L, G]`` (its last column, all tokens kept, is 0 and is not fitted).
    Deterministic: an exact NNLS solve up to :data:`EXACT_TERMS` terms (40 ms at 30 x 19, 0.3 s at 32 x 33 on 2 CPU
    cores; the last fits are remembered, so a sweep over budgets fits once), else each layer's raw terms projected
    onto the shape (:func:`layerwise_contributions`)."""
    d = np.asarray(from_layer, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] < 2 or not np.isfinite(d).all():
        raise ValueError(f"from_layer must be a finite [layers, grid] array with at least 2 grid points, got "
                         f"shape {d.shape}")
    return _fit(d.tobytes(), d.shape).copy()


def layerwise_contributions(from_layer: np.ndarray) -> np.ndarray:
    """Each layer's raw terms ``D[l] - D[l + 1]`` projected onto the shape (least squares per layer: non-increasing
    along the grid, then clipped at 0, the last point 0); ``[L, G]``, linear time."""
    from scipy.optimize import isotonic_regression  # scipy >= 1.12; imported here so the exact path needs only nnls

    raw = per_layer_contributions(np.asarray(from_layer, dtype=np.float64))
    h = np.zeros_like(raw)
    for layer, row in enumerate(raw):
        h[layer, :-1] = np.maximum(isotonic_regression(row[:-1], increasing=False).x, 0.0)
    return h


@lru_cache(maxsize=16)
def _fit(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    d = np.frombuffer(data, dtype=np.float64).reshape(shape)
    n_layers, n_grid = d.shape
    if n_layers * (n_grid - 1) > EXACT_TERMS:
        return layerwise_contributions(d)
    below = np.triu(np.ones((n_layers, n_layers)))  # F[l] = sum_{j >= l} h[j]
    above = np.triu(np.ones((n_grid - 1, n_grid - 1)))  # h[:, g] = sum_{m >= g} u[:, m]
    u, _ = nnls(np.kron(below, above), d[:, :-1].reshape(-1), maxiter=50 * d.size)
    h = np.zeros_like(d)
    h[:, :-1] = u.reshape(n_layers, n_grid - 1) @ above.T
    return h


def fitted_curve(curve: np.ndarray, fit: str, grid) -> np.ndarray:
    """A profile's per-layer damage ``curve`` ``[L, G]`` under ``fit`` (:data:`DAMAGE_FITS`); for ``monotone``,
    plus :data:`TIE_BREAK` times each grid point's pruned share (``grid``: the keep counts, ascending, the last
    all tokens), so that every row is strictly decreasing."""
    if check_damage_fit(fit) == "raw":
        return curve
    keep = np.asarray(grid, dtype=np.float64)
    pruned = 1.0 - keep / keep[-1]  # [G], 0 at all tokens
    return monotone_contributions(from_layer_damage(curve)) + TIE_BREAK * pruned


def fitted_interactions(profile: Profile, fit: str) -> np.ndarray | None:
    """The profile's KL interaction terms ``[L-1, G, G]`` under ``fit``: as measured for ``raw``; for ``monotone``,
    recomputed against the fitted KL curve from the two-step measurements the profile records. ``None`` when the
    profile has none; its terms as they are when it records no measurements to recompute them from (terms given
    by hand through the Python API)."""
    if profile.interactions is None or check_damage_fit(fit) == "raw":
        return profile.interactions
    pairs, subgrid = profile.extra.get("kl_two_step"), profile.extra.get("interaction_subgrid")
    if not pairs or not subgrid:
        return profile.interactions
    index = {k: g for g, k in enumerate(profile.grid)}
    try:
        measured = {(int(layer), index[int(a)], index[int(b)]): float(kl) for layer, a, b, kl in pairs}
        sub = [index[int(k)] for k in subgrid]
    except (KeyError, TypeError, ValueError) as err:
        raise ProfileError(f"extra.kl_two_step or extra.interaction_subgrid do not match the grid: {err}") from None
    fitted = fitted_curve(profile.damage["kl"], fit, profile.grid)
    return interaction_terms(from_layer_damage(fitted), measured, sub)

