"""How often the explorer's gated neighbour estimates are right, and how often they abstain.

The app's Search page gives a class, z, Teff, log g and [Fe/H] only when enough close
neighbours agree (:func:`spectok_core.explore.gated_estimates`). Here the same rule is
run on the corpus's test spectra, with the loaded train spectra as the "index": for each
test spectrum its k nearest train spectra by cosine similarity of the frozen embeddings,
then the gates. Scored per quantity and per origin (real / simulated):

* answered: the share where the gates let an estimate through (1 − abstention rate);
* right when answered: class equal to the catalogue class; z within 0.02 (1 + z);
  Teff within 5 %; log g within 0.3 dex; [Fe/H] within 0.25 dex (the agreement
  tolerances of the gates, :data:`spectok_core.explore.AGREE`);
* ungated right: the same score for the plain neighbour median (every test spectrum).

z is scored on galaxies and quasars, the stellar labels on stars.

The S/N gate is not applied (the corpus table holds no per-spectrum S/N).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .report import Section, Table

K = 10
#: Test spectra scored per origin at most (the neighbour search is brute force).
MAX_TEST = 5000
QUANTITIES = ("class", "z", "teff", "logg", "feh")


def _right(key: str, estimate, truth) -> bool:
    from ..explore import AGREE

    if key == "class":
        return str(estimate) == str(truth)
    scale = 1.0 + float(truth) if key == "z" else abs(float(truth)) if key == "teff" else 1.0
    return abs(float(estimate) - float(truth)) <= AGREE[key] * scale


def score(table: pd.DataFrame, embeddings: np.ndarray, reference: np.ndarray, test: np.ndarray,
          k: int = K) -> pd.DataFrame:
    """One row per (test spectrum, quantity with a true value): gated and plain estimates."""
    from ..explore import gated_estimates, neighbour_estimates

    columns = [c for c in ("class", "z", "teff", "logg", "feh") if c in table]
    ref_meta = table.iloc[reference][columns].reset_index(drop=True)
    ref_emb = embeddings[reference]
    rows = []
    for start in range(0, len(test), 512):
        chunk = test[start:start + 512]
        sims = embeddings[chunk] @ ref_emb.T
        top = np.argsort(-sims, axis=1)[:, :k]
        for i, row in enumerate(chunk):
            hits = ref_meta.iloc[top[i]].reset_index(drop=True)
            hits.insert(0, "similarity", sims[i, top[i]])
            gated, plain = gated_estimates(hits), neighbour_estimates(hits)
            true_class = str(table["class"].iloc[row]) if "class" in table else ""
            for key in columns:
                # z is scored on galaxies and quasars, stellar labels on stars (as the gates give them)
                if (key == "z" and true_class == "STAR") or \
                        (key in ("teff", "logg", "feh") and true_class in ("GALAXY", "QSO")):
                    continue
                truth = table[key].iloc[row]
                if truth is None or (isinstance(truth, float) and not np.isfinite(truth)) or \
                        (key == "class" and str(truth) in ("", "None", "nan")):
                    continue
                est, flat = gated.get(key), plain.get(key)
                answered = est is not None and est.reliable and est.value is not None
                rows.append({
                    "quantity": key, "origin": table["origin"].iloc[row],
                    "answered": answered,
                    "right": answered and _right(key, est.value, truth),
                    "plain_right": flat is not None and flat.value is not None
                    and _right(key, flat.value, truth),
                })
    return pd.DataFrame(rows, columns=["quantity", "origin", "answered", "right", "plain_right"])


def gated_estimates_section(run) -> Section:
    """Section of `spectok eval`: the gated estimates' accuracy and abstention."""
    from ..explore import MIN_AGREEING, MIN_CLASS_SHARE, MIN_SIMILARITY

    start = time.time()
    section = Section("gated", "Gated neighbour estimates: right when answered, and abstentions")
    ctx = run.ctx
    table = ctx.table
    has = ctx.has_embedding
    split = table["split"].to_numpy()
    reference = np.flatnonzero(has & (split == "train"))
    test_all = np.flatnonzero(has & (split == "test"))
    if len(reference) < K or not len(test_all):
        section.text.append("Skipped: too few embedded train or test spectra in this run.")
        section.seconds = time.time() - start
        return section
    rng = np.random.default_rng(run.cfg.seed)
    origin = table["origin"].to_numpy()
    test = np.concatenate([
        rng.permutation(part)[:MAX_TEST] for part in
        (test_all[origin[test_all] == o] for o in np.unique(origin[test_all]))])
    scored = score(table, ctx.embeddings, reference, np.sort(test))
    section.text.append(
        f"The explorer's rule (neighbours with similarity ≥ {MIN_SIMILARITY:g} count; ≥ "
        f"{MIN_AGREEING} must agree; class share ≥ {MIN_CLASS_SHARE:g}; spread limits) on "
        f"{len(test):,} test spectra, with the {len(reference):,} embedded train spectra as the "
        f"index and k = {K}. *answered*: share of test spectra given an estimate; *right*: share "
        "of the answered ones within tolerance (class equal; z within 0.02 (1 + z); Teff within "
        "5 %; log g 0.3 dex; [Fe/H] 0.25 dex); *ungated right*: the plain neighbour median on "
        "all of them. Real and simulated spectra are scored separately; no S/N gate here.")
    out = Table(["quantity", "data", "N test", "answered", "right when answered", "ungated right"],
                formats={"answered": "{:.2f}", "right when answered": "{:.2f}",
                         "ungated right": "{:.2f}"})
    for (key, data), group in scored.groupby(["quantity", "origin"], sort=True):
        answered = group["answered"].to_numpy(bool)
        out.add(**{"quantity": key, "data": data, "N test": len(group),
                   "answered": float(answered.mean()),
                   "right when answered": float(group["right"].to_numpy(bool)[answered].mean())
                   if answered.any() else float("nan"),
                   "ungated right": float(group["plain_right"].mean())})
    out.rows.sort(key=lambda r: (QUANTITIES.index(r["quantity"]) if r["quantity"] in QUANTITIES
                                 else 99, r["data"]))
    section.tables.append(out)
    section.seconds = time.time() - start
    return section
