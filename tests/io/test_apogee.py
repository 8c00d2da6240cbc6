"""APOGEE readers: apStar, apVisit, aspcapStar and The Payne .npz, on synthetic and real files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

import spectok_core as sc
from spectok_core import SpectrumError
from spectok_core.io import apogee as reader
from tests.conftest import require_shared, shared_files
from tests.synthetic import apogee as syn

APSTAR_GRID_END = 10.0 ** (4.179 + 8574 * 6e-6)  # 16999.8 Å


def read(make, **options):
    name, data = make()
    return sc.read_spectra(data, name=name, **options)


# -- synthetic: apStar ---------------------------------------------------------------


def test_apstar_reads_combined_row_with_wcs_errors_and_mask(tmp_path):
    name, data = syn.make_apstar()
    path = tmp_path / name
    path.write_bytes(data)
    (spectrum,) = sc.read_spectra(path)
    flux, error, _ = syn.apstar_arrays()
    np.testing.assert_allclose(spectrum.wave, syn.apstar_wave(), rtol=1e-12)
    assert spectrum.meta["format"] == "apogee_apstar" and spectrum.survey == "apogee"
    good = spectrum.good
    np.testing.assert_allclose(spectrum.flux[good], flux[0][good])
    np.testing.assert_allclose(spectrum.ivar[good], 1.0 / error[0][good].astype(np.float64) ** 2, rtol=1e-5)
    # BADPIX and NOT_ENOUGH_PSF are bad; SIG_SKYLINE is only a warning.
    assert spectrum.mask[list(syn.APSTAR_BADPIX + syn.APSTAR_PSF)].all()
    assert not spectrum.mask[list(syn.APSTAR_SKYLINE)].any()
    start, stop = syn.APSTAR["gap"]
    assert spectrum.mask[start:stop].all() and (spectrum.ivar[start:stop] == 0).all()
    assert spectrum.median_snr == pytest.approx(syn.APSTAR["snr"], rel=0.05)


def test_apstar_metadata():
    (spectrum,) = read(syn.make_apstar)
    meta, p = spectrum.meta, syn.APSTAR
    assert meta["object_id"] == p["object_id"]
    assert (meta["ra"], meta["dec"]) == (p["ra"], p["dec"])
    assert meta["nvisits"] == 2 and meta["snr"] == p["snr"] and meta["apstar_row"] == 0
    assert (meta["teff"], meta["logg"], meta["feh"]) == (p["teff"], p["logg"], p["feh"])
    assert meta["restframe"] is True
    assert meta["flux_unit"] == "1e-17 erg/s/cm2/Angstrom"
    assert all(isinstance(v, (str, int, float, bool)) for v in meta.values())
    assert "sfd_ebv" not in meta  # -9999 fill values are never copied


def test_apstar_row_option_selects_a_visit():
    (spectrum,) = read(syn.make_apstar, apstar_row=3)
    flux, _, _ = syn.apstar_arrays()
    assert spectrum.meta["spectrum_kind"] == "visit 2"
    assert spectrum.meta["snr"] == syn.APSTAR["snrvis"][1]
    np.testing.assert_allclose(spectrum.flux[spectrum.good], flux[3][spectrum.good])
    start, stop = syn.APSTAR["gap"]
    assert spectrum.mask[start:stop].all()  # zeros in visit rows


@pytest.mark.parametrize("row", [4, -1, "0", True])
def test_apstar_bad_row_option(row):
    with pytest.raises(SpectrumError, match="apstar_row"):
        read(syn.make_apstar, apstar_row=row)


def test_apstar_empty_row_is_refused():
    name, data = syn.make_apstar()
    hdul = fits.open(io.BytesIO(data))
    hdul[1].data[1] = 0.0
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    with pytest.raises(SpectrumError, match="row 1 .* empty"):
        sc.read_spectra(buffer.getvalue(), name=name, apstar_row=1)


# -- synthetic: apVisit --------------------------------------------------------------


def test_apvisit_sorts_chips_into_increasing_wavelength():
    (spectrum,) = read(syn.make_apvisit)
    wave, flux, error, _ = syn.apvisit_arrays()
    assert spectrum.meta["format"] == "apogee_apvisit"
    assert np.all(np.diff(spectrum.wave) > 0) and len(spectrum) == wave.size
    # The last pixel of the file's last (blue) chip is the shortest wavelength.
    assert spectrum.wave[0] == wave[-1, -1] and spectrum.wave[-1] == wave[0, 0]
    assert spectrum.flux[1] == flux[-1, -2]
    assert spectrum.ivar[1] == pytest.approx(1.0 / float(error[-1, -2]) ** 2, rel=1e-5)
    assert spectrum.mask[syn.APVISIT_BADPIX] and spectrum.mask.sum() == 1
    p = syn.APVISIT
    meta = spectrum.meta
    assert meta["object_id"] == p["object_id"] and meta["snr"] == p["snr"]
    assert (meta["plate"], meta["mjd"], meta["fiberid"]) == (p["plate"], p["mjd"], p["fiberid"])
    assert meta["restframe"] is False


# -- synthetic: aspcapStar -----------------------------------------------------------


def test_aspcapstar_normalised_flux_labels_and_gaps():
    (spectrum,) = read(syn.make_aspcapstar)
    flux, error, _ = syn.aspcap_arrays()
    assert spectrum.meta["format"] == "apogee_aspcapstar" and len(spectrum) == 8575
    np.testing.assert_allclose(spectrum.wave, reader.apstar_wavelengths())
    good = spectrum.good
    np.testing.assert_allclose(spectrum.flux[good], flux[good])
    # Exactly the ASPCAP pixels minus the two with inflated errors are usable.
    assert good.sum() == reader.ASPCAP_NPIX - len(syn.ASPCAP_INFLATED)
    assert spectrum.mask[list(syn.ASPCAP_INFLATED)].all()
    meta, p = spectrum.meta, syn.ASPCAP
    assert meta["object_id"] == p["object_id"]
    assert meta["teff"] == pytest.approx(p["teff"]) and meta["teff_err"] == pytest.approx(p["teff_err"])
    assert meta["logg"] == pytest.approx(p["logg"]) and meta["feh"] == pytest.approx(p["fe_h"])
    assert meta["alpha_m"] == pytest.approx(p["alpha_m"]) and meta["m_h"] == pytest.approx(p["m_h"])
    assert "logg_err" not in meta  # NaN in the table
    assert meta["continuum_normalized"] is True


# -- synthetic: The Payne ------------------------------------------------------------


def test_aspcap_grid_is_the_apstar_grid_without_chip_gaps():
    wave = reader.aspcap_wavelengths()
    assert wave.size == 7214 and np.all(np.diff(wave) > 0)
    full = reader.apstar_wavelengths()
    assert wave[0] == full[322] and wave[2919] == full[3241] and wave[2920] == full[3648]
    assert wave[-1] == full[8305]


def test_payne_single_spectrum():
    (spectrum,) = read(syn.make_payne_spectrum)
    flux, _ = syn.payne_arrays((syn.PAYNE_SNR,), 4)
    assert spectrum.meta["format"] == "apogee_payne_npz"
    np.testing.assert_array_equal(spectrum.wave, reader.aspcap_wavelengths())
    assert spectrum.mask[list(syn.PAYNE_INFLATED)].all() and spectrum.mask.sum() == len(syn.PAYNE_INFLATED)
    np.testing.assert_allclose(spectrum.flux, np.where(spectrum.mask, 0, flux[0]))
    assert spectrum.median_snr == pytest.approx(syn.PAYNE_SNR, rel=0.05)
    assert spectrum.meta["object_id"] == "2M01234567+7654321"


def test_payne_visits_from_path_and_bytes(tmp_path):
    name, data = syn.make_payne_visits()
    path = tmp_path / name
    path.write_bytes(data)
    for spectra in (sc.read_spectra(path), sc.read_spectra(data, name=name)):
        assert len(spectra) == 2
        for spectrum, snr in zip(spectra, syn.PAYNE_VISIT_SNRS):
            assert spectrum.meta["snr"] == snr
            assert spectrum.median_snr == pytest.approx(snr, rel=0.1)
        assert [s.meta["vhelio"] for s in spectra] == [10.0, -20.0]


def test_payne_wavelength_file_is_refused_clearly():
    with pytest.raises(SpectrumError, match="wavelength grid .* not a spectrum"):
        read(syn.make_payne_wavelength)


def test_payne_bytes_without_name_have_no_object_id():
    _, data = syn.make_payne_spectrum()
    (spectrum,) = sc.read_spectra(data)
    assert "object_id" not in spectrum.meta


def test_npz_of_other_length_is_not_claimed():
    from spectok_core.io.source import Source

    data = syn._npz({"spectrum": np.ones(100), "spec_err": np.ones(100)})
    assert not reader._is_payne_npz(Source(data, "x.npz"))
    with pytest.raises(SpectrumError):
        sc.read_spectra(data, name="x.npz", format="apogee_payne_npz")


def test_truncated_apstar_is_a_spectrum_error():
    name, data = syn.make_apstar()
    with pytest.raises(SpectrumError):
        sc.read_spectra(data[: len(data) // 2], name=name)


# -- real files ---------------------------------------------------------------------

APSTAR_REAL = {
    # object_id: (nvisits, header SNR, RV_TEFF, RV_LOGG)
    "2M17335483-2753043": (3, 154.2, 3677.0, 0.53),
    "2M19485057+5005279": (1, 137.5, 5226.0, 5.0),
}


@pytest.mark.parametrize("path", shared_files("apogee", "apStar-*.fits"), ids=lambda p: p.name)
def test_real_apstar(path):
    (spectrum,) = sc.read_spectra(require_shared(path))
    object_id = path.stem.split("-", 2)[2]
    nvisits, snr, teff, logg = APSTAR_REAL[object_id]
    assert spectrum.meta["format"] == "apogee_apstar" and spectrum.meta["object_id"] == object_id
    assert len(spectrum) == 8575
    assert spectrum.wave[0] == pytest.approx(15100.8, abs=0.05)
    assert spectrum.wave[-1] == pytest.approx(APSTAR_GRID_END, rel=1e-12)
    good = spectrum.wave[spectrum.good]
    assert 15140 < good[0] < 15200 and 16900 < good[-1] < 16960  # chip ends, not grid ends
    # chip gaps (NaN in the combined row) are masked
    assert spectrum.mask[(spectrum.wave > 15820) & (spectrum.wave < 15850)].all()
    assert spectrum.mask[(spectrum.wave > 16440) & (spectrum.wave < 16470)].all()
    assert spectrum.meta["nvisits"] == nvisits and spectrum.meta["snr"] == pytest.approx(snr, abs=0.1)
    assert spectrum.median_snr == pytest.approx(snr, rel=0.02)
    assert spectrum.meta["teff"] == pytest.approx(teff, abs=1) and spectrum.meta["logg"] == pytest.approx(logg, abs=0.01)


def real(name: str):
    found = shared_files("apogee", name)
    if not found:
        pytest.skip(f"real file {name} not present")
    return found[0]


def test_real_apstar_visit_rows():
    path = real("apStar-dr17-2M17335483-2753043.fits")
    for row, snr in ((2, 67.2), (3, 90.6), (4, 105.9)):
        (spectrum,) = sc.read_spectra(path, apstar_row=row)
        assert spectrum.meta["snr"] == pytest.approx(snr, abs=0.1)
        assert spectrum.median_snr == pytest.approx(snr, rel=0.02)
    with pytest.raises(SpectrumError, match="out of range"):
        sc.read_spectra(path, apstar_row=5)


def test_real_single_visit_apstar_has_empty_second_row():
    path = real("apStar-dr17-2M19485057+5005279.fits")
    with pytest.raises(SpectrumError, match="empty .*row 0 only"):
        sc.read_spectra(path, apstar_row=1)


APVISIT_REAL = {  # file stem: (object_id, header SNR (middle chip))
    "apVisit-r13-5095-55844-128": ("2M01183798+8403419", 44.97),
    "apVisit-r13-9518-57729-104": ("2M00242666+5341178", 89.59),
}


@pytest.mark.parametrize("path", shared_files("apogee", "apVisit-*.fits"), ids=lambda p: p.name)
def test_real_apvisit(path):
    (spectrum,) = sc.read_spectra(require_shared(path))
    object_id, snr = APVISIT_REAL[path.stem]
    _, _, plate, mjd, fiber = path.stem.split("-")
    meta = spectrum.meta
    assert meta["format"] == "apogee_apvisit" and meta["object_id"] == object_id
    assert (meta["plate"], meta["mjd"], meta["fiberid"]) == (plate, int(mjd), int(fiber))
    assert len(spectrum) == 3 * 4096 and np.all(np.diff(spectrum.wave) > 0)
    assert 15140 < spectrum.wave[0] < 15145 and 16954 < spectrum.wave[-1] < 16956
    assert meta["snr"] == pytest.approx(snr, abs=0.01)
    # the header S/N is the middle chip's; the whole-spectrum median is close to it
    assert spectrum.median_snr == pytest.approx(snr, rel=0.1)
    assert 0 < spectrum.mask.sum() < 0.05 * len(spectrum)


def test_real_payne_grid_matches_the_shipped_wavelength_file():
    path = real("thepayne_apogee_wavelength.npz")
    with np.load(path, allow_pickle=False) as archive:
        shipped = archive["wavelength"]
    ours = reader.aspcap_wavelengths()
    assert ours.shape == shipped.shape == (7214,)
    # Equal to floating-point rounding (the file was made with another float path).
    np.testing.assert_allclose(ours, shipped, rtol=1e-12, atol=0)
    with pytest.raises(SpectrumError, match="not a spectrum"):
        sc.read_spectra(path)


@pytest.mark.parametrize(
    "path", shared_files("apogee", "thepayne_*_ap_id_*.npz"), ids=lambda p: p.name
)
def test_real_payne_spectra(path):
    spectra = sc.read_spectra(require_shared(path))
    with np.load(path, allow_pickle=False) as archive:
        snrs = archive["snrs"] if "snrs" in archive.files else None
    assert all(len(s) == 7214 and s.meta["format"] == "apogee_payne_npz" for s in spectra)
    assert spectra[0].wave[0] == pytest.approx(15168.13, abs=0.01)
    assert spectra[0].wave[-1] == pytest.approx(16936.75, abs=0.01)
    if snrs is None:
        assert len(spectra) == 1 and spectra[0].meta["object_id"] == "2M13012770+5754582"
        assert spectra[0].median_snr == pytest.approx(196, rel=0.05)
    else:
        assert len(spectra) == 3
        for spectrum, snr in zip(spectra, snrs):
            assert spectrum.median_snr == pytest.approx(float(snr), rel=0.05)
    for spectrum in spectra:
        # pixels The Payne excluded (error ~100) are masked, a few percent of the grid
        assert 0.02 < spectrum.mask.mean() < 0.15
        assert np.median(spectrum.flux[spectrum.good]) == pytest.approx(1.0, abs=0.05)
