"""LAMOST readers: LRS (DR1-7 image and DR8+ table) and MRS, on synthetic and real files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

import spectok_core as sc
from spectok_core import SpectrumError, air_to_vacuum
from tests.conftest import require_shared, shared_files
from tests.synthetic import lamost as syn

LRS_GRID = 10.0 ** (3.5682 + 1e-4 * np.arange(3909))  # 3699.99-9099.13 Å


def read(make, **options):
    name, data = make()
    return sc.read_spectra(data, name=name, **options)


# -- synthetic: LRS ------------------------------------------------------------------


@pytest.mark.parametrize("make", [syn.make_lrs_image, syn.make_lrs_table], ids=["image", "table"])
def test_lrs_layouts_round_trip(make, tmp_path):
    name, data = make()
    path = tmp_path / name
    path.write_bytes(data)
    rows = syn.lrs_arrays()
    for spectra in (sc.read_spectra(path), sc.read_spectra(data, name=name)):
        (spectrum,) = spectra
        assert spectrum.meta["format"] == "lamost_lrs" and spectrum.survey == "lamost_lrs"
        np.testing.assert_allclose(spectrum.wave, LRS_GRID, rtol=1e-6)
        good = spectrum.good
        np.testing.assert_array_equal(spectrum.flux[good], rows["flux"][good])
        np.testing.assert_array_equal(spectrum.ivar[good], rows["ivar"][good])
        # ANDMASK pixels and ivar = 0 are bad; ORMASK-only pixels are kept.
        bad = list(syn.LRS_ANDMASK + syn.LRS_IVAR_ZERO)
        assert spectrum.mask[bad].all() and spectrum.mask.sum() == len(bad)
        assert not spectrum.mask[list(syn.LRS_ORMASK)].any()


def test_lrs_metadata():
    (spectrum,) = read(syn.make_lrs_image)
    meta, p = spectrum.meta, syn.LRS
    assert meta["object_id"] == f"lamost-{p['obsid']}" and meta["obsid"] == p["obsid"]
    assert meta["designation"] == p["desig"] and (meta["ra"], meta["dec"]) == (p["ra"], p["dec"])
    assert meta["class"] == "STAR" and meta["subclass"] == "G2"
    assert meta["z"] == p["z"] and meta["z_err"] == p["z_err"]
    assert meta["snr_g"] == 80.0 and meta["snr_z"] == 110.0 and "snr" not in meta
    assert (meta["lmjd"], meta["planid"], meta["spid"], meta["fiberid"]) == (
        p["lmjd"], p["planid"], p["spid"], p["fiberid"])
    assert meta["heliocentric"] is True and "converted_from_air" not in meta
    assert all(isinstance(v, (str, int, float, bool)) for v in meta.values())


def test_lrs_air_wavelengths_are_converted():
    (vacuum,) = read(syn.make_lrs_image)
    (air,) = read(lambda: syn.make_lrs_image(vacuum=False))
    np.testing.assert_allclose(air.wave, air_to_vacuum(vacuum.wave), rtol=1e-12)
    assert air.wave[2000] - vacuum.wave[2000] > 1.0  # ~1.5 Å at 5500 Å
    assert air.meta["converted_from_air"] is True


def test_lrs_table_without_ivar_is_not_an_lrs_file():
    name, data = syn.make_lrs_table()
    hdul = fits.open(io.BytesIO(data))
    hdul[1].columns.del_col("IVAR")
    table = fits.BinTableHDU.from_columns(hdul[1].columns, name="COADD")
    buffer = io.BytesIO()
    fits.HDUList([hdul[0], table]).writeto(buffer)
    with pytest.raises(SpectrumError):
        sc.read_spectra(buffer.getvalue(), name=name, format="lamost_lrs")


# -- synthetic: MRS ------------------------------------------------------------------


def test_mrs_coadd_arms_become_one_spectrum():
    (spectrum,) = read(syn.make_mrs)
    blue, red = syn.mrs_coadd("B"), syn.mrs_coadd("R")
    n_blue = blue["FLUX"].size
    assert spectrum.meta["format"] == "lamost_mrs" and spectrum.survey == "lamost_mrs"
    assert len(spectrum) == n_blue + red["FLUX"].size and np.all(np.diff(spectrum.wave) > 0)
    np.testing.assert_allclose(spectrum.wave[:n_blue], 10.0 ** blue["LOGLAM"].astype(np.float64))
    np.testing.assert_allclose(spectrum.wave[n_blue:], 10.0 ** red["LOGLAM"].astype(np.float64))
    # a jump across the gap between the arms, with no pixels invented inside it
    assert spectrum.wave[n_blue] - spectrum.wave[n_blue - 1] > 1000
    np.testing.assert_array_equal(spectrum.flux[n_blue:], red["FLUX"])
    assert spectrum.mask[list(syn.MRS_ANDMASK_B)].all() and spectrum.mask.sum() == len(syn.MRS_ANDMASK_B)
    assert not spectrum.mask[n_blue + np.array(syn.MRS_ORMASK_R)].any()
    meta = spectrum.meta
    assert meta["snr_b"] == 50.0 and meta["snr_r"] == 80.0 and meta["arms"] == "B+R"
    assert meta["object_id"] == f"lamost-{syn.MRS['obsid']}" and meta["spectrum_kind"] == "coadd"
    assert 50.0 < spectrum.median_snr < 80.0


def test_mrs_exposures_option():
    spectra = read(syn.make_mrs, mrs_exposures=True)
    assert [s.meta["lmjm"] for s in spectra] == [int(x) for x in syn.MRS["lmjm"]]
    first = spectra[0]
    blue = syn.mrs_exposure("B", 0)
    red = syn.mrs_exposure("R", 0)
    n_blue = blue["FLUX"].size
    assert first.meta["spectrum_kind"] == "exposure" and first.meta["exptime"] == 600.0
    assert np.all(np.diff(first.wave) > 0)
    # the red arm is stored with falling wavelength: it comes back reversed
    expected = np.where(first.mask[n_blue:], 0.0, red["FLUX"][::-1])
    np.testing.assert_array_equal(first.flux[n_blue:], expected)
    assert first.mask[n_blue + syn.MRS_PIXMASK_R] and first.mask.sum() == 1
    assert spectra[1].mask.sum() == 0


def test_mrs_option_must_be_bool():
    with pytest.raises(SpectrumError, match="mrs_exposures"):
        read(syn.make_mrs, mrs_exposures="yes")


def test_mrs_without_coadd_falls_back_to_exposures():
    name, data = syn.make_mrs()
    hdul = fits.open(io.BytesIO(data))
    buffer = io.BytesIO()
    fits.HDUList([h for h in hdul if not h.name.startswith("COADD")]).writeto(buffer)
    spectra = sc.read_spectra(buffer.getvalue(), name=name)
    assert len(spectra) == 2 and all(s.meta["spectrum_kind"] == "exposure" for s in spectra)
    assert any("no coadded" in problem for problem in spectra.problems)


def test_mrs_overlapping_arms_are_refused():
    with pytest.raises(SpectrumError, match="do not overlap"):
        read(lambda: syn.make_mrs(overlap=True))


def test_truncated_lamost_file_is_a_spectrum_error():
    name, data = syn.make_mrs()
    with pytest.raises(SpectrumError):
        sc.read_spectra(data[: len(data) - 5000], name=name)


# -- real files ----------------------------------------------------------------------

LRS_REAL = {  # obsid: (class, subclass, z, snr_g, snr_i)
    359910161: ("STAR", "F5", -0.00017162, 87.63, 158.11),
    677503031: ("STAR", "G3", -0.0000064, 153.72, 320.95),
}


@pytest.mark.parametrize("path", shared_files("lamost/lrs"), ids=lambda p: p.name)
def test_real_lrs(path):
    (spectrum,) = sc.read_spectra(require_shared(path))
    meta = spectrum.meta
    cls, subclass, z, snr_g, snr_i = LRS_REAL[meta["obsid"]]
    assert meta["format"] == "lamost_lrs" and (meta["class"], meta["subclass"]) == (cls, subclass)
    assert meta["z"] == pytest.approx(z, abs=1e-9)
    assert meta["snr_g"] == snr_g and meta["snr_i"] == snr_i
    assert len(spectrum) == 3909
    # vacuum log-linear grid from 10**3.5682 in 1e-4 dex steps, stored as float32
    np.testing.assert_allclose(spectrum.wave, LRS_GRID, rtol=1e-6)
    assert spectrum.wave[0] == pytest.approx(3699.99, abs=0.01)
    assert spectrum.wave[-1] == pytest.approx(9099.13, abs=0.01)
    # the per-pixel median S/N lies between the g- and i-band S/N the pipeline states
    assert 0.9 * snr_g < spectrum.median_snr < snr_i
    assert spectrum.mask.mean() < 0.02


#: real MRS files: LMJD -> (obsid, snr_b, snr_r)
MRS_REAL = {
    58268: (666212076, 0.0, 1.01),  # the fibre saw almost nothing: S/N ~ 0
    58269: (666512076, 0.23, 0.98),  # idem
    58270: (666912076, 65.28, 104.81),
    58408: (681001015, 120.75, 280.75),  # the other star
    58625: (744812076, 26.54, 44.67),
    58644: (747012076, 52.25, 80.37),
    58646: (747412076, 26.2, 45.34),
    58649: (747810159, 88.36, 143.84),
}


@pytest.mark.parametrize("path", shared_files("lamost/mrs"), ids=lambda p: p.name)
def test_real_mrs(path):
    (spectrum,) = sc.read_spectra(require_shared(path))
    meta = spectrum.meta
    obsid, snr_b, snr_r = MRS_REAL[meta["lmjd"]]
    assert meta["format"] == "lamost_mrs" and meta["obsid"] == obsid
    assert (meta["snr_b"], meta["snr_r"]) == (snr_b, snr_r)
    wave = spectrum.wave
    assert 4890 < wave[0] < 4910 and 6840 < wave[-1] < 6875
    assert not np.any((wave > 5400) & (wave < 6270))  # the gap between the arms
    blue = wave < 6000
    assert 4000 < blue.sum() < 4200 and 3600 < (~blue).sum() < 3850
    # 1e-5 dex steps inside each arm (float32 LOGLAM: within 3 %)
    steps = np.diff(np.log10(wave))
    np.testing.assert_allclose(steps[np.abs(steps - 1e-5) < 1e-6], 1e-5, rtol=0.03)
    assert np.sum(steps > 1e-3) == 1
    assert min(snr_b, snr_r) - 0.5 <= spectrum.median_snr <= 1.1 * max(snr_b, snr_r)
    if meta["obsid"] != 681001015:  # seven epochs of KIC 8098300
        assert meta["ra"] == pytest.approx(292.0587, abs=1e-3)
        assert meta["dec"] == pytest.approx(43.9253, abs=1e-3)


def test_real_mrs_exposures():
    found = shared_files("lamost/mrs", "med-58408-*")
    if not found:
        pytest.skip("real MRS file not present")
    spectra = sc.read_spectra(found[0], mrs_exposures=True)
    assert len(spectra) == 7
    for spectrum in spectra:
        assert spectrum.meta["arms"] == "B+R" and np.all(np.diff(spectrum.wave) > 0)
        assert 4893 < spectrum.wave[0] < 4895 and 6845 < spectrum.wave[-1] < 6847
        assert 20 < spectrum.median_snr < 150
