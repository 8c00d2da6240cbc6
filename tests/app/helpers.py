"""Helpers for the app's tests: synthetic spectra, AppTest set-up, text of elements."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spectok_core import Spectrum, surveys

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app"
EXAMPLES = REPO / "assets" / "examples"

# survey -> grid; classes are spread over them so filters have something to filter.
GRIDS = {
    "sdss": lambda: surveys.get("sdss").native_grid()[::4],
    "desi": lambda: surveys.get("desi").native_grid()[::4],
    "gaia_xp": lambda: surveys.get("gaia_xp").native_grid(),
}
MIX = {
    "sdss": ["STAR"] * 4 + ["GALAXY"] * 4 + ["QSO"] * 4,
    "desi": ["STAR"] * 3 + ["GALAXY"] * 3 + ["QSO"] * 3,
    "gaia_xp": ["STAR"] * 6,
}


def synthetic_spectrum(survey: str, kind: str, i: int, rng) -> Spectrum:
    """A star (black body + noise), galaxy or quasar (continuum + redshifted lines)."""
    wave = GRIDS[survey]()
    meta = {"object_id": f"{survey}-{kind.lower()}-{i}", "class": kind,
            "origin": "real" if survey == "gaia_xp" else "simulated",
            "split": ("train", "val", "test")[i % 3]}
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


def csv_bytes(spectrum: Spectrum) -> bytes:
    from spectok_core import explore

    return explore.write_csv(spectrum, title="test spectrum")


def app_test(page: str):
    """An AppTest of app/Home.py or app/pages/<page> with a generous timeout (loaded CI)."""
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(APP / page), default_timeout=60)


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)

