"""CDS / AAS machine-readable tables (MRT), the layout journals publish spectra in.

Written by hand in the layout of the SDSS composite quasar spectrum (Vanden Berk et
al. 2001, AJ 122, 549, datafile1.txt): a title block, a byte-by-byte description
with the unit ``0.1nm`` (= Å), then fixed-width rows. The real file is read in
tests/data/test_survey_packages.py when SPECTOK_WHEELS is set.
"""

import numpy as np
import pytest

import spectok_core as sc

HEADER = """Title: Composite Quasar Spectra From the Sloan Digital Sky Survey
Authors: Vanden Berk D.E., Richards G.T., Bauer A., Strauss M.A.,
         Schneider D.P., Heckman T.M., York D.G., Hall P.B., Fan X., Knapp G.R.
Table: Median Composite Quasar Spectrum
================================================================================
Byte-by-byte Description of file: datafile1.txt
--------------------------------------------------------------------------------
   Bytes Format Units   Label  Explanations
--------------------------------------------------------------------------------
   1-  6 F6.1   0.1nm   Wave   Wavelength in Angstroms
   8- 13 F6.3   ---     FluxD  Relative flux density
  15- 19 F5.3   ---   e_FluxD  The 68% semi-interquantile uncertainty in FluxD
--------------------------------------------------------------------------------
"""


def mrt_text(n: int = 400) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    wave = 1200.5 + np.arange(n)
    flux = 1.0 + 3.0 * np.exp(-0.5 * ((wave - 1549.0) / 8.0) ** 2)
    err = np.full(n, 0.05)
    rows = "".join(f"{w:6.1f} {f:6.3f} {e:5.3f}\n" for w, f, e in zip(wave, flux, err, strict=True))
    return HEADER + rows, wave, np.round(flux, 3), err


def test_mrt_composite_reads_wave_flux_and_error():
    text, wave, flux, err = mrt_text()
    (spectrum,) = sc.read_spectra(text.encode(), name="datafile1.txt", survey="sdss")
    assert spectrum.meta["format"] == "text_table" and spectrum.survey == "sdss"
    assert np.allclose(spectrum.wave, wave)  # 0.1 nm is Å: no conversion
    assert "0.1 nm" in spectrum.meta["wave_unit_from"]
    assert np.allclose(spectrum.flux, flux, atol=1e-6)
    assert np.allclose(spectrum.ivar, 1 / err**2, rtol=1e-5)  # e_FluxD is FluxD's error
    assert not spectrum.meta.get("ivar_estimated") and not spectrum.mask.any()


def test_mrt_without_a_survey_is_unknown_and_a_broken_description_is_refused():
    text, _, _, _ = mrt_text(60)
    (spectrum,) = sc.read_spectra(text.encode(), name="datafile1.txt")
    assert spectrum.survey == "unknown"
    broken = text.replace("   1-  6 F6.1", "   1-  x F6.1")
    with pytest.raises(sc.SpectrumError):
        sc.read_spectra(broken.encode(), name="datafile1.txt")
