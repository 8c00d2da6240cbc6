"""Mask conventions of the writers: specutils' wcs1d-fits / tabular-fits, and hand-made layouts."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from astropy.io import fits

import spectok_core as sc
from spectok_core.io.image1d import interpret_mask
from spectok_core.spectrum import air_to_vacuum
from tests.synthetic import image1d as synth

# -- the rule ------------------------------------------------------------------------------


def test_rule_names_flags_and_fractions():
    ones_mostly = np.ones(100, np.uint8)
    ones_mostly[:5] = 0
    bad, why = interpret_mask(ones_mostly)
    assert bad.sum() == 5 and why.startswith("good-pixel")  # fraction: a good mask
    bad, why = interpret_mask(ones_mostly, boolean=True)  # specutils BFORM='L': True = masked
    assert bad.sum() == 95 and "True = masked" in why
    bad, _ = interpret_mask(ones_mostly, name="BADPIX")
    assert bad.sum() == 95
    bad, _ = interpret_mask(1 - ones_mostly, name="GOODPIX")
    assert bad.sum() == 95
    bad, _ = interpret_mask(1 - ones_mostly, text="COMMENT 1 = good pixel")
    assert bad.sum() == 95
    few = np.zeros(100, np.uint8)
    few[:5] = 1
    assert interpret_mask(few)[0].sum() == 5  # few ones: a bad-pixel mask
    # pixels without data decide against the fraction: here they sit at 1, so 1 = bad
    mostly_bad = np.ones(100, np.uint8)
    mostly_bad[:30] = 0
    no_data = np.zeros(100, bool)
    no_data[50:60] = True
    bad, why = interpret_mask(mostly_bad, unmeasured=no_data)
    assert bad.sum() == 70 and "without data" in why
    # a multi-bit mask is a bitmask, whatever its fraction
    bits = np.full(100, 16, np.int32)
    bits[:3] = 1 << 23
    assert interpret_mask(bits)[0].all()
    assert interpret_mask(bits, bitmask=lambda v: (v & (1 << 23)) != 0)[0].sum() == 3


# -- hand-made layouts ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(synth.LAYOUTS))
def test_hand_made_layouts_flag_exactly_the_unusable_pixels(layout):
    name, data = synth.LAYOUTS[layout]()
    (spectrum,) = sc.read_spectra(data, name=name)
    assert np.array_equal(spectrum.mask, synth.unusable()), spectrum.meta.get("mask_convention")
    assert spectrum.meta["mask_convention"]
    assert spectrum.median_snr > 5


def test_sdss_image_with_good_mask_is_boss_and_keeps_its_pixels():
    name, data = synth.sdss_goodmask()
    (spectrum,) = sc.read_spectra(data, name=name)
    assert spectrum.survey == "boss" and spectrum.meta["format"] == "sdss_spplate"
    assert spectrum.mask.mean() < 0.05  # it was 0.97 when HDU2 was read as an AND mask
    assert "good-pixel" in spectrum.meta["mask_convention"]
    wave, flux, ivar = synth.source()
    assert np.allclose(spectrum.wave, wave, rtol=1e-12)
    good = ~spectrum.mask
    assert np.allclose(spectrum.ivar[good], ivar[good], rtol=1e-6)


def test_sdss_image_with_err_hdu_converts_sigma():
    (spectrum,) = sc.read_spectra(synth.sdss_goodpix_err()[1], name="x.fits")
    _, _, ivar = synth.source()
    good = ~spectrum.mask
    assert np.allclose(spectrum.ivar[good], ivar[good], rtol=1e-5)


def test_iraf_log_grid_and_air_grid():
    (log_spec,) = sc.read_spectra(synth.iraf_log_goodmask()[1], name="x.fits")
    assert log_spec.meta["format"] == "fits_image"
    assert np.allclose(log_spec.wave, 10.0 ** ((synth.START + np.arange(synth.N)) * 1e-4))
    assert log_spec.meta["object_id"] == "galaxy-iraf"
    (air,) = sc.read_spectra(synth.air_badmask()[1], name="x.fits")
    expected = air_to_vacuum(synth.AIR_START + synth.AIR_STEP * np.arange(synth.N))
    assert np.allclose(air.wave, expected) and air.wave[0] > synth.AIR_START + 1.0


def test_image_without_a_wavelength_solution_is_refused():
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.ones(500, np.float32)).writeto(buffer)
    with pytest.raises(sc.SpectrumError, match="none of the known spectrum layouts"):
        sc.read_spectra(buffer.getvalue(), name="bare.fits")


def test_table_good_column_and_mostly_set_mask():
    wave, flux, ivar = synth.source()
    good = (~synth.unusable()).astype(np.uint8)
    for name, values in (("good", good), ("mask", good)):
        hdu = fits.BinTableHDU.from_columns([
            fits.Column("wave", "D", array=wave), fits.Column("flux", "E", array=flux),
            fits.Column("ivar", "E", array=ivar), fits.Column(name, "B", array=values)])
        buffer = io.BytesIO()
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
        (spectrum,) = sc.read_spectra(buffer.getvalue(), name="t.fits")
        assert np.array_equal(spectrum.mask, synth.unusable()), name


# -- specutils' own writers -------------------------------------------------------------------


def _specutils_spectrum(mask, wcs_log=False):
    specutils = pytest.importorskip("specutils")
    import astropy.units as u
    from astropy.nddata import InverseVariance, StdDevUncertainty
    from astropy.wcs import WCS

    make = getattr(specutils, "Spectrum", None) or specutils.Spectrum1D  # renamed in 2.0
    wave, flux, ivar = synth.source()
    unit = u.Unit("1e-17 erg / (s cm2 Angstrom)")
    if wcs_log:
        wcs = WCS(naxis=1)
        wcs.wcs.ctype, wcs.wcs.cunit = ["WAVE-LOG"], ["Angstrom"]
        wcs.wcs.crval, wcs.wcs.crpix = [wave[0]], [1.0]
        wcs.wcs.cdelt = [wave[0] * np.log(10.0) * 1e-4]
        with np.errstate(divide="ignore"):
            sigma = np.where(ivar > 0, 1 / np.sqrt(ivar), np.inf)
        return make(flux=flux * unit, wcs=wcs, mask=mask,
                                  uncertainty=StdDevUncertainty(sigma * unit))
    return make(flux=flux * unit, spectral_axis=wave * u.AA, mask=mask,
                              uncertainty=InverseVariance(ivar * unit**-2))


@pytest.mark.parametrize("fmt", ["wcs1d-fits", "tabular-fits"])
def test_specutils_boolean_mask_true_is_bad(fmt, tmp_path):
    spectrum = _specutils_spectrum(synth.unusable(), wcs_log=fmt == "wcs1d-fits")
    path = tmp_path / "s.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spectrum.write(path, format=fmt)
    (read,) = sc.read_spectra(path)
    assert np.array_equal(read.mask, synth.unusable())
    assert np.allclose(read.wave, synth.source()[0], rtol=1e-9)
    assert "True = masked" in read.meta["mask_convention"]


@pytest.mark.parametrize("fmt", ["wcs1d-fits", "tabular-fits"])
def test_specutils_written_good_pixel_mask(fmt, tmp_path):
    """A package that hands specutils a uint8 good-pixel mask (1 = use) as ``mask``."""
    good = (~synth.unusable()).astype(np.uint8)
    spectrum = _specutils_spectrum(good, wcs_log=fmt == "wcs1d-fits")
    path = tmp_path / "s.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spectrum.write(path, format=fmt)
    (read,) = sc.read_spectra(path)
    assert np.array_equal(read.mask, synth.unusable()), read.meta["mask_convention"]
