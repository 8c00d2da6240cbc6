"""Survey invariance: can a linear probe tell which instrument observed a spectrum from its embedding?

On simulated observations of the same sources through several instruments, a
multinomial logistic regression is trained to predict the instrument from the
embedding, with folds split by object (one source never sits in both the
probe's train and test folds). In a space that describes the object, the
instrument should be hard to read off: lower accuracy is better, and the
chance level (the largest instrument's share) is printed beside it.

Only objects observed by at least two instruments of a scope are used, so the
probe cannot win by recognising which objects an instrument happens to see.
"""

from __future__ import annotations

import time

import numpy as np

from .report import Section, Table

#: The optical instruments whose ranges overlap (the hardest to tell apart by coverage).
OPTICAL = ("sdss", "boss", "desi", "lamost_lrs")
MAX_PER_INSTRUMENT = 1500


def instrument_probe(embeddings: np.ndarray, instruments: np.ndarray, groups: np.ndarray,
                     n_folds: int = 5, seed: int = 0) -> tuple[float, float]:
    """(cross-validated accuracy of predicting ``instruments`` linearly, chance level).

    Folds are split by ``groups`` (object ids). Embeddings are standardised inside
    each fold. Chance is the largest class's share.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    instruments = np.asarray(instruments).astype(str)
    classes, counts = np.unique(instruments, return_counts=True)
    if len(classes) < 2:
        raise ValueError("the probe needs spectra from at least two instruments")
    n_folds = int(min(n_folds, len(np.unique(groups))))
    right = np.zeros(len(instruments), bool)
    for train, test in GroupKFold(n_splits=n_folds).split(embeddings, instruments, groups):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=1.0))
        probe.fit(embeddings[train], instruments[train])
        right[test] = probe.predict(embeddings[test]) == instruments[test]
    return float(right.mean()), float(counts.max() / counts.sum())


def shared_objects(rows_by_instrument: dict[str, np.ndarray], ids_by_instrument: dict[str, np.ndarray],
                   cap: int = MAX_PER_INSTRUMENT, seed: int = 0):
    """Rows, instrument names and object ids of objects seen by at least two of the instruments."""
    seen: dict[str, int] = {}
    for ids in ids_by_instrument.values():
        for object_id in set(ids.tolist()):
            seen[object_id] = seen.get(object_id, 0) + 1
    shared = {k for k, v in seen.items() if v >= 2}
    rng = np.random.default_rng(seed)
    rows, names, groups = [], [], []
    for name, instrument_rows in sorted(rows_by_instrument.items()):
        ids = ids_by_instrument[name]
        keep = np.flatnonzero(np.isin(ids, list(shared)))
        if len(keep) > cap:
            keep = np.sort(rng.choice(keep, cap, replace=False))
        rows.append(instrument_rows[keep])
        names.extend([name] * len(keep))
        groups.extend(ids[keep].tolist())
    return np.concatenate(rows) if rows else np.array([], int), np.array(names), np.array(groups)


def survey_invariance(run) -> Section:
    section = Section("invariance", "Survey invariance: the instrument read off the embedding (simulated)")
    start = time.time()
    ctx = run.ctx
    tests = {k.split("/")[0]: v for k, v in run.plan["test"].items() if k.endswith("/sim") and len(v)}
    ids = {k: ctx.table["object_id"].to_numpy()[v].astype(str) for k, v in tests.items()}
    section.text.append(
        "A linear probe (logistic regression on the standardised embedding, 5 folds split by object) "
        "predicts which instrument observed each simulated test spectrum. Only sources observed by at "
        "least two instruments of the scope are used (at most "
        f"{MAX_PER_INSTRUMENT:,} spectra per instrument). In a shared space the instrument is hard to "
        "read off: **lower is better**; chance is the largest instrument's share. The flux itself "
        "always reveals the instrument (its grid does), so no flux baseline is shown.")
    table = Table(["scope", "instruments", "spectra", "objects", "probe accuracy", "chance"],
                  formats={"probe accuracy": "{:.3f}", "chance": "{:.3f}"})
    scopes = {"optical (overlapping ranges)": [k for k in OPTICAL if k in tests],
              "all instruments": sorted(tests)}
    for scope, names in scopes.items():
        if len(names) < 2:
            continue
        rows, instruments, groups = shared_objects({k: tests[k] for k in names}, {k: ids[k] for k in names},
                                                   seed=run.cfg.seed)
        present = sorted(set(instruments.tolist()))
        if len(present) < 2 or len(np.unique(groups)) < 5:
            continue
        accuracy, chance = instrument_probe(ctx.embed(rows), instruments, groups, seed=run.cfg.seed)
        table.rows.append({"scope": scope, "instruments": ", ".join(present), "spectra": len(rows),
                           "objects": len(np.unique(groups)), "probe accuracy": accuracy, "chance": chance})
    if not table.rows:
        section.text.append("*Skipped: no two instruments share enough simulated test sources.*")
    else:
        section.tables.append(table)
    section.seconds = time.time() - start
    return section
