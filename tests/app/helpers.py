"""Helpers for the app's tests: synthetic spectra, AppTest set-up, text of elements."""

from __future__ import annotations

from pathlib import Path

from spectok_core import Spectrum, surveys
from tests.fake_spectra import labelled_spectrum

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
    meta = {"object_id": f"{survey}-{kind.lower()}-{i}",
            "origin": "real" if survey == "gaia_xp" else "simulated",
            "split": ("train", "val", "test")[i % 3]}
    return labelled_spectrum(GRIDS[survey](), survey, kind, meta, rng)


def csv_bytes(spectrum: Spectrum) -> bytes:
    from spectok_core import explore

    return explore.write_csv(spectrum, title="test spectrum")


def app_test(page: str):
    """An AppTest of app/Home.py or app/pages/<page> with a generous timeout (loaded CI)."""
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(APP / page), default_timeout=60)


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)

