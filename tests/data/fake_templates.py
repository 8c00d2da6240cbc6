"""Tiny fake SSP template files in the layout of the MaNGA DAP wheel, for tests.

They sit where :func:`spectok_core.data.astro.load_ssp_grid` looks
(``<cache>/sdss-mangadap/mangadap/data/spectral_templates/<library>/``) and
use the real headers (MaStar SSP: log10 λ WCS plus an SRES extension, vacuum;
BC03: linear WCS, air), so loading is tested without the real cache. The
spectra are a Planck continuum (hot for young ages, cool with a 4000 Å break
for old ones) with Gaussian absorption lines at the positions the real
library would have them: vacuum for MaStar, AIR for BC03.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from spectok_core.data.astro import TEMPLATE_ROOT, planck_lambda
from spectok_core.spectrum import vacuum_to_air

# Vacuum rest wavelengths of the absorption lines drawn into the fakes.
BALMER = (6564.61, 4862.68, 4341.68, 4102.89, 3971.20)
METALS = (3934.78, 3969.59, 5174.13, 5185.05, 5891.58, 5897.56, 8500.36, 8544.44, 8664.52)


def _spectrum(wave_vac: np.ndarray, age: float, in_air: bool) -> np.ndarray:
    temperature = 12000.0 if age < 1.0 else (7000.0 if age < 3.0 else 4500.0)
    flux = planck_lambda(wave_vac, temperature)
    if age >= 1.0:
        flux = flux * np.where(wave_vac < 4000.0, 0.6, 1.0)
    line_wave = wave_vac if not in_air else vacuum_to_air(wave_vac)

    def dip(center_vac, depth, sigma):
        center = center_vac if not in_air else float(vacuum_to_air(np.array([center_vac]))[0])
        return 1.0 - depth * np.exp(-0.5 * ((line_wave - center) / sigma) ** 2)

    balmer_depth = 0.5 if age < 3.0 else 0.15
    for center in BALMER:
        flux = flux * dip(center, balmer_depth, 4.0)
    for center in METALS:
        flux = flux * dip(center, 0.05 + 0.05 * np.log10(1.0 + age), 1.5)
    return flux / np.median(flux)


def write_mastar_ssp(cache: Path, ages=(0.01, 1.0, 9.0), metallicities=(0.0, -0.33)) -> Path:
    """MaStar-SSP-A<age>-Z<[Z/H]>.fits.gz on the real log grid (3622-10351 Å, 1e-4 dex)."""
    folder = Path(cache).joinpath(*TEMPLATE_ROOT, "mastar_ssp_v1.0")
    folder.mkdir(parents=True, exist_ok=True)
    n, crval, cdelt = 4562, 3.558900001815535, 1e-4
    wave = 10.0 ** (crval + cdelt * np.arange(n))
    sres = np.interp(wave, [3600.0, 6000.0, 10400.0], [1400.0, 1900.0, 2400.0])
    for age in ages:
        for metallicity in metallicities:
            primary = fits.PrimaryHDU(_spectrum(wave, age, in_air=False))
            primary.header.update({"CTYPE1": "WAVE-LOG", "CRPIX1": 1, "CRVAL1": crval, "CDELT1": cdelt})
            name = f"MaStar-SSP-A{age:06.3f}-Z{metallicity:+.2f}.fits.gz"
            fits.HDUList([primary, fits.ImageHDU(sres, name="SRES")]).writeto(folder / name, overwrite=True)
    return folder


def write_bc03(cache: Path, ages=(0.025, 5.0), metallicities=(0.02,)) -> Path:
    """BC03_z<Z>_a<age>.fits on the real linear AIR grid (3326-9294 Å, 1 Å)."""
    folder = Path(cache).joinpath(*TEMPLATE_ROOT, "bc03_mpajhu")
    folder.mkdir(parents=True, exist_ok=True)
    n, crval = 5969, 3326.0
    wave_air = crval + np.arange(n, dtype=np.float64)
    from spectok_core.spectrum import air_to_vacuum

    wave_vac = air_to_vacuum(wave_air)
    for age in ages:
        for metallicity in metallicities:
            primary = fits.PrimaryHDU(_spectrum(wave_vac, age, in_air=True))
            primary.header.update({"Z": metallicity, "AGE": age, "FWHM": 2.3, "CRPIX1": 1,
                                   "CRVAL1": crval, "CDELT1": 1.0})
            primary.writeto(folder / f"BC03_z{metallicity:.3f}_a{age:06.3f}.fits", overwrite=True)
    return folder
