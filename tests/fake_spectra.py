"""Labelled synthetic spectra for tests that need a small corpus or index."""

from __future__ import annotations

import numpy as np

from spectok_core import Spectrum


def labelled_spectrum(wave: np.ndarray, survey: str, kind: str, meta: dict, rng) -> Spectrum:
    """A star (black body), galaxy or quasar (continuum + redshifted lines), with noise,
    five masked pixels and labels (teff/logg/feh for stars, z otherwise) added to ``meta``."""
    meta = dict(meta, **{"class": kind})
    if kind == "STAR":
        teff = float(rng.uniform(3500, 9500))
        flux = 1.0 / (wave / 5000.0) ** 5 / np.expm1(1.4388e8 / (wave * teff))
        meta.update(teff=teff, logg=float(rng.uniform(1, 5)), feh=float(rng.uniform(-2, 0.5)))
    else:
        z = float(rng.uniform(0.05, 0.5) if kind == "GALAXY" else rng.uniform(1.0, 3.0))
        width = 5.0 if kind == "GALAXY" else 60.0
        flux = (wave / 5000.0) ** (-1.5 if kind == "QSO" else 0.5)
        for line in (3727.0, 4862.7, 5008.2, 6564.6, 1549.0, 2799.0):
            flux = flux + 3.0 * np.exp(-0.5 * ((wave - line * (1 + z)) / width) ** 2)
        meta["z"] = z
    flux = flux / np.median(flux) + rng.standard_normal(wave.size) / 30.0
    mask = np.zeros(wave.size, bool)
    mask[rng.integers(wave.size, size=5)] = True
    return Spectrum(wave, flux, np.full(wave.size, 900.0), mask, survey, meta)
