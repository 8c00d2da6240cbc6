"""SDSS/BOSS readers: real spec files from ../shared and synthetic files of every layout."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pytest
from astropy.io import fits

import spectok_core as sc
from spectok_core.io import sdss
from spectok_core.io.source import Source
from tests.conftest import require_shared, shared_files
from tests.synthetic import sdss as synth

FAILED = "spec-0269-51581-0003.fits"

#: file -> (survey, class, z) as the files' SPECOBJ/SPALL state them
EXPECTED = {
    "gelato_paper_1237652899686318136.fits": ("sdss", "GALAXY", 0.0506),
    "gelato_paper_1237658802572296399.fits": ("sdss", "GALAXY", 0.0750),
    "gelato_paper_1237662637447184537.fits": ("sdss", "QSO", 0.0505),
    "gelato_paper_1237680240907518081.fits": ("sdss", "QSO", 0.0805),
    "spec-0266-51602-0013.fits": ("sdss", "GALAXY", 0.1213),
    "spec-0266-51602-0107.fits": ("sdss", "GALAXY", 0.1231),
    "spec-0266-51602-0638.fits": ("sdss", "GALAXY", 0.1098),
    "spec-0280-51612-0117.fits": ("sdss", "QSO", 0.2446),
    "spec-0295-51585-0596.fits": ("sdss", "GALAXY", 0.1379),
    "spec-0332-52367-0639.fits": ("sdss", "QSO", 0.1006),
    "spec-0403-51871-0462.fits": ("sdss", "GALAXY", 0.1370),
    "spec-0853-52374-0240.fits": ("sdss", "QSO", 0.1968),
    "spec-1599-53089-0469.fits": ("sdss", "QSO", 0.1849),
    "spec-1722-53852-0175.fits": ("sdss", "GALAXY", 0.1607),
    "spec-1931-53358-0251.fits": ("sdss", "QSO", 1.1885),
    "spec-3586-55181-0500.fits": ("boss", "STAR", -0.0001),
    "spec-1325-52762-0133.fits": ("sdss", "QSO", 0.4563),
    "spec-7338-56660-0733.fits": ("boss", "QSO", 0.4560),
    "spec-7339-57544-0733.fits": ("boss", "QSO", 0.4565),
}
REAL = [p for p in shared_files("sdss", "*.fits") if p.name != FAILED]


def _file_row(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path) as hdul:
            coadd = {c: np.array(hdul[1].data[c]) for c in ("loglam", "ivar", "and_mask")}
            row = {c: hdul[2].data[c][0] for c in hdul[2].columns.names}
    return coadd, row


def _plain_meta(spectrum):
    for key, value in spectrum.meta.items():
        assert value is None or type(value) in (int, float, str, bool), (key, type(value))


# -- real files ------------------------------------------------------------------------


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_real_spec_files(path):
    spectra = sc.read_spectra(path)
    assert len(spectra) == 1 and not spectra.problems
    spectrum = spectra[0]
    survey, klass, z = EXPECTED[path.name]
    coadd, row = _file_row(path)
    assert spectrum.survey == survey
    assert spectrum.meta["format"] == "sdss_spec"
    assert spectrum.meta["class"] == klass
    assert spectrum.meta["z"] == pytest.approx(z, abs=1e-4)
    assert spectrum.meta["zwarning"] == 0
    assert re.fullmatch(rf"{survey}-\d{{4}}-\d{{5}}-\d{{4}}", spectrum.meta["object_id"])
    assert spectrum.meta["ra"] == pytest.approx(float(row["PLUG_RA"]))
    # instrument coverage (vacuum Å): SDSS 3800-9200, BOSS 3600-10400
    lo, hi = spectrum.wave_range
    if survey == "sdss":
        assert 3780 < lo < 3850 and 7300 < hi < 9250
    else:
        assert 3550 < lo < 3650 and 10300 < hi < 10420
    # the exact 1e-4 dex grid, within float32 rounding of the stored loglam
    assert np.allclose(np.diff(np.log10(spectrum.wave)), 1e-4, rtol=0, atol=1e-9)
    assert np.max(np.abs(np.log10(spectrum.wave) - coadd["loglam"])) < 3e-7  # half a float32 ulp
    # our median S/N matches the pipeline's SN_MEDIAN_ALL (over all ivar > 0 pixels; our
    # BADTRACE/BADFLAT masking of the red arm of spec-1722 lowers it there by 10 %)
    assert spectrum.median_snr == pytest.approx(float(row["SN_MEDIAN_ALL"]), rel=0.15)
    # mask = ivar 0 or a bad bit, nothing else (MANYBADCOLUMNS, NEARBADPIXEL stay good)
    expected_bad = (coadd["ivar"] <= 0) | ((coadd["and_mask"].astype(np.int64) & sdss.BAD_MASK) != 0)
    assert np.array_equal(spectrum.mask, expected_bad)
    _plain_meta(spectrum)


def test_many_bad_columns_does_not_mask_a_whole_arm(shared_formats):
    path = require_shared(shared_formats / "sdss" / "spec-0266-51602-0013.fits")
    spectrum = sc.read_spectra(path)[0]
    coadd, _ = _file_row(path)
    flagged = (coadd["and_mask"] & (1 << sdss.SPPIXMASK["MANYBADCOLUMNS"])) != 0
    assert flagged.sum() > 1500  # the whole red arm carries the fibre-level note
    assert spectrum.mask[flagged].mean() < 0.05


def test_failed_spectrum_names_zwarning(shared_formats):
    path = require_shared(shared_formats / "sdss" / FAILED)
    with pytest.raises(sc.SpectrumError) as err:
        sc.read_spectra(path)
    message = str(err.value)
    assert "ZWARNING=6" in message and "flagged" in message
    assert "no pixel is usable" in message and FAILED in message


def test_rm017_epochs_same_quasar(shared_formats):
    folder = shared_formats / "sdss" / "rm017_epochs"
    if not folder.is_dir():
        pytest.skip(f"real survey files not present: {folder}")
    spectra = sc.read_spectra(folder)
    assert len(spectra) == 3 and not spectra.problems
    by_mjd = sorted(spectra, key=lambda s: s.meta["mjd"])
    assert [s.survey for s in by_mjd] == ["sdss", "boss", "boss"]
    for spectrum in by_mjd:
        assert spectrum.meta["class"] == "QSO"
        assert spectrum.meta["z"] == pytest.approx(0.456, abs=0.001)
    assert len({s.meta["photo_objid"] for s in by_mjd}) == 1
    assert len({s.meta["object_id"] for s in by_mjd}) == 3


def test_gelato_files_are_spec_lite_named_by_objid():
    files = shared_files("sdss", "gelato_paper_*.fits")
    if not files:
        pytest.skip("gelato_paper files not present")
    for path in files:
        spectrum = sc.read_spectra(path)[0]
        assert spectrum.meta["photo_objid"] == path.stem.split("_")[-1]


# -- synthetic files -----------------------------------------------------------------


def _read(layout, tmp_path):
    name, data = synth.LAYOUTS[layout]()
    path = tmp_path / name
    path.write_bytes(data)
    from_path = sc.read_spectra(path)
    from_bytes = sc.read_spectra(data, name="upload.fits")  # detection ignores the name
    assert len(from_path) == len(from_bytes)
    for a, b in zip(from_path, from_bytes):
        assert np.array_equal(a.wave, b.wave) and np.array_equal(a.flux, b.flux)
    return from_path


@pytest.mark.parametrize("layout", sorted(set(synth.LAYOUTS) - {"spec_failed"}))
def test_synthetic_small_and_plain(layout, tmp_path):
    assert len(synth.LAYOUTS[layout]()[1]) < 200_000
    for spectrum in _read(layout, tmp_path):
        _plain_meta(spectrum)
        assert spectrum.meta["flux_unit"] == sdss.FLUX_UNIT


def _common_pixels(spectrum):
    assert spectrum.mask[list(synth.IVAR_ZERO)].all()
    assert spectrum.mask[list(synth.BRIGHTSKY_PIXELS)].all()
    assert not spectrum.mask[list(synth.NEARBADPIXEL_PIXELS)].any()


def test_spec_legacy_round_trip(tmp_path):
    (spectrum,) = _read("spec_legacy", tmp_path)
    p = synth.LEGACY
    assert spectrum.survey == "sdss"
    # exact grid although the file stores loglam as float32
    expected = 10.0 ** ((p["start"] + np.arange(p["n"])) * 1e-4)
    assert np.allclose(spectrum.wave, expected, rtol=1e-13, atol=0)
    flux, ivar = synth.model_spectrum(expected, p["z"], seed=1)
    good = ~spectrum.mask
    assert np.array_equal(spectrum.flux[good], flux[good])
    assert np.array_equal(spectrum.ivar[good], ivar[good])
    _common_pixels(spectrum)
    assert not spectrum.mask[p["n"] // 2 :].any()  # MANYBADCOLUMNS half stays good
    m = spectrum.meta
    assert m["object_id"] == "sdss-0500-52000-0100"
    assert (m["ra"], m["dec"]) == (p["ra"], p["dec"])  # fibre position, not the boresight
    assert (m["class"], m["subclass"], m["z"], m["zwarning"]) == ("GALAXY", "STARFORMING", 0.1234, 0)
    assert m["snr"] == 12.5 and m["run2d"] == "26"
    assert m["specobjid"] == "563015890000000000" and m["photo_objid"] == "1237650000000000001"
    assert (m["plate"], m["mjd"], m["fiberid"]) == (500, 52000, 100)


def test_spec_boss_decided_by_mjd(tmp_path):
    (spectrum,) = _read("spec_boss", tmp_path)
    assert spectrum.survey == "boss"
    assert spectrum.meta["object_id"] == "boss-7338-56660-0733"
    assert spectrum.meta["class"] == "QSO" and spectrum.meta["z"] == 0.456
    assert spectrum.meta["photo_objid"] == "1237661385994338550"
    assert 3599 < spectrum.wave[0] < 3601 and spectrum.wave[-1] > 10300
    _common_pixels(spectrum)


def test_spec_failed_raises_with_zwarning():
    name, data = synth.spec_failed()
    with pytest.raises(sc.SpectrumError, match=r"flagged.*ZWARNING=6.*no pixel is usable"):
        sc.read_spectra(data, name=name)


def test_spspec_dr7_image_layout(tmp_path):
    (spectrum,) = _read("spspec_dr7", tmp_path)
    p = synth.SPSPEC
    assert spectrum.meta["format"] == "sdss_spspec" and spectrum.survey == "sdss"
    wave = 10.0 ** ((p["start"] + np.arange(p["n"])) * 1e-4)
    assert np.allclose(spectrum.wave, wave, rtol=1e-13, atol=0)
    flux, ivar = synth.model_spectrum(wave, p["z"], seed=4)
    good = ~spectrum.mask
    # ivar from the error row: 1/sigma^2, through float32 storage of sigma
    assert np.allclose(spectrum.ivar[good], ivar[good], rtol=1e-5)
    assert np.array_equal(spectrum.flux[good], flux[good])
    _common_pixels(spectrum)
    m = spectrum.meta
    assert (m["class"], m["z"], m["zwarning"]) == ("QSO", 1.05, 0)
    assert (m["ra"], m["dec"], m["object_id"]) == (p["ra"], p["dec"], "sdss-0300-51900-0042")


def test_spplate_skips_sky_and_unplugged(tmp_path):
    spectra = _read("spplate", tmp_path)
    assert [s.meta["fiberid"] for s in spectra] == [1, 3]
    assert [s.meta["objtype"] for s in spectra] == ["GALAXY", "QSO"]
    assert spectra[0].meta["object_id"] == "sdss-0400-51800-0001"
    assert spectra[1].meta["ra"] == 32.0
    assert spectra[0].mask[list(synth.BRIGHTSKY_PIXELS)].all()
    problems = sc.read_spectra(synth.spplate()[1], name="p.fits").problems
    assert len(problems) == 2
    assert "fibre 2: sky fibre" in problems[0] and "fibre 4: unplugged" in problems[1]


def test_survey_rule():
    wave_sdss = np.array([3800.0, 9200.0])
    wave_boss = np.array([3600.0, 10400.0])
    assert sdss.survey_key("BOSS", 51000, wave_sdss) == "boss"  # INSTRUMENT wins
    assert sdss.survey_key(None, sdss.BOSS_FIRST_MJD - 1, wave_boss) == "sdss"
    assert sdss.survey_key(None, sdss.BOSS_FIRST_MJD, wave_sdss) == "boss"
    assert sdss.survey_key(None, None, wave_boss) == "boss"
    assert sdss.survey_key("", None, wave_sdss) == "sdss"


def test_lamost_like_image_is_not_claimed():
    image = np.ones((5, 200), dtype=np.float32)
    hdu = fits.PrimaryHDU(image)
    hdu.header["TELESCOP"] = "LAMOST"
    hdu.header["COEFF0"], hdu.header["COEFF1"] = 3.5682, 1e-4
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    source = Source(buffer.getvalue(), "lamost.fits")
    assert not sdss._identify_spspec(source) and not sdss._identify_spplate(source)


def test_damaged_inputs():
    name, data = synth.spec_legacy()
    with pytest.raises(sc.SpectrumError, match="truncated or corrupt"):
        sc.read_spectra(data[: len(data) // 2], name=name)
    with fits.open(io.BytesIO(synth.spspec_dr7()[1])) as hdul:
        hdul[0].header["COEFF0"] = 42.0
        buffer = io.BytesIO()
        hdul.writeto(buffer)
    with pytest.raises(sc.SpectrumError, match="COEFF0"):
        sc.read_spectra(buffer.getvalue(), name="spSpec.fit", format="sdss_spspec")

