"""Pure metric functions for the evaluation report (numpy in, floats out).

Kept free of models and files so each can be checked on hand-made cases.
Conventions follow the literature the report quotes: robust scatter is
1.4826 x the median absolute deviation (equal to the standard deviation for a
Gaussian), redshift errors are scaled by (1 + z) and an outlier is
|Δz|/(1+z) > 0.15 (the usual photometric/spectroscopic-redshift definitions).
"""

from __future__ import annotations

import re

import numpy as np

NMAD = 1.4826  # MAD -> sigma for a Gaussian


def _finite_pairs(pred, true) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).ravel()
    true = np.asarray(true, dtype=np.float64).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"prediction and truth differ in length ({pred.size} vs {true.size})")
    keep = np.isfinite(pred) & np.isfinite(true)
    return pred[keep], true[keep]


def median_abs_error(pred, true) -> float:
    """median |pred - true| (the 'median absolute deviation' quoted for label probes)."""
    pred, true = _finite_pairs(pred, true)
    return float(np.median(np.abs(pred - true))) if pred.size else float("nan")


def robust_scatter(residuals) -> float:
    """1.4826 * median(|r - median(r)|): a standard deviation that ignores outliers."""
    r = np.asarray(residuals, dtype=np.float64).ravel()
    r = r[np.isfinite(r)]
    if not r.size:
        return float("nan")
    return float(NMAD * np.median(np.abs(r - np.median(r))))


def bias(pred, true) -> float:
    """median(pred - true)."""
    pred, true = _finite_pairs(pred, true)
    return float(np.median(pred - true)) if pred.size else float("nan")


def sigma_nmad(z_pred, z_true) -> float:
    """1.4826 * median(|Δz - median(Δz)| / (1 + z_true)), Δz = z_pred - z_true."""
    z_pred, z_true = _finite_pairs(z_pred, z_true)
    if not z_pred.size:
        return float("nan")
    dz = z_pred - z_true
    return float(NMAD * np.median(np.abs(dz - np.median(dz)) / (1.0 + z_true)))


def outlier_fraction(z_pred, z_true, threshold: float = 0.15) -> float:
    """Share of objects with |Δz| / (1 + z_true) > threshold."""
    z_pred, z_true = _finite_pairs(z_pred, z_true)
    if not z_pred.size:
        return float("nan")
    return float(np.mean(np.abs(z_pred - z_true) / (1.0 + z_true) > threshold))


def accuracy(pred, true) -> float:
    pred, true = np.asarray(pred), np.asarray(true)
    return float(np.mean(pred == true)) if pred.size else float("nan")


def retrieval_ranks(similarity: np.ndarray, match: np.ndarray) -> np.ndarray:
    """1-based rank of each query's true partner in its row of ``similarity``.

    ``similarity`` is (n_query, n_gallery); ``match`` is (n_query, n_gallery)
    bool (True where the gallery item is the same object) or an index array
    (n_query,). With several partners the best-placed one counts. Ties count
    against the model (rank = number of gallery items at least as similar as
    the partner), so a collapsed embedding that scores everything equally gets
    the worst rank, not the best.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2:
        raise ValueError("similarity must be a (n_query, n_gallery) matrix")
    match = np.asarray(match)
    if match.ndim == 1:
        index = match.astype(np.int64)
        match = np.zeros(similarity.shape, dtype=bool)
        match[np.arange(len(index)), index] = True
    if match.shape != similarity.shape:
        raise ValueError("match must have the shape of similarity")
    if not match.any(axis=1).all():
        raise ValueError("every query needs at least one true partner in the gallery")
    best = np.where(match, similarity, -np.inf).max(axis=1)
    # Non-partners at least as similar as the best partner, plus the partner itself.
    return (np.where(match, -np.inf, similarity) >= best[:, None]).sum(axis=1) + 1


def recall_at_k(ranks, k: int) -> float:
    """Share of queries whose partner is within the first ``k``."""
    ranks = np.asarray(ranks)
    return float(np.mean(ranks <= k)) if ranks.size else float("nan")


def median_rank(ranks) -> float:
    ranks = np.asarray(ranks, dtype=np.float64)
    return float(np.median(ranks)) if ranks.size else float("nan")


# -- spectral subtypes ------------------------------------------------------------------------

SUBTYPE_OFFSET = {"M": 0.0, "L": 10.0, "T": 20.0}
# Optional metallicity / gravity prefixes (sd, esd, usd, d/sd), then the class
# letter and a subtype 0-9.5; a two-digit number ("M10+") is not a subtype.
_SUBTYPE = re.compile(r"^\s*(?:(?:[eu]?sd|d)/?)*([MLT])\s*(\d(?:\.\d+)?)(?![\d.])")


def parse_subtype(text) -> float | None:
    """'M8' -> 8, 'L4.5' -> 14.5, 'T2 pec' -> 22, 'sdM7' -> 7; None when unparseable.

    Numbers: M0 = 0 ... M9 = 9, L0 = 10 ... T9 = 29. Suffixes (pec, gamma,
    beta, ':', luminosity class) are ignored; types without a numeric subtype
    ('M', 'mid M'), other classes ('C', 'WD?', 'DC 10') and 'galaxy' give None.
    """
    if text is None or not isinstance(text, str):
        return None
    found = _SUBTYPE.match(text)
    if not found:
        return None
    value = SUBTYPE_OFFSET[found.group(1)] + float(found.group(2))
    return value if value < SUBTYPE_OFFSET[found.group(1)] + 10.0 else None


def format_subtype(value: float) -> str:
    """Inverse of :func:`parse_subtype` for axis labels: 14.5 -> 'L4.5'."""
    letter = "MLT"[int(np.clip(value // 10, 0, 2))]
    rest = value - SUBTYPE_OFFSET[letter]
    return f"{letter}{rest:g}"
