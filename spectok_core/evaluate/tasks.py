"""The evaluation tasks: each takes the loaded corpus and returns one report Section.

Every probe reads FROZEN embeddings; probes are fitted on the train split
(hyperparameters chosen on val) and scored on the test split, except for the
small stellar libraries (MILES, STELIB), which are cross-validated in folds
grouped by star. Baselines run on exactly the same rows (see baselines.py).
Which numbers come from real spectra and which from simulated observations is
written in every table row.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import baselines, metrics, probes
from .data import EvalCorpus, draw, finite
from .report import FigureSink, Headline, Section, Table

LABEL_NAMES = {"teff": "Teff", "logg": "logg", "feh": "[Fe/H]", "alpha_m": "[α/M]", "subtype": "subtype"}
LABEL_FORMATS = {"teff": "{:.0f}", "subtype": "{:.2f}"}
XP_LABELS = ("teff", "logg", "feh", "alpha_m")
LIBRARY_LABELS = ("teff", "logg", "feh")
TRANSFER_LABELS = ("teff", "feh")
CLASSES = ("STAR", "GALAXY", "QSO")
SPECTOK_PREFIX = "spectok"
REFERENCE_XP = ("Leung & Bovy 2024 (published; XP coefficients → APOGEE)",
                {"teff": 47.0, "logg": 0.11, "feh": 0.07})


@dataclass
class EvalConfig:
    """Caps on how many spectra each part reads, so a full run fits in 30 min on 2 cores."""

    max_train: int = 20_000  # Gaia XP and SpeX training rows
    max_val: int = 2_000
    max_test: int | None = None  # Gaia XP / SpeX test rows (None: all)
    max_train_per_instrument: int = 1_000  # simulated classification and redshift
    max_val_per_instrument: int = 300
    max_test_per_instrument: int | None = None  # retrieval galleries and class tests
    n_reconstruct: int = 20  # spectra per instrument for the χ² table
    n_folds: int = 5
    min_pairs: int = 10  # same-object pairs needed to report an instrument pair
    mlp_iter: int = 100  # epochs at most (early stopping on a held-out tenth)
    mlp_max_train: int = 8_000  # rows the MLP specialist trains on (sklearn, CPU)
    max_features: int = 1000  # resampled pixels per spectrum for the baselines
    seed: int = 0

    @classmethod
    def quick(cls) -> EvalConfig:
        return cls(max_train=1_500, max_val=300, max_test=400, max_train_per_instrument=300,
                   max_val_per_instrument=100, max_test_per_instrument=300, n_reconstruct=4,
                   n_folds=3, min_pairs=5, mlp_iter=60, max_features=500)


@dataclass
class Run:
    ctx: EvalCorpus
    cfg: EvalConfig
    figures: FigureSink
    plan: dict = field(default_factory=dict)


# -- planning: which rows each task reads -------------------------------------------------------


def _splits(ctx: EvalCorpus, rows: np.ndarray, caps: tuple, seed: int) -> tuple[np.ndarray, ...]:
    split = ctx.table["split"].to_numpy()[rows]
    ids = ctx.table["object_id"].to_numpy()[rows]
    return tuple(draw(rows[split == name], cap, seed, ids[split == name])
                 for name, cap in zip(("train", "val", "test"), caps))


def star_key(name) -> str:
    """'HD 002857' and 'HD2857' are one star (MILES and STELIB spell names differently)."""
    text = re.sub(r"\s+", "", str(name).upper())
    return re.sub(r"(?<=\D)0+(?=\d)", "", text)


def make_plan(ctx: EvalCorpus, cfg: EvalConfig) -> dict:
    """Rows per task (train, val, test triples or plain arrays); their union is what gets read."""
    t, seed = ctx.table, cfg.seed
    plan: dict = {}
    xp = finite(t, ctx.select(instrument="gaia_xp/real"), XP_LABELS)
    plan["gaia_xp"] = _splits(ctx, xp, (cfg.max_train, cfg.max_val, cfg.max_test), seed)
    for library in ("miles", "stelib"):
        plan[library] = finite(t, ctx.select(instrument=f"{library}/real"), LIBRARY_LABELS)
    spex = ctx.select(instrument="spex/real")
    spex = spex[[metrics.parse_subtype(v) is not None for v in t["spectral_type"].to_numpy()[spex]]]
    plan["spex"] = _splits(ctx, spex, (cfg.max_train, cfg.max_val, cfg.max_test), seed)
    classes = {}
    for instrument in sorted(t["instrument"].unique()):
        if not instrument.endswith("/sim"):
            continue
        rows = ctx.select(instrument=instrument, **{"class": list(CLASSES)})
        if np.unique(t["class"].to_numpy()[rows]).size >= 2:
            classes[instrument] = _splits(ctx, rows, (cfg.max_train_per_instrument,
                                                      cfg.max_val_per_instrument,
                                                      cfg.max_test_per_instrument), seed)
    plan["classes"] = classes
    plan["test"] = {
        instrument: ctx.select(split="test", cap=cfg.max_test_per_instrument, seed=seed,
                               instrument=instrument)
        for instrument in sorted(t["instrument"].unique())
    }
    if cfg.max_test is not None or cfg.max_test_per_instrument is not None:
        plan["test"]["gaia_xp/real"] = plan["gaia_xp"][2]
    return plan


def plan_rows(plan: dict) -> np.ndarray:
    arrays = []

    def walk(item):
        if isinstance(item, np.ndarray):
            arrays.append(item)
        elif isinstance(item, dict):
            for value in item.values():
                walk(value)
        elif isinstance(item, (tuple, list)):
            for value in item:
                walk(value)

    walk(plan)
    return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, np.int64)


def keep_loaded(ctx: EvalCorpus, plan):
    """The plan with rows that could not be read removed."""
    if isinstance(plan, np.ndarray):
        return ctx.loaded(plan)
    if isinstance(plan, dict):
        return {k: keep_loaded(ctx, v) for k, v in plan.items()}
    if isinstance(plan, tuple):
        return tuple(keep_loaded(ctx, v) for v in plan)
    return plan


# -- shared helpers ---------------------------------------------------------------------------------


def targets(ctx: EvalCorpus, rows: np.ndarray, keys) -> np.ndarray:
    """Labels as probe targets: Teff as log10 (it spans a factor of ten in the libraries)."""
    values = np.array(ctx.table.loc[rows, list(keys)].apply(pd.to_numeric, errors="coerce"), dtype=float)
    for j, key in enumerate(keys):
        if key == "teff":
            values[:, j] = np.log10(values[:, j])
    return values


def from_targets(values: np.ndarray, keys) -> np.ndarray:
    values = np.array(values, dtype=float)
    for j, key in enumerate(keys):
        if key == "teff":
            values[:, j] = 10.0 ** values[:, j]
    return values


def truth(ctx: EvalCorpus, rows: np.ndarray, keys) -> np.ndarray:
    return from_targets(targets(ctx, rows, keys), keys)


def spectok_regression(run: Run, train, test, y_train, val=None, y_val=None) -> dict[str, np.ndarray]:
    e = run.ctx.embed
    x_val = e(val) if val is not None and len(val) else None
    return {f"{SPECTOK_PREFIX} {probes.DISPLAY[kind]}": probes.regress(kind, e(train), y_train, e(test), x_val, y_val,
                                                       seed=run.cfg.seed)
            for kind in probes.REGRESSORS}


def spectok_classification(run: Run, train, test, y_train, val=None, y_val=None) -> dict[str, np.ndarray]:
    e = run.ctx.embed
    x_val = e(val) if val is not None and len(val) else None
    return {f"{SPECTOK_PREFIX} {probes.DISPLAY[kind]}": probes.classify(kind, e(train), y_train, e(test), x_val, y_val,
                                                        seed=run.cfg.seed)
            for kind in probes.CLASSIFIERS}


def all_regression(run: Run, train, test, y_train, val=None, y_val=None, grid_groups=None):
    """spectok probes plus every baseline (when a common grid exists); returns (preds, grid)."""
    preds = spectok_regression(run, train, test, y_train, val, y_val)
    groups = grid_groups if grid_groups is not None else [train, test]
    grid = baselines.common_grid(run.ctx, *groups, max_features=run.cfg.max_features)
    if grid is not None and len(train) >= 3:
        preds.update(baselines.regression(run.ctx, grid, train, test, y_train, val, y_val,
                                          mlp_iter=run.cfg.mlp_iter, seed=run.cfg.seed,
                                          mlp_max_train=run.cfg.mlp_max_train))
    return preds, grid


def regression_table(preds: dict, true: np.ndarray, keys, data: str, first: dict | None = None,
                     first_columns: tuple = ()) -> Table:
    columns = list(first_columns) + ["method", "data"]
    for key in keys:
        columns += [f"{LABEL_NAMES[key]} MAE", f"{LABEL_NAMES[key]} σ"]
    columns.append("N")
    table = Table(columns)
    for key in keys:
        fmt = LABEL_FORMATS.get(key, "{:.3f}")
        table.formats[f"{LABEL_NAMES[key]} MAE"] = fmt
        table.formats[f"{LABEL_NAMES[key]} σ"] = fmt
    for method, pred in preds.items():
        row = {**(first or {}), "method": method, "data": data, "N": int(len(true))}
        for j, key in enumerate(keys):
            row[f"{LABEL_NAMES[key]} MAE"] = metrics.median_abs_error(pred[:, j], true[:, j])
            row[f"{LABEL_NAMES[key]} σ"] = metrics.robust_scatter(pred[:, j] - true[:, j])
        table.rows.append(row)
    return table


def headline(task: str, metric: str, data: str, scores: dict[str, float], lower: bool = True,
             note: str = "", baseline_possible: bool = True) -> Headline:
    """The best spectok probe against the best common-grid baseline and the MLP."""
    pick = min if lower else max

    def best(names):
        names = [n for n in names if n in scores and np.isfinite(scores[n])]
        return (pick(names, key=lambda n: scores[n]) if names else None)

    ours = best([n for n in scores if n.startswith(SPECTOK_PREFIX)])
    theirs = best([n for n in scores if not n.startswith(SPECTOK_PREFIX) and n != "MLP on flux"])
    return Headline(
        task=task, metric=metric, data=data,
        spectok=scores[ours] if ours else float("nan"),
        baseline=scores[theirs] if theirs else (None if not baseline_possible else float("nan")),
        baseline_name=theirs or "",
        specialist=scores.get("MLP on flux"), lower_is_better=lower, note=note,
    )


def grid_note(grid) -> str:
    return f"common grid {grid.describe()}" if grid is not None else "no common grid: baselines N/A"


def scatter_figure(run: Run, name: str, title: str, true: np.ndarray, pred: np.ndarray, keys,
                   method: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.3), squeeze=False, layout="constrained")
    for j, key in enumerate(keys):
        ax = axes[0, j]
        ok = np.isfinite(true[:, j]) & np.isfinite(pred[:, j])
        ax.scatter(true[ok, j], pred[ok, j], s=4, alpha=0.4, color="tab:blue", rasterized=True)
        if ok.any():
            lo, hi = np.percentile(np.concatenate([true[ok, j], pred[ok, j]]), [0.5, 99.5])
            ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
        ax.set_xlabel(f"true {LABEL_NAMES[key]}")
        ax.set_ylabel(f"predicted {LABEL_NAMES[key]}")
    fig.suptitle(f"{title} — {method}", fontsize=10)
    return run.figures.save(fig, name)


def _mae_scores(preds: dict, true: np.ndarray, j: int) -> dict[str, float]:
    return {m: metrics.median_abs_error(p[:, j], true[:, j]) for m, p in preds.items()}


def _best_spectok(scores: dict[str, float]) -> str:
    names = [n for n in scores if n.startswith(SPECTOK_PREFIX) and np.isfinite(scores[n])]
    return min(names, key=lambda n: scores[n]) if names else next(iter(scores))


def _section(key: str, title: str):
    return Section(key, title), time.time()


def _skip(section: Section, start: float, why: str) -> Section:
    section.text.append(f"*Skipped: {why}.*")
    section.seconds = time.time() - start
    return section


# -- 1. Gaia XP -> APOGEE labels (real) ------------------------------------------------------------


def gaia_xp_labels(run: Run) -> Section:
    section, start = _section("gaia_xp", "1. Gaia XP: APOGEE stellar labels (real)")
    train, val, test = run.plan["gaia_xp"]
    if len(train) < 5 or len(test) < 2:
        return _skip(section, start, f"too few labelled Gaia XP spectra (train {len(train)}, test {len(test)})")
    keys = XP_LABELS
    y_train, y_val = targets(run.ctx, train, keys), targets(run.ctx, val, keys)
    preds, grid = all_regression(run, train, test, y_train, val, y_val)
    preds = {m: from_targets(p, keys) for m, p in preds.items()}
    true = truth(run.ctx, test, keys)
    table = regression_table(preds, true, keys, "real")
    name, reference = REFERENCE_XP
    table.add(**{"method": name, "data": "real (published)",
                 **{f"{LABEL_NAMES[k]} MAE": v for k, v in reference.items()}})
    section.text.append(
        f"Real Gaia DR3 XP spectra with APOGEE DR17 labels. Probes fitted on {len(train):,} train "
        f"(+{len(val):,} val) spectra, scored on {len(test):,} test spectra (train capped at "
        f"{run.cfg.max_train:,}). MAE = median |predicted − true|; σ = 1.4826 × MAD of the residuals. "
        f"Baselines: {grid_note(grid)}. Reference: Leung & Bovy 2024 report about 47 K / 0.11 / "
        "0.07 dex in Teff / logg / [M/H] from XP spectra (their [M/H] is compared with our [Fe/H]).")
    section.tables.append(table)
    for j, key in enumerate(keys):
        section.headlines.append(headline("Gaia XP labels", f"{LABEL_NAMES[key]} MAE", "real",
                                          _mae_scores(preds, true, j)))
    best = _best_spectok(_mae_scores(preds, true, 0))
    section.figures.append((scatter_figure(run, "gaia_xp_labels", "Gaia XP test (real)", true,
                                           preds[best], keys, best),
                            f"Gaia XP test spectra (real): {best} predictions against APOGEE labels"))
    section.seconds = time.time() - start
    return section


# -- 2. MILES and STELIB, cross-validated (real) ------------------------------------------------------


def library_labels(run: Run) -> Section:
    from sklearn.model_selection import GroupKFold

    section, start = _section("libraries", "2. MILES and STELIB: Teff, logg, [Fe/H] (real, k-fold)")
    keys = LIBRARY_LABELS
    section.text.append(
        f"The libraries are small, so every labelled spectrum is predicted once in a "
        f"{run.cfg.n_folds}-fold cross-validation, folds grouped by star (a star observed twice "
        "never sits on both sides). Fixed probe settings (k = 10, ridge α = 1): no validation rows.")
    for library in ("miles", "stelib"):
        rows = run.plan[library]
        groups = [star_key(n) if n is not None and str(n) not in ("", "nan", "None") else str(o)
                  for n, o in zip(run.ctx.table.loc[rows, "star_name"], run.ctx.table.loc[rows, "object_id"])]
        n_folds = min(run.cfg.n_folds, len(set(groups)))
        if n_folds < 2:
            section.text.append(f"*{library.upper()}: skipped, {len(rows)} labelled spectra.*")
            continue
        y = targets(run.ctx, rows, keys)
        preds: dict[str, np.ndarray] = {}
        grid = baselines.common_grid(run.ctx, rows, max_features=run.cfg.max_features)
        for fit, score in GroupKFold(n_splits=n_folds).split(rows, groups=groups):
            fold, _ = all_regression(run, rows[fit], rows[score], y[fit], grid_groups=[rows])
            for method, pred in fold.items():
                preds.setdefault(method, np.full(y.shape, np.nan))[score] = pred
        preds = {m: from_targets(p, keys) for m, p in preds.items()}
        true = from_targets(y, keys)
        table = regression_table(preds, true, keys, "real", {"library": library.upper()}, ("library",))
        table.caption = f"**{library.upper()}** ({len(rows):,} spectra; baselines: {grid_note(grid)})"
        section.tables.append(table)
        for j, key in enumerate(keys):
            section.headlines.append(headline(f"{library.upper()} labels (CV)", f"{LABEL_NAMES[key]} MAE",
                                              "real", _mae_scores(preds, true, j)))
        best = _best_spectok(_mae_scores(preds, true, 0))
        section.figures.append((scatter_figure(run, f"{library}_labels", f"{library.upper()} (real, CV)",
                                               true, preds[best], keys, best),
                                f"{library.upper()} (real), out-of-fold {best} predictions"))
    section.seconds = time.time() - start
    return section


# -- 3. SpeX spectral subtypes (real) ---------------------------------------------------------------


def spex_subtypes(run: Run) -> Section:
    section, start = _section("spex", "3. SpeX prism: M/L/T spectral subtype (real)")
    train, val, test = run.plan["spex"]
    if len(train) < 5 or len(test) < 2:
        return _skip(section, start, f"too few SpeX spectra with a parseable type (train {len(train)}, test {len(test)})")

    def subtypes(rows):
        return np.array([[metrics.parse_subtype(v)] for v in run.ctx.table.loc[rows, "spectral_type"]], float)

    preds, grid = all_regression(run, train, test, subtypes(train), val, subtypes(val))
    true = subtypes(test)
    section.text.append(
        "Types as numbers: M0 = 0 … M9 = 9, L0 = 10 … T9 = 29 ('sdM7' → 7, 'L4.5' → 14.5, "
        "'T2 pec' → 22; types without a number are skipped). Train / val / test splits "
        f"({len(train):,} / {len(val):,} / {len(test):,}); baselines: {grid_note(grid)}.")
    section.tables.append(regression_table(preds, true, ("subtype",), "real"))
    section.headlines.append(headline("SpeX subtype", "subtype MAE", "real", _mae_scores(preds, true, 0)))
    best = _best_spectok(_mae_scores(preds, true, 0))
    section.figures.append((scatter_figure(run, "spex_subtypes", "SpeX test (real)", true, preds[best],
                                           ("subtype",), best),
                            f"SpeX test spectra (real): {best} subtype against the catalogue type"))
    section.seconds = time.time() - start
    return section


# -- 4. cross-survey label transfer (real) -----------------------------------------------------------


def _in_range(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    lo, hi = np.nanmin(reference, axis=0), np.nanmax(reference, axis=0)
    return np.all((values >= lo) & (values <= hi), axis=1)


def label_transfer(run: Run) -> Section:
    section, start = _section("transfer", "4. Cross-survey label transfer (real)")
    keys = TRANSFER_LABELS
    ctx = run.ctx
    xp_train, xp_val, xp_test = run.plan["gaia_xp"]
    libraries = {name: run.plan[name] for name in ("miles", "stelib")}
    section.text.append(
        "Probes fitted on one survey's embeddings predict another survey's spectra: Gaia XP "
        "(R ≈ 50, APOGEE labels) → MILES and STELIB (R ≈ 2000, library labels), and MILES + STELIB "
        "→ Gaia XP test. Only an aligned embedding space can do this. Scored on target stars inside "
        "the training set's label range (a kNN cannot extrapolate; N counts them). Baselines "
        "resample both surveys onto their common range — possible here since the ranges overlap, "
        "but nothing in them accounts for the 40× difference in resolution.")
    table = Table(["direction", "method", "data", "Teff MAE", "Teff σ", "[Fe/H] MAE", "[Fe/H] σ", "N"],
                  formats={"Teff MAE": "{:.0f}", "Teff σ": "{:.0f}", "[Fe/H] MAE": "{:.3f}", "[Fe/H] σ": "{:.3f}"})
    directions = []
    if len(xp_train) >= 5:
        source_true = truth(ctx, np.concatenate([xp_train, xp_val]), keys)
        for name, rows in libraries.items():
            rows = rows[_in_range(truth(ctx, rows, keys), source_true)]
            directions.append((f"Gaia XP → {name.upper()}", xp_train, xp_val, rows))
    library_rows = np.concatenate(list(libraries.values()))
    if len(library_rows) >= 5 and len(xp_test):
        rows = xp_test[_in_range(truth(ctx, xp_test, keys), truth(ctx, library_rows, keys))]
        directions.append(("MILES + STELIB → Gaia XP", library_rows, np.zeros(0, np.int64), rows))
    if not directions:
        return _skip(section, start, "needs labelled Gaia XP and MILES / STELIB spectra")
    for direction, train, val, test in directions:
        if len(test) < 2:
            section.text.append(f"*{direction}: skipped, {len(test)} target stars in range.*")
            continue
        y_train, y_val = targets(ctx, train, keys), targets(ctx, val, keys)
        preds, grid = all_regression(run, train, test, y_train, val if len(val) else None,
                                     y_val if len(val) else None, grid_groups=[train, test])
        preds = {m: from_targets(p, keys) for m, p in preds.items()}
        true = truth(ctx, test, keys)
        part = regression_table(preds, true, keys, "real", {"direction": direction}, ("direction",))
        table.rows.extend(part.rows)
        if grid is None:
            table.add(direction=direction, method="baselines", data="real",
                      **{"Teff MAE": "N/A (no common range)"})
        for j, key in enumerate(keys):
            section.headlines.append(headline(f"transfer {direction}", f"{LABEL_NAMES[key]} MAE", "real",
                                              _mae_scores(preds, true, j), baseline_possible=grid is not None))
        best = _best_spectok(_mae_scores(preds, true, 0))
        slug = re.sub(r"[^a-z]+", "_", direction.lower()).strip("_")
        section.figures.append((scatter_figure(run, f"transfer_{slug}", f"{direction} (real)", true,
                                               preds[best], keys, best),
                                f"{direction} (real): {best}"))
    section.tables.append(table)
    section.seconds = time.time() - start
    return section


# -- 5. classification and redshift (simulated) ------------------------------------------------------


def classification_redshift(run: Run) -> Section:
    section, start = _section("classes", "5. Star / galaxy / QSO classification and redshift (simulated)")
    ctx, cfg = run.ctx, run.cfg
    sets = run.plan["classes"]
    if not sets:
        return _skip(section, start, "no simulated instrument with two or more classes")
    section.text.append(
        "Simulated observations of stars, galaxies and quasars through each instrument. One probe "
        "per instrument, plus one pooled over all of them (the universal model reads every grid "
        "natively; the baselines need the instruments' common range). Train capped at "
        f"{cfg.max_train_per_instrument:,} per instrument (+{cfg.max_val_per_instrument:,} val). "
        "Redshift probes are fitted per class on the objects of that class: σ_NMAD = 1.4826 · "
        "median(|Δz − median Δz| / (1 + z)); outliers: |Δz| / (1 + z) > 0.15.")
    accuracy = Table(["instrument", "method", "data", "accuracy", "N test", "baseline grid"],
                     formats={"accuracy": "{:.3f}"})
    redshift = Table(["instrument", "class", "method", "data", "σ_NMAD", "outlier fraction", "N test"],
                     formats={"σ_NMAD": "{:.4f}", "outlier fraction": "{:.3f}"})
    groups = dict(sets)
    if len(sets) > 1:
        groups["all (pooled)"] = tuple(np.concatenate([s[i] for s in sets.values()]) for i in range(3))
    pooled_z: dict[str, dict[str, np.ndarray]] = {}
    for instrument, (train, val, test) in groups.items():
        labels = ctx.table["class"].to_numpy()
        if len(train) < 3 or len(test) < 1:
            continue
        preds = spectok_classification(run, train, test, labels[train], val, labels[val])
        grid_groups = [np.concatenate(s) for s in sets.values()] if instrument == "all (pooled)" else [train, test]
        grid = baselines.common_grid(ctx, *grid_groups, max_features=cfg.max_features)
        if grid is not None:
            preds.update(baselines.classification(ctx, grid, train, test, labels[train], val, labels[val],
                                                  mlp_iter=cfg.mlp_iter, seed=cfg.seed,
                                                  mlp_max_train=cfg.mlp_max_train))
        scores = {m: metrics.accuracy(p, labels[test]) for m, p in preds.items()}
        for method, value in scores.items():
            accuracy.add(instrument=instrument, method=method, data="simulated", accuracy=value,
                         **{"N test": len(test), "baseline grid": grid.describe() if grid else "N/A"})
        if instrument == "all (pooled)" or len(sets) == 1:
            section.headlines.append(headline("classification", f"accuracy, {instrument}", "simulated",
                                              scores, lower=False))
        for cls in ("GALAXY", "QSO"):
            sub = [finite(ctx.table, r[labels[r] == cls], ["z"]) for r in (train, val, test)]
            if len(sub[0]) < 5 or len(sub[2]) < 2:
                continue
            z = ctx.table["z"].to_numpy(float)
            zpreds, zgrid = all_regression(run, sub[0], sub[2], z[sub[0]], sub[1], z[sub[1]],
                                           grid_groups=grid_groups)
            pooled_z.setdefault(cls, {})
            for method, pred in zpreds.items():
                redshift.add(**{"instrument": instrument, "class": cls, "method": method, "data": "simulated",
                                "σ_NMAD": metrics.sigma_nmad(pred[:, 0], z[sub[2]]),
                                "outlier fraction": metrics.outlier_fraction(pred[:, 0], z[sub[2]]),
                                "N test": len(sub[2])})
            if instrument == "all (pooled)" or len(sets) == 1:
                for metric, fn in (("σ_NMAD", metrics.sigma_nmad), ("outlier fraction", metrics.outlier_fraction)):
                    section.headlines.append(headline(
                        f"redshift {cls.lower()}", f"{metric}, {instrument}", "simulated",
                        {m: fn(p[:, 0], z[sub[2]]) for m, p in zpreds.items()},
                        baseline_possible=zgrid is not None))
                best = min((m for m in zpreds if m.startswith(SPECTOK_PREFIX)),
                           key=lambda m: metrics.sigma_nmad(zpreds[m][:, 0], z[sub[2]]))
                pooled_z[cls] = {"true": z[sub[2]], "pred": zpreds[best][:, 0], "method": best}
    section.tables += [accuracy, redshift]
    if pooled_z:
        section.figures.append((_redshift_figure(run, pooled_z), "Redshift from frozen embeddings, "
                                "simulated test spectra (pooled over instruments)"))
    section.seconds = time.time() - start
    return section


def _redshift_figure(run: Run, pooled: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pooled), figsize=(3.6 * len(pooled), 3.4), squeeze=False, layout="constrained")
    for ax, (cls, item) in zip(axes[0], pooled.items()):
        ax.scatter(item["true"], item["pred"], s=4, alpha=0.4, rasterized=True)
        hi = max(float(np.nanmax(item["true"])), 0.1) * 1.05
        ax.plot([0, hi], [0, hi], "k", lw=0.8)
        ax.set_xlabel("true z")
        ax.set_ylabel("predicted z")
        ax.set_title(f"{cls.lower()} — {item['method']}", fontsize=9)
    return run.figures.save(fig, "redshift")


# -- 6. cross-survey retrieval of the same object -----------------------------------------------------


def cross_survey_retrieval(run: Run) -> Section:
    section, start = _section("retrieval", "6. Cross-survey retrieval of the same object")
    ctx, cfg = run.ctx, run.cfg
    tests = {k: v for k, v in run.plan["test"].items() if len(v)}
    ids = {k: ctx.table["object_id"].to_numpy()[v].astype(str) for k, v in tests.items()}
    section.text.append(
        "Spectra of one object observed by two instruments (simulated observations share "
        "`object_id`; simulated APOGEE spectra share it with the real Gaia XP spectrum of the same "
        "star). Each query spectrum searches ALL test spectra of the other instrument; recall@k = "
        "share of queries whose partner is in the first k; ties count against the model. "
        f"Instrument pairs with at least {cfg.min_pairs} same-object pairs are shown. Baselines on "
        "the pair's common range: cosine in a 32-component PCA fitted (without labels) on both "
        "sets, and the correlation of the median-normalised resampled flux; N/A where the two "
        "instruments share no wavelength range.")
    table = Table(["query → gallery", "data", "pairs", "gallery", "chance R@10",
                   "spectok R@1", "spectok R@10", "spectok median rank",
                   "PCA R@1", "PCA R@10", "PCA median rank", "flux R@1", "flux R@10", "flux median rank"],
                  formats={c: "{:.3f}" for c in ("chance R@10", "spectok R@1", "spectok R@10",
                                                 "PCA R@1", "PCA R@10", "flux R@1", "flux R@10")})
    table.formats.update({c: "{:.0f}" for c in ("spectok median rank", "PCA median rank", "flux median rank")})
    matrix: dict[tuple[str, str], float] = {}
    collected: dict[str, list[float]] = defaultdict(list)
    real_pairs: list[tuple[str, dict, bool]] = []
    names = sorted(tests)
    for query_name in names:
        for gallery_name in names:
            if query_name == gallery_name:
                continue
            shared = np.intersect1d(ids[query_name], ids[gallery_name])
            if len(shared) < cfg.min_pairs:
                continue
            q_mask = np.isin(ids[query_name], shared)
            query, gallery = tests[query_name][q_mask], tests[gallery_name]
            match = ids[query_name][q_mask][:, None] == ids[gallery_name][None, :]
            sims = {"spectok": ctx.embed(query) @ ctx.embed(gallery).T}
            grid = baselines.common_grid(ctx, query, gallery, max_features=cfg.max_features)
            if grid is not None:
                base = baselines.similarity(ctx, grid, query, gallery, seed=cfg.seed)
                sims["PCA"], sims["flux"] = base["PCA cosine"], base["flux correlation"]
            result = {}
            for method, sim in sims.items():
                ranks = metrics.retrieval_ranks(sim, match)
                result[method] = (metrics.recall_at_k(ranks, 1), metrics.recall_at_k(ranks, 10),
                                  metrics.median_rank(ranks))
            origins = {query_name.split("/")[1], gallery_name.split("/")[1]}
            data = "simulated" if origins == {"sim"} else ("real" if origins == {"real"} else "real + simulated")
            row = {"query → gallery": f"{query_name} → {gallery_name}", "data": data,
                   "pairs": int(q_mask.sum()), "gallery": len(gallery),
                   "chance R@10": min(1.0, 10 / len(gallery)),
                   "spectok R@1": result["spectok"][0], "spectok R@10": result["spectok"][1],
                   "spectok median rank": result["spectok"][2]}
            if grid is None:
                row["PCA R@1"] = "N/A (no common range)"
            else:
                row.update({"PCA R@1": result["PCA"][0], "PCA R@10": result["PCA"][1],
                            "PCA median rank": result["PCA"][2], "flux R@1": result["flux"][0],
                            "flux R@10": result["flux"][1],
                            "flux median rank": result["flux"][2]})
            table.rows.append(row)
            matrix[(query_name, gallery_name)] = result["spectok"][1]
            if data == "simulated":
                collected["spectok"].append(result["spectok"][1])
                if grid is not None:
                    collected["spectok (overlap)"].append(result["spectok"][1])
                    collected["PCA"].append(result["PCA"][1])
                    collected["flux"].append(result["flux"][1])
            else:
                real_pairs.append((row["query → gallery"], result, grid is not None))
    if not table.rows:
        return _skip(section, start, f"no instrument pair has {cfg.min_pairs} same-object test pairs")
    section.tables.append(table)
    if collected["spectok"]:
        n_na = len(collected["spectok"]) - len(collected["PCA"])
        if collected["PCA"]:
            section.headlines.append(headline(
                "retrieval", "mean recall@10, pairs with a common range", "simulated",
                {"spectok": float(np.mean(collected["spectok (overlap)"])),
                 "PCA cosine": float(np.mean(collected["PCA"])),
                 "flux correlation": float(np.mean(collected["flux"]))}, lower=False))
        if n_na:
            section.headlines.append(headline(
                "retrieval", f"mean recall@10, {n_na} pairs without a common range", "simulated",
                {"spectok": _mean_na(table)}, lower=False, baseline_possible=False))
    for pair, result, has_grid in real_pairs:
        scores = {"spectok": result["spectok"][1]}
        if has_grid:
            scores.update({"PCA cosine": result["PCA"][1], "flux correlation": result["flux"][1]})
        section.headlines.append(headline("retrieval", f"recall@10, {pair}", "real + simulated", scores,
                                          lower=False, baseline_possible=has_grid))
    section.figures.append((_retrieval_figure(run, names, matrix), "spectok recall@10 per instrument pair "
                            "(rows: query instrument, columns: gallery)"))
    section.seconds = time.time() - start
    return section


def _mean_na(table: Table) -> float:
    """Mean spectok recall@10 over simulated pairs where the baselines could not run."""
    values = [row["spectok R@10"] for row in table.rows
              if row["data"] == "simulated" and str(row.get("PCA R@1", "")).startswith("N/A")]
    return float(np.mean(values)) if values else float("nan")


def _retrieval_figure(run: Run, names: list[str], matrix: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    used = sorted({n for pair in matrix for n in pair})
    grid = np.full((len(used), len(used)), np.nan)
    for (q, g), value in matrix.items():
        grid[used.index(q), used.index(g)] = value
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(used), 0.8 + 0.6 * len(used)))
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(used)), used, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(used)), used, fontsize=8)
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="w" if value < 0.6 else "k")
    fig.colorbar(image, ax=ax, label="recall@10")
    return run.figures.save(fig, "retrieval_recall10")


# -- 7. reconstruction χ² ------------------------------------------------------------------------------


def chi2_per_pixel(spectrum, reconstruction, error_floor: float) -> tuple[float, float]:
    """(χ²/px with the model's error floor, χ²/px with plain ivar) over good pixels.

    The floor is relative to the spectrum's normalisation level (the median the
    model divides by): ivar_eff = 1 / (1/ivar + (floor · level)²), the same
    weight the training loss uses.
    """
    from ..model.batch import prepare
    from ..model.config import ModelConfig

    level = float(np.exp(prepare(spectrum, ModelConfig(error_floor=error_floor)).log_scale))
    good = spectrum.good
    flux, rec = spectrum.flux[good].astype(float), reconstruction.flux[good].astype(float)
    ivar = spectrum.ivar[good].astype(float)
    ivar_eff = 1.0 / (1.0 / ivar + (error_floor * level) ** 2)
    residual2 = (flux - rec) ** 2
    return float(np.mean(residual2 * ivar_eff)), float(np.mean(residual2 * ivar))


def reconstruction(run: Run) -> Section:
    section, start = _section("reconstruction", "7. Reconstruction χ² per pixel")
    ctx, cfg, tok = run.ctx, run.cfg, run.ctx.tok
    floor = tok.config.error_floor
    section.text.append(
        f"Held-out (test split) spectra reconstructed on their own grid by `Tokenizer.reconstruct` "
        f"({cfg.n_reconstruct} per instrument). χ²/px = mean over good pixels of (flux − rec)² · "
        f"ivar_eff with ivar_eff = 1 / (1/ivar + (f · m)²), f = {floor} the model's error floor and m "
        "the spectrum's normalising median — the weight the training loss uses; the plain-ivar "
        "column drops the floor. ≈ 1 means the reconstruction is within the noise. MILES and "
        "STELIB ivar are estimated from the flux (the libraries ship none).")
    table = Table(["instrument", "data", "N", "median χ²/px (floor)", "mean χ²/px (floor)",
                   "median χ²/px (plain ivar)"],
                  formats={c: "{:.3g}" for c in ("median χ²/px (floor)", "mean χ²/px (floor)",
                                                 "median χ²/px (plain ivar)")})
    for instrument, rows in sorted(run.plan["test"].items()):
        rows = draw(rows, cfg.n_reconstruct, cfg.seed)
        if not len(rows):
            continue
        spectra = [s for _, s in ctx.spectra(rows)]
        chi2 = []
        recs = []
        for spectrum in spectra:
            rec = tok.reconstruct(spectrum)
            chi2.append(chi2_per_pixel(spectrum, rec, floor))
            recs.append(rec)
        chi2 = np.array(chi2)
        data = "simulated" if instrument.endswith("/sim") else "real"
        table.add(**{"instrument": instrument, "data": data, "N": len(spectra),
                     "median χ²/px (floor)": float(np.median(chi2[:, 0])),
                     "mean χ²/px (floor)": float(np.mean(chi2[:, 0])),
                     "median χ²/px (plain ivar)": float(np.median(chi2[:, 1]))})
        example = int(np.argsort(chi2[:, 0])[len(chi2) // 2])
        name = _reconstruction_figure(run, instrument, spectra[example], recs[example], chi2[example, 0])
        section.figures.append((name, f"{instrument} ({data}): input and reconstruction of the "
                                "median-χ² test spectrum"))
    section.tables.append(table)
    section.seconds = time.time() - start
    return section


def _reconstruction_figure(run: Run, instrument: str, spectrum, rec, chi2: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 3.6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    good = spectrum.good
    wave = spectrum.wave
    top.plot(wave, np.where(good, spectrum.flux, np.nan), lw=0.6, color="0.3", label="input")
    top.plot(rec.wave, rec.flux, lw=0.8, color="tab:red", label="reconstruction")
    top.legend(fontsize=8, loc="upper right")
    top.set_title(f"{instrument} — {spectrum.meta.get('object_id', '')} — χ²/px {chi2:.2f}", fontsize=9)
    sigma = np.where(good, 1.0 / np.sqrt(np.maximum(spectrum.ivar, 1e-30)), np.nan)
    bottom.plot(wave, np.where(good, (spectrum.flux - rec.flux) / sigma, np.nan), lw=0.5, color="0.3")
    bottom.axhline(0, color="k", lw=0.5)
    bottom.set_ylabel("(in − rec)/σ", fontsize=8)
    bottom.set_xlabel("vacuum wavelength [Å]")
    return run.figures.save(fig, f"reconstruction_{instrument.replace('/', '_')}")


# -- sanity: real survey files against the corpus ----------------------------------------------------


def shared_files_folder() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "formats"


def real_file_neighbours(run: Run, folder: Path | None = None, k: int = 5) -> Section:
    from ..io import read_spectra

    section, start = _section("sanity", "Sanity check: real survey files and their nearest corpus neighbours")
    folder = Path(folder) if folder is not None else shared_files_folder()
    if not folder.is_dir():
        return _skip(section, start, f"{folder} is absent (the real example files live beside the repository)")
    spectra = []
    for sub in ("sdss", "lamost"):
        if (folder / sub).is_dir():
            got = read_spectra(folder / sub)
            spectra += list(got)
    if not spectra:
        return _skip(section, start, f"no readable SDSS or LAMOST files in {folder}")
    ctx = run.ctx
    gallery = np.flatnonzero(ctx.has_embedding)
    if not len(gallery):
        return _skip(section, start, "no corpus embeddings")
    emb = ctx.tok.embed(spectra)
    sims = emb @ ctx.embed(gallery).T
    table = Table(["file", "survey", "data", "class (type)", "z", f"nearest {k} (instrument: class)",
                   "majority", "agrees"], formats={"z": "{:.3f}"})
    agree = []
    for i, spectrum in enumerate(spectra):
        order = gallery[np.argsort(-sims[i])[:k]]
        classes = [str(ctx.table.at[r, "class"]) for r in order]
        neighbours = ", ".join(f"{ctx.table.at[r, 'instrument']}: {c}" for r, c in zip(order, classes))
        majority = max(set(classes), key=classes.count)
        cls = spectrum.meta.get("class")
        sub = spectrum.meta.get("subclass")
        ok = None if cls is None else majority == str(cls).upper()
        if ok is not None:
            agree.append(ok)
        table.add(**{"file": spectrum.meta.get("source_file", "?"), "survey": spectrum.survey, "data": "real",
                     "class (type)": f"{cls or '—'}" + (f" ({sub})" if sub else ""),
                     "z": spectrum.meta.get("z"), f"nearest {k} (instrument: class)": neighbours,
                     "majority": majority, "agrees": {True: "yes", False: "no", None: "—"}[ok]})
    section.text.append(
        f"Real SDSS/BOSS and LAMOST files from {folder.name}/, embedded and searched against the "
        f"{len(gallery):,} corpus spectra embedded in this run (most of these files are also in "
        "the corpus through `spectok corpus add-real`, in its train split; the spectra searched "
        "here are the report's planned rows, which do not include them). The majority "
        f"class of the {k} nearest neighbours agrees with the file's own class for "
        f"{sum(agree)} of {len(agree)} files with a class (LAMOST MRS files carry none: stars).")
    section.tables.append(table)
    section.seconds = time.time() - start
    return section


TASKS = (gaia_xp_labels, library_labels, spex_subtypes, label_transfer, classification_redshift,
         cross_survey_retrieval, reconstruction, real_file_neighbours)
