"""Compare trained models on the corpus VALIDATION split, to choose one before the test-split report.

    python scripts/compare_models.py --corpus corpus MODEL [MODEL ...] [--shrink 0.01 100]

For each model, and each embedding calibration (``--shrink``: 0.01 is the default
whitening, 100 centres and rotates without whitening), prints:

* cross-survey retrieval of the same object: mean recall@10 over instrument pairs with at
  least 10 validation pairs (each query searches all sampled validation spectra of the other
  instrument), for pairs among the optical surveys and for pairs involving APOGEE;
* kNN (k=10, cosine) probes fitted on training-split embeddings: Gaia XP Teff/logg/[Fe/H]
  MAE on real spectra, star/galaxy/QSO accuracy on simulated ones;
* galaxy and quasar redshift σ_NMAD from kNN (k=10) and ridge probes fitted on 400 simulated
  training spectra per class and optical survey, on the simulated validation spectra;
* a linear probe predicting the optical instrument from the embedding, on simulated
  validation spectra of sources seen by two or more of them (lower is better);
* median reconstruction χ² per pixel (1 % error floor) on 30 validation spectra per
  survey and origin.

The test split is never read, so the choice does not leak into `reports/eval.md`.
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from spectok_core.data.corpus import metadata
from spectok_core.data.pairs import read_locations
from spectok_core.evaluate.invariance import OPTICAL, instrument_probe, shared_objects
from spectok_core.evaluate.metrics import sigma_nmad
from spectok_core.evaluate.tasks import chi2_per_pixel
from spectok_core.model import Tokenizer

GALLERY_CAP = 1500  # validation spectra per survey/origin (all paired ones first)


def embedding(tok: Tokenizer, calibration: np.ndarray, shrink: float):
    """A function mapping mean tokens to the calibrated, normalised embedding."""
    model = tok.model
    model.calibrate_pooling(torch.from_numpy(calibration), shrink=shrink)
    mean, proj = model.embed_mean.numpy().copy(), model.embed_proj.numpy().copy()

    def embed(m: np.ndarray) -> np.ndarray:
        z = (m - mean) @ proj
        return z / np.linalg.norm(z, axis=1, keepdims=True).clip(1e-12)

    return embed


def knn_predict(train: np.ndarray, y: np.ndarray, test: np.ndarray, k: int = 10, classify=False):
    sim = test @ train.T
    top = np.argsort(-sim, axis=1)[:, :k]
    if classify:
        votes = y[top]
        return np.array([max(set(v), key=list(v).count) for v in votes])
    with warnings.catch_warnings():  # a row whose k neighbours all lack the label gives NaN, on purpose
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        return np.nanmedian(y[top], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--shrink", type=float, nargs="+", default=[0.01, 100.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    corpus = Path(args.corpus)
    rng = np.random.default_rng(args.seed)
    table = metadata(corpus)
    split = table["split"].to_numpy()
    survey = table["survey"].to_numpy().astype(str)
    origin = table["origin"].to_numpy().astype(str)
    ids = table["object_id"].to_numpy().astype(str)

    # Validation galleries: per survey/origin, the paired spectra first, then others up to the cap.
    val = np.flatnonzero(split == "val")
    per_object = table.iloc[val].groupby("object_id")["survey"].nunique()
    paired_ids = set(per_object[per_object > 1].index)
    gallery: dict[str, np.ndarray] = {}
    for key in sorted(set(zip(survey[val], origin[val]))):
        rows = val[(survey[val] == key[0]) & (origin[val] == key[1])]
        paired = rows[np.isin(ids[rows], list(paired_ids))]
        rest = rng.permutation(np.setdiff1d(rows, paired))
        gallery["/".join(key)] = np.concatenate([paired, rest[: max(0, GALLERY_CAP - len(paired))]])
    # Training rows for the kNN probes and calibration.
    train = np.flatnonzero(split == "train")
    xp = train[(survey[train] == "gaia_xp") & (origin[train] == "real")]
    xp_train = rng.choice(xp, 3000, replace=False)
    sim_train = np.concatenate([rng.choice(train[(survey[train] == s) & (origin[train] == "simulated")], 300, replace=False)
                                for s in ("sdss", "boss", "desi", "lamost_lrs")])
    # Redshift probes: simulated galaxies and quasars of the four optical surveys.
    klass = table["class"].to_numpy().astype(str)
    z_train = {cls: np.concatenate([rng.choice(rows, min(400, len(rows)), replace=False) for rows in (
        train[(survey[train] == s) & (origin[train] == "simulated") & (klass[train] == cls)]
        for s in ("sdss", "boss", "desi", "lamost_lrs"))]) for cls in ("GALAXY", "QSO")}
    calibration = rng.choice(train, 4096, replace=False)
    all_rows = np.unique(np.concatenate([*gallery.values(), xp_train, sim_train, *z_train.values(), calibration]))
    t0 = time.time()
    spectra = read_locations(corpus, table["shard"].to_numpy()[all_rows], table["row"].to_numpy()[all_rows])
    keep = np.array([s is not None for s in spectra])
    all_rows, spectra = all_rows[keep], [s for s in spectra if s is not None]
    position = {r: i for i, r in enumerate(all_rows)}
    print(f"read {len(spectra)} spectra in {time.time() - t0:.0f} s")

    def at(rows):
        return np.array([position[r] for r in rows if r in position])

    labels = table[["teff", "logg", "feh"]].to_numpy(np.float64)
    redshift = table["z"].to_numpy(np.float64)
    for model_path in args.models:
        tok = Tokenizer.from_pretrained(model_path)
        t0 = time.time()
        pooled = tok.summaries(spectra).numpy()
        print(f"\n## {model_path}  (embedded {len(spectra)} in {time.time() - t0:.0f} s)")
        for shrink in args.shrink:
            embed = embedding(tok, pooled[at(calibration)], shrink)
            z = embed(pooled)
            recall = {}
            for qa, ga in itertools.permutations(sorted(gallery), 2):
                if qa.split("/")[0] == ga.split("/")[0]:
                    continue
                q_rows, g_rows = gallery[qa], gallery[ga]
                shared = np.intersect1d(ids[q_rows], ids[g_rows])
                if len(shared) < 10:
                    continue
                q_rows = q_rows[np.isin(ids[q_rows], shared)]
                sim = z[at(q_rows)] @ z[at(g_rows)].T
                match = ids[q_rows][:, None] == ids[g_rows][None, :]
                partner = np.where(match, sim, -np.inf).max(axis=1)
                ranks = (sim >= partner[:, None]).sum(axis=1)
                recall[(qa, ga)] = float(np.mean(ranks <= 10))
            optical = [v for (a, b), v in recall.items() if "apogee" not in a + b]
            apogee = [v for (a, b), v in recall.items() if "apogee" in a + b]
            xp_val = gallery.get("gaia_xp/real", np.array([], int))
            pred = knn_predict(z[at(xp_train)], labels[xp_train], z[at(xp_val)])
            mae = np.nanmean(np.abs(pred - labels[xp_val]), axis=0)
            sim_val = np.concatenate([gallery[k] for k in gallery if k.endswith("/simulated") and not k.startswith(("apogee", "gaia", "lamost_mrs"))])
            acc = np.mean(knn_predict(z[at(sim_train)], klass[sim_train], z[at(sim_val)], classify=True) == klass[sim_val])
            optical_sim = [f"{k}/simulated" for k in OPTICAL if f"{k}/simulated" in gallery]
            rows, names, groups = shared_objects({k: gallery[k] for k in optical_sim},
                                                 {k: ids[gallery[k]] for k in optical_sim})
            probe, chance = instrument_probe(z[at(rows)], names, groups)
            z_scores = []
            for cls, rows in z_train.items():
                val_rows = sim_val[klass[sim_val] == cls]
                fit_z, val_z, truth = z[at(rows)], z[at(val_rows)], redshift[val_rows]
                knn = knn_predict(fit_z, redshift[rows], val_z)
                ridge = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(fit_z, redshift[rows])
                z_scores.append(f"{cls.lower()} z σ_NMAD kNN {sigma_nmad(knn, truth):.4f} / ridge "
                                f"{sigma_nmad(ridge.predict(val_z), truth):.4f}")
            print(f"shrink {shrink:g}: retrieval R@10 optical {np.mean(optical):.3f} ({len(optical)} pairs), "
                  f"with APOGEE {np.mean(apogee):.3f} ({len(apogee)} pairs); Gaia XP kNN MAE Teff {mae[0]:.0f} K, "
                  f"logg {mae[1]:.3f}, [Fe/H] {mae[2]:.3f}; class accuracy {acc:.3f}; optical instrument "
                  f"probe {probe:.3f} (chance {chance:.3f}, lower is better); " + "; ".join(z_scores))
            for (a, b), v in sorted(recall.items()):
                if "apogee" in a + b or "gaia_xp" in a + b:
                    print(f"    {a} -> {b}: R@10 {v:.3f}")
        chi2 = {}
        pick = np.random.default_rng([args.seed, 1])  # the same spectra for every model
        for key, rows in gallery.items():
            picked = pick.choice(rows, min(30, len(rows)), replace=False)
            values = []
            for r in picked:
                if r in position:
                    s = spectra[position[r]]
                    values.append(chi2_per_pixel(s, tok.reconstruct(s), tok.config.error_floor)[0])
            chi2[key] = float(np.median(values))
        print("reconstruction χ²/px (median, val): " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(chi2.items())))


if __name__ == "__main__":
    main()
