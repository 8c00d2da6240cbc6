"""The demo index selection takes every real spectrum of the big surveys (issue 13)."""

from pathlib import Path

import numpy as np
import pandas as pd

from spectok_core.index_build import SURVEY_REAL, select_demo


def corpus_like() -> pd.DataFrame:
    rows = []
    for survey in ("sdss", "boss", "desi", "lamost_lrs", "apogee", "gaia_xp"):
        for label in ("STAR", "GALAXY", "QSO"):
            rows += [(survey, label, "simulated")] * 200
    rows += [("gaia_xp", "STAR", "real")] * 500  # a big real library: not forced in
    rows += [("apogee", "STAR", "real")] * 30  # more than its round-robin share
    rows += [("boss", "STAR", "real"), ("sdss", "QSO", "real"), ("lamost_mrs", "STAR", "real")]
    rows += [("desi", None, "real")] * 3  # DESI coadds without a redshift file: no class
    frame = pd.DataFrame(rows, columns=["survey", "class", "origin"])
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)


def test_every_real_survey_spectrum_is_taken_then_the_mix():
    meta = corpus_like()
    forced = np.flatnonzero((meta["origin"] == "real") & meta["survey"].isin(SURVEY_REAL))
    assert len(forced) == 36
    chosen = select_demo(meta, max_total=100)
    assert len(chosen) == 100 == len(set(chosen))
    assert set(forced) <= set(chosen)
    rest = meta.iloc[np.setdiff1d(chosen, forced)]
    # the remaining 64 still mix every (survey, class) group, real first within each
    assert rest.groupby(["survey", "class"], dropna=False).ngroups == 18
    gaia = rest[(rest["survey"] == "gaia_xp") & (rest["class"] == "STAR")]
    assert (gaia["origin"] == "real").all() and 0 < len(gaia) < 10


def test_fewer_slots_than_real_survey_spectra_takes_a_seeded_subset_of_them():
    meta = corpus_like()
    chosen = select_demo(meta, max_total=10)
    picked = meta.iloc[chosen]
    assert len(chosen) == 10
    assert ((picked["origin"] == "real") & picked["survey"].isin(SURVEY_REAL)).all()
    assert np.array_equal(chosen, select_demo(meta, max_total=10))


def test_without_survey_spectra_the_mix_is_unchanged_in_size():
    meta = corpus_like()
    meta = meta[~meta["survey"].isin(SURVEY_REAL) | (meta["origin"] != "real")].reset_index(drop=True)
    chosen = select_demo(meta, n_per_group=2, max_total=1000)
    assert len(chosen) == 2 * meta.groupby(["survey", "class"]).ngroups


def test_the_shipped_demo_index_stays_under_15_mb():
    from spectok_core.index import DEFAULT_INDEX

    files = [p for p in Path(DEFAULT_INDEX).rglob("*") if p.is_file()]
    assert files and sum(p.stat().st_size for p in files) <= 15 * 2**20
