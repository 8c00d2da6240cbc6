"""DESI reader: real coadds from ../shared and synthetic coadds/redshift catalogues."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from astropy.io import fits

import spectok_core as sc
from tests.conftest import shared_files
from tests.synthetic import desi as synth

#: real coadd -> {TARGETID: rough median S/N per 0.8 Å pixel} of the targets it holds
REAL_TARGETS = {
    "coadd-5-169-thru20210419.fits": {39633300968442591: 0.45},
    "coadd-sv3-dark-26065.fits": {39627866878511337: 0.98, 39627866878514741: 0.89},
}
#: real coadd -> number of skipped fibres (negative TARGETID, empty, sky)
REAL_SKIPPED = {"coadd-5-169-thru20210419.fits": 4, "coadd-sv3-dark-26065.fits": 3}


def _arms(data: bytes) -> dict[str, dict[str, np.ndarray]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(io.BytesIO(data)) as hdul:
            return {
                arm: {part: np.array(hdul[f"{arm}_{part}"].data, dtype=np.float64)
                      for part in ("WAVELENGTH", "FLUX", "IVAR", "MASK")}
                for arm in "BRZ"
            }


def _check_overlap_combined(spectrum, arms, row: int) -> int:
    """Every pixel seen by two arms is their inverse-variance mean; returns how many were."""
    n_shared = 0
    for blue, red in (("B", "R"), ("R", "Z")):
        b, r = arms[blue], arms[red]
        for j, wave in enumerate(r["WAVELENGTH"]):
            i = np.flatnonzero(np.abs(b["WAVELENGTH"] - wave) < 1e-6)
            if not i.size:
                continue
            n_shared += 1
            wb = b["IVAR"][row, i[0]] * (b["MASK"][row, i[0]] == 0)
            wr = r["IVAR"][row, j] * (r["MASK"][row, j] == 0)
            k = np.flatnonzero(np.abs(spectrum.wave - wave) < 1e-6)
            assert k.size == 1, "an overlap wavelength must appear exactly once"
            assert spectrum.ivar[k[0]] == pytest.approx(wb + wr, rel=1e-5)
            if wb + wr > 0:
                mean = (b["FLUX"][row, i[0]] * wb + r["FLUX"][row, j] * wr) / (wb + wr)
                assert spectrum.flux[k[0]] == pytest.approx(mean, rel=1e-5, abs=1e-6)
    return n_shared


# -- real files -------------------------------------------------------------------------


@pytest.mark.parametrize("path", shared_files("desi", "coadd-*.fits"), ids=lambda p: p.name)
def test_real_coadds(path):
    spectra = sc.read_spectra(path)
    expected = REAL_TARGETS[path.name]
    assert [s.meta["targetid"] for s in spectra] == list(expected)
    assert len(spectra.problems) == REAL_SKIPPED[path.name]
    assert all("TARGETID" in p and "skipped" in p for p in spectra.problems)
    arms = _arms(path.read_bytes())
    rows = list(fits.getdata(path, "FIBERMAP")["TARGETID"])
    for spectrum in spectra:
        assert spectrum.survey == "desi"
        assert spectrum.meta["object_id"] == str(spectrum.meta["targetid"])
        # DESI vacuum coverage 3600-9824 Å on one 0.8 Å grid: 2751+2326+2881 px less 51+126 shared
        assert spectrum.wave_range == pytest.approx((3600.0, 9824.0), abs=1e-6)
        assert len(spectrum) == 7781
        assert np.allclose(np.diff(spectrum.wave), 0.8, atol=1e-6)
        assert spectrum.median_snr == pytest.approx(expected[spectrum.meta["targetid"]], rel=0.1)
        assert -90 <= spectrum.meta["dec"] <= 90 and 0 <= spectrum.meta["ra"] < 360
        row = rows.index(spectrum.meta["targetid"])
        assert _check_overlap_combined(spectrum, arms, row) == 51 + 126


def test_real_coadd_reports_sky_and_empty():
    paths = {p.name: p for p in shared_files("desi", "coadd-*.fits")}
    if "coadd-sv3-dark-26065.fits" not in paths:
        pytest.skip("coadd-sv3-dark-26065.fits not present")
    problems = sc.read_spectra(paths["coadd-sv3-dark-26065.fits"]).problems
    assert any("616088619186127404" in p and "sky" in p for p in problems)
    assert sum("negative TARGETID" in p for p in problems) == 2


# -- synthetic coadds ---------------------------------------------------------------


def _read_coadd(tmp_path, layout="coadd", **options):
    name, data = synth.LAYOUTS[layout]()
    path = tmp_path / name
    path.write_bytes(data)
    from_path = sc.read_spectra(path, **options)
    from_bytes = sc.read_spectra(data, name="upload.fits", **options)
    assert [s.meta["targetid"] for s in from_path] == [s.meta["targetid"] for s in from_bytes]
    for a, b in zip(from_path, from_bytes):
        assert np.array_equal(a.flux, b.flux)
    return from_path, data


def test_synthetic_sizes():
    for make in synth.LAYOUTS.values():
        assert len(make()[1]) < 200_000


def test_coadd_rows_and_reports(tmp_path):
    spectra, _ = _read_coadd(tmp_path)
    assert [s.meta["targetid"] for s in spectra] == synth.TARGETS
    for spectrum in spectra:
        assert spectrum.survey == "desi" and spectrum.meta["format"] == "desi_coadd"
        assert spectrum.meta["flux_unit"] == "1e-17 erg/s/cm2/Angstrom"
        assert (spectrum.meta["desi_survey"], spectrum.meta["program"]) == ("sv3", "dark")
        assert spectrum.meta["healpix"] == 26065
        assert "z" not in spectrum.meta  # no catalogue given
        for value in spectrum.meta.values():
            assert type(value) in (int, float, str, bool)
    problems = spectra.problems
    assert len(problems) == 3
    assert "-2713437" in problems[0] and "negative TARGETID" in problems[0]
    assert "39627866878512000" in problems[1] and "empty fibre" in problems[1]
    assert "616088619186127404" in problems[2] and "sky fibre" in problems[2]


def test_coadd_joins_arms_on_shared_pixels(tmp_path):
    spectra, data = _read_coadd(tmp_path)
    arms = _arms(data)
    n_total = sum(a["WAVELENGTH"].size for a in arms.values())
    for spectrum in spectra:
        row = [r[0] for r in synth.ROWS].index(spectrum.meta["targetid"])
        assert len(spectrum) == n_total - 51 - 126
        # still DESI's native grid: every wavelength is 3600 + 0.8 k
        k = (spectrum.wave - 3600.0) / synth.STEP
        assert np.allclose(k, np.arange(k.size), atol=1e-6)
        assert _check_overlap_combined(spectrum, arms, row) == 51 + 126
    star = spectra[1]
    r_wave = arms["R"]["WAVELENGTH"]
    in_overlap, r_only = synth.MASKED_R_PIXELS
    # a masked R pixel inside the b/r overlap keeps the B measurement alone
    k = np.flatnonzero(np.isclose(star.wave, r_wave[in_overlap]))[0]
    i = np.flatnonzero(np.isclose(arms["B"]["WAVELENGTH"], r_wave[in_overlap]))[0]
    assert star.flux[k] == pytest.approx(arms["B"]["FLUX"][synth.STAR_ROW, i])
    assert star.ivar[k] == pytest.approx(arms["B"]["IVAR"][synth.STAR_ROW, i])
    # a masked R pixel seen by no other arm is bad
    k = np.flatnonzero(np.isclose(star.wave, r_wave[r_only]))[0]
    assert star.mask[k] and star.ivar[k] == 0
    assert star.mask.sum() == 1


def test_coadd_offset_arms_cut_at_overlap_middle(tmp_path):
    spectra, data = _read_coadd(tmp_path, "coadd_offset_arms")
    arms = _arms(data)
    b, r, z = (arms[a]["WAVELENGTH"] for a in "BRZ")
    cut_br, cut_rz = 0.5 * (r[0] + b[-1]), 0.5 * (z[0] + r[-1])
    expected = np.concatenate([b[b < cut_br], r[(r >= cut_br) & (r < cut_rz)], z[z >= cut_rz]])
    for spectrum in spectra:
        assert np.allclose(spectrum.wave, expected, rtol=0, atol=1e-9)
        assert np.all(np.diff(spectrum.wave) > 0)


def test_all_rows_empty_is_an_error():
    _, data = synth.coadd()
    with fits.open(io.BytesIO(data)) as hdul:
        for arm in "BRZ":
            hdul[f"{arm}_FLUX"].data[:] = 0.0
        buffer = io.BytesIO()
        hdul.writeto(buffer)
    with pytest.raises(sc.SpectrumError, match="no usable spectrum.*empty fibre"):
        sc.read_spectra(buffer.getvalue(), name="coadd-empty.fits")


def test_inconsistent_arm_shapes():
    _, data = synth.coadd()
    with fits.open(io.BytesIO(data)) as hdul:
        hdul["R_IVAR"].data = hdul["R_IVAR"].data[:, :-3]
        buffer = io.BytesIO()
        hdul.writeto(buffer)
    with pytest.raises(sc.SpectrumError, match="do not match"):
        sc.read_spectra(buffer.getvalue(), name="coadd-bad.fits")


# -- redshift catalogues -----------------------------------------------------------


def test_redrock_catalogue_as_bytes(tmp_path):
    _, redrock = synth.redrock()
    spectra, _ = _read_coadd(tmp_path, redshift_catalog=redrock)
    galaxy, star = spectra
    assert galaxy.meta["z"] == pytest.approx(0.1) and galaxy.meta["class"] == "GALAXY"
    assert galaxy.meta["z_err"] == pytest.approx(1.5e-5) and galaxy.meta["zwarning"] == 0
    assert "subclass" not in galaxy.meta  # empty SUBTYPE is omitted
    assert star.meta["class"] == "STAR" and star.meta["subclass"] == "K"
    assert star.meta["zwarning"] == 4 and star.meta["z"] == pytest.approx(-0.0001)
    assert len(spectra.problems) == 3  # only the skipped fibres


def test_zcatalog_as_path_uses_primary_rows_and_upper_cases(tmp_path):
    name, zcat = synth.zcatalog()
    path = tmp_path / name
    path.write_bytes(zcat)
    spectra, _ = _read_coadd(tmp_path, redshift_catalog=path)
    assert spectra[0].meta["z"] == pytest.approx(0.1)  # the ZCAT_PRIMARY row, not 9.9
    assert [s.meta["class"] for s in spectra] == ["GALAXY", "STAR"]
    spectra = sc.read_spectra(synth.coadd()[1], name="c.fits", redshift_catalog=str(path))
    assert spectra[1].meta["z_err"] == pytest.approx(2e-6)


def test_catalogue_missing_a_target_is_reported():
    zcat = fits.BinTableHDU.from_columns([
        fits.Column("TARGETID", "K", array=[synth.TARGETS[0]]),
        fits.Column("Z", "D", array=[0.1]), fits.Column("ZWARN", "K", array=[0]),
        fits.Column("SPECTYPE", "6A", array=["GALAXY"]),
    ], name="ZCATALOG")
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), zcat]).writeto(buffer)
    spectra = sc.read_spectra(synth.coadd()[1], name="c.fits", redshift_catalog=buffer.getvalue())
    assert "z" not in spectra[1].meta and spectra[0].meta["z"] == pytest.approx(0.1)
    assert any(str(synth.TARGETS[1]) in p and "not in the redshift catalogue" in p
               for p in spectra.problems)


def test_catalogue_of_other_targets_is_an_error():
    zcat = fits.BinTableHDU.from_columns([
        fits.Column("TARGETID", "K", array=[1, 2]), fits.Column("Z", "D", array=[0.1, 0.2]),
        fits.Column("ZWARN", "K", array=[0, 0]), fits.Column("SPECTYPE", "6A", array=["QSO"] * 2),
    ], name="REDSHIFTS")
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), zcat]).writeto(buffer)
    with pytest.raises(sc.SpectrumError, match="none of its targets"):
        sc.read_spectra(synth.coadd()[1], name="c.fits", redshift_catalog=buffer.getvalue())


@pytest.mark.parametrize("catalog, match", [
    (b"not a fits file at all", "not a FITS file"),
    ("/nonexistent/redrock.fits", "cannot read it"),
    (12345, "must be a path or bytes"),
])
def test_bad_catalogue_argument(catalog, match):
    with pytest.raises(sc.SpectrumError, match=match):
        sc.read_spectra(synth.coadd()[1], name="c.fits", redshift_catalog=catalog)


def test_catalogue_without_redshift_table():
    _, coadd_bytes = synth.coadd()
    with pytest.raises(sc.SpectrumError, match="no table with TARGETID"):
        sc.read_spectra(coadd_bytes, name="c.fits", redshift_catalog=coadd_bytes)


@pytest.mark.parametrize("layout", ["redrock", "zcatalog"])
def test_redshift_catalogue_alone_says_what_it_is(layout, tmp_path):
    name, data = synth.LAYOUTS[layout]()
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(sc.SpectrumError) as err:
        sc.read_spectra(path)
    message = str(err.value)
    assert "redshift catalogue" in message and "redshift_catalog=" in message
    assert "not spectra" in message
