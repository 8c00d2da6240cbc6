"""specutils interop: Spectrum.to_specutils() and read_spectra(<specutils spectrum>)."""

from __future__ import annotations

import numpy as np
import pytest

from spectok_core import Spectrum, SpectrumError, read_spectra

specutils = pytest.importorskip("specutils")
u = pytest.importorskip("astropy.units")


def spectrum():
    wave = np.geomspace(3800.0, 9200.0, 600)
    mask = np.zeros(wave.size, bool)
    mask[100:110] = True
    ivar = np.linspace(50.0, 150.0, wave.size)
    return Spectrum(wave, 2.0 + np.sin(wave / 300.0), ivar, mask, "sdss",
                    {"object_id": "spec-1", "z": 0.12, "class": "GALAXY",
                     "flux_unit": "1e-17 erg/s/cm2/Angstrom"})


def test_round_trip_keeps_pixels_units_mask_and_labels():
    original = spectrum()
    obj = original.to_specutils()
    assert obj.spectral_axis.unit == u.AA
    assert obj.flux.unit.is_equivalent(u.erg / u.s / u.cm**2 / u.AA)
    assert obj.flux.unit.to(u.erg / u.s / u.cm**2 / u.AA) == pytest.approx(1e-17)
    assert type(obj.uncertainty).__name__ == "InverseVariance"
    assert obj.mask[100:110].all() and not obj.mask[:100].any()  # True = bad, as NDData
    back = read_spectra(obj)
    assert len(back) == 1
    again = back[0]
    assert again.survey == "sdss" and again.meta["object_id"] == "spec-1"
    assert again.meta["z"] == 0.12 and again.meta["class"] == "GALAXY"
    assert np.allclose(again.wave, original.wave) and np.allclose(again.flux, original.flux)
    assert np.allclose(again.ivar, original.ivar) and np.array_equal(again.mask, original.mask)


def test_a_specutils_spectrum_in_other_units_air_and_a_stack():
    from astropy.nddata import StdDevUncertainty, VarianceUncertainty

    nm = np.linspace(900.0, 400.0, 300)  # decreasing, in nm, air wavelengths
    flux = np.vstack([np.full(300, 2.0), np.full(300, 3.0)]) * u.Jy
    obj = specutils.Spectrum(spectral_axis=nm * u.nm, flux=flux,
                             uncertainty=StdDevUncertainty(np.full((2, 300), 0.5)),
                             meta={"header": {"AIRORVAC": "air", "OBJECT": "NGC 1"}})
    spectra = read_spectra(obj, name="mine")
    assert [s.meta["object_id"] for s in spectra] == ["NGC 1[0]", "NGC 1[1]"]
    first = spectra[0]
    assert np.all(np.diff(first.wave) > 0)  # sorted to increasing wavelength
    assert first.wave[0] == pytest.approx(4001.1, abs=0.2)  # 4000 A air -> vacuum
    assert first.meta["wave_converted"] == "air to vacuum" and first.meta["flux_unit"] == "Jy"
    assert np.allclose(first.ivar, 4.0) and np.allclose(spectra[1].flux, 3.0)
    variance = specutils.Spectrum(spectral_axis=np.linspace(4000, 5000, 50) * u.AA,
                                  flux=np.ones(50) * u.Jy,
                                  uncertainty=VarianceUncertainty(np.full(50, 0.04)))
    assert np.allclose(read_spectra(variance)[0].ivar, 25.0)


def test_refusals_are_clear():
    pixels = specutils.Spectrum(spectral_axis=np.arange(50.0) * u.pix, flux=np.ones(50) * u.Jy)
    with pytest.raises(SpectrumError, match="cannot be converted to a wavelength"):
        read_spectra(pixels)
    with pytest.raises(SpectrumError, match="a path, bytes, a file object or a specutils spectrum"):
        read_spectra(3.5)
    cube = specutils.Spectrum(spectral_axis=np.linspace(4000, 5000, 10) * u.AA,
                              flux=np.ones((2, 2, 10)) * u.Jy)
    with pytest.raises(SpectrumError, match="1-D spectra or a 2-D stack"):
        read_spectra(cube)
    no_errors = specutils.Spectrum(spectral_axis=np.linspace(4000, 5000, 100) * u.AA,
                                   flux=(1 + 0.01 * np.random.default_rng(0).normal(size=100)) * u.Jy)
    assert read_spectra(no_errors)[0].meta["ivar_estimated"] is True
