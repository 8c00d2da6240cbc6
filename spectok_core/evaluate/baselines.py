"""Baselines on a common resampled grid, run on the same rows as the model's probes.

What a careful astronomer would do without a universal model: resample every
spectrum of a task onto one log-λ grid (the range all the task's spectra
share), divide each by its median, and then

* PCA (fitted on the training rows) + the same kNN / ridge / logistic probes,
* kNN directly on the resampled flux,
* a small supervised network (sklearn MLP) on the resampled flux: the
  specialist trained for that one task, the reference a frozen embedding with
  a light probe is up against.

A common grid needs a common wavelength range: where the task's surveys do not
overlap (APOGEE's H band against any optical survey) these baselines cannot run
and the report says N/A rather than inventing a number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import probes
from .data import GRID_EDGES, EvalCorpus

MAX_FEATURES = 1000  # resampled pixels fed to PCA / kNN / MLP (adjacent bins averaged beyond)
MIN_BINS = 60  # a common range narrower than this (~4 % in λ) is no common grid
COVERAGE_PERCENTILE = 2.0  # ignore the 2 % of spectra with the oddest ranges when choosing it
N_COMPONENTS = 32


@dataclass(frozen=True)
class Grid:
    """A task's common grid: a slice of the evaluation grid, maybe averaged in blocks."""

    columns: slice
    bin_factor: int

    @property
    def wave_range(self) -> tuple[float, float]:
        return float(GRID_EDGES[self.columns.start]), float(GRID_EDGES[self.columns.stop])

    @property
    def n_pixels(self) -> int:
        return (self.columns.stop - self.columns.start) // self.bin_factor

    def describe(self) -> str:
        lo, hi = self.wave_range
        return f"{lo:.0f}-{hi:.0f} Å, {self.n_pixels} px"


def row_range(ctx: EvalCorpus, rows: np.ndarray) -> tuple[int, int]:
    """The grid bins covered by (nearly) all ``rows``."""
    starts, ends = ctx.coverage(rows)
    return (int(np.ceil(np.percentile(starts, 100 - COVERAGE_PERCENTILE))),
            int(np.floor(np.percentile(ends, COVERAGE_PERCENTILE))))


def common_grid(ctx: EvalCorpus, *groups: np.ndarray, max_features: int = MAX_FEATURES) -> Grid | None:
    """The grid every group shares (groups: row sets, e.g. one per survey), or None.

    Adjacent bins are averaged so that at most ``max_features`` pixels remain.
    """
    groups = [g for g in groups if len(g)]
    if not groups:
        return None
    ranges = [row_range(ctx, g) for g in groups]
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if hi - lo < MIN_BINS:
        return None
    return Grid(slice(lo, hi), int(np.ceil((hi - lo) / max_features)))


def describe_ranges(ctx: EvalCorpus, groups: dict[str, np.ndarray]) -> str:
    parts = []
    for name, rows in groups.items():
        lo, hi = row_range(ctx, rows)
        parts.append(f"{name} {GRID_EDGES[lo]:.0f}-{GRID_EDGES[max(hi, lo)]:.0f} Å")
    return "; ".join(parts)


def flux(ctx: EvalCorpus, grid: Grid, rows: np.ndarray) -> np.ndarray:
    return ctx.flux(rows, grid.columns, grid.bin_factor)


METHODS_REGRESSION = ("PCA + kNN", "PCA + ridge", "flux kNN", "MLP on flux")
METHODS_CLASSIFICATION = ("PCA + kNN", "PCA + logistic", "flux kNN", "MLP on flux")


def _inputs(ctx: EvalCorpus, grid: Grid, train, test, val, seed: int):
    """Resampled flux (train, test, val) and its PCA projection, fitted on train only."""
    x_train, x_test = flux(ctx, grid, train), flux(ctx, grid, test)
    x_val = flux(ctx, grid, val) if val is not None and len(val) else None
    projected = probes.pca(x_train, x_test, *([x_val] if x_val is not None else []),
                           n_components=N_COMPONENTS, seed=seed)
    p_val = projected[2] if x_val is not None else None
    return (x_train, x_test, x_val), (projected[0], projected[1], p_val)


def regression(ctx: EvalCorpus, grid: Grid, train, test, y_train, val=None, y_val=None,
               mlp_iter: int = 200, seed: int = 0, mlp_max_train: int | None = None) -> dict[str, np.ndarray]:
    """Predictions of every baseline for a regression task."""
    (x_train, x_test, x_val), (p_train, p_test, p_val) = _inputs(ctx, grid, train, test, val, seed)
    return {
        "PCA + kNN": probes.regress("knn", p_train, y_train, p_test, p_val, y_val),
        "PCA + ridge": probes.regress("ridge", p_train, y_train, p_test, p_val, y_val),
        "flux kNN": probes.regress("knn", x_train, y_train, x_test, x_val, y_val),
        "MLP on flux": probes.regress("mlp", x_train, y_train, x_test, x_val, y_val,
                                      mlp_iter=mlp_iter, seed=seed, max_rows=mlp_max_train),
    }


def classification(ctx: EvalCorpus, grid: Grid, train, test, y_train, val=None, y_val=None,
                   mlp_iter: int = 200, seed: int = 0, mlp_max_train: int | None = None) -> dict[str, np.ndarray]:
    """Predicted classes of every baseline for a classification task."""
    (x_train, x_test, x_val), (p_train, p_test, p_val) = _inputs(ctx, grid, train, test, val, seed)
    return {
        "PCA + kNN": probes.classify("knn", p_train, y_train, p_test, p_val, y_val),
        "PCA + logistic": probes.classify("logistic", p_train, y_train, p_test, p_val, y_val),
        "flux kNN": probes.classify("knn", x_train, y_train, x_test, x_val, y_val),
        "MLP on flux": probes.classify("mlp", x_train, y_train, x_test, x_val, y_val,
                                       mlp_iter=mlp_iter, seed=seed, max_rows=mlp_max_train),
    }


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def similarity(ctx: EvalCorpus, grid: Grid, query, gallery, seed: int = 0) -> dict[str, np.ndarray]:
    """Query x gallery similarity matrices of the retrieval baselines.

    'flux' is the correlation of the median-normalised resampled flux; 'PCA'
    the cosine in a 32-component PCA space fitted (without labels) on both sets.
    """
    x_query, x_gallery = flux(ctx, grid, query), flux(ctx, grid, gallery)
    both = np.concatenate([x_query, x_gallery])
    _, p_query, p_gallery = probes.pca(both, x_query, x_gallery, n_components=N_COMPONENTS, seed=seed)
    return {
        "PCA cosine": _cosine(p_query, p_gallery),
        "flux correlation": _unit_rows(x_query) @ _unit_rows(x_gallery).T,
    }


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T
