"""Fuzz read_spectra: mutated real and synthetic files, and random bytes.

Whatever comes in, read_spectra either returns valid Spectrum objects or raises
SpectrumError; any other exception (or an invalid Spectrum) fails the test.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spectok_core as sc
from spectok_core import Spectrum, SpectrumError
from tests import synthetic
from tests.conftest import SHARED_FORMATS


def synthetic_layouts() -> dict[str, bytes]:
    files = {}
    for info in pkgutil.iter_modules(synthetic.__path__):
        module = importlib.import_module(f"tests.synthetic.{info.name}")
        for layout, make in getattr(module, "LAYOUTS", {}).items():
            name, data = make()
            files[f"{info.name}:{layout}:{name}"] = data
    return files


def real_files(max_bytes: int = 3 * 2**20) -> dict[str, bytes]:
    if not SHARED_FORMATS.is_dir():
        return {}
    return {
        str(p.relative_to(SHARED_FORMATS)): p.read_bytes()
        for p in sorted(SHARED_FORMATS.rglob("*"))
        if p.is_file() and p.suffix != ".md" and p.stat().st_size <= max_bytes
    }


SYNTHETIC = synthetic_layouts()
REAL = real_files()
CORPUS = {**SYNTHETIC, **REAL}


def check_valid(spectrum: Spectrum) -> None:
    assert isinstance(spectrum, Spectrum)
    assert spectrum.wave.dtype == np.float64 and spectrum.flux.dtype == np.float32
    assert spectrum.ivar.dtype == np.float32 and spectrum.mask.dtype == bool
    n = len(spectrum)
    assert spectrum.flux.shape == spectrum.ivar.shape == spectrum.mask.shape == (n,)
    assert np.all(np.isfinite(spectrum.wave)) and np.all(np.diff(spectrum.wave) > 0)
    assert np.all(np.isfinite(spectrum.flux)) and np.all(np.isfinite(spectrum.ivar))
    assert np.all(spectrum.ivar >= 0) and (~spectrum.mask).sum() > 0
    assert spectrum.survey in sc.surveys.SURVEYS
    # Re-validating through the constructor must accept it unchanged.
    Spectrum(spectrum.wave, spectrum.flux, spectrum.ivar, spectrum.mask, spectrum.survey, spectrum.meta)


def read_or_clean_error(data: bytes, name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            spectra = sc.read_spectra(data, name=name, max_bytes=16 * 2**20)
        except SpectrumError as err:
            assert str(err), "a SpectrumError must say what was wrong"
            return
    assert len(spectra) > 0
    for spectrum in spectra:
        check_valid(spectrum)


def test_there_is_something_to_mutate():
    assert len(SYNTHETIC) >= 10, f"synthetic layouts found: {sorted(SYNTHETIC)}"


#: Seeds that are bad input on purpose: they must raise, not read.
BAD_ON_PURPOSE = (
    "sdss:spec_failed:",  # a spectrum the pipeline flagged, every pixel bad
    "spec-0269-51581-0003.fits",  # the same, real
    "thepayne_apogee_wavelength.npz",  # a wavelength grid, not a spectrum
    "desi:redrock:", "desi:zcatalog:",  # redshift catalogues, not spectra
)


@pytest.mark.parametrize("key", sorted(CORPUS))
def test_unmutated_files_read(key):
    """Sanity: every seed file reads cleanly before we mutate it (or fails as intended)."""
    name = key.rsplit(":", 1)[-1]
    if any(marker in key for marker in BAD_ON_PURPOSE):
        with pytest.raises(SpectrumError):
            sc.read_spectra(CORPUS[key], name=name)
        return
    spectra = sc.read_spectra(CORPUS[key], name=name)
    for spectrum in spectra:
        check_valid(spectrum)


def mutate(data: bytes, ops: list[tuple[str, float, int]]) -> bytes:
    buf = bytearray(data)
    for op, where, value in ops:
        if not buf:
            break
        pos = int(where * (len(buf) - 1))
        if op == "flip":
            buf[pos] ^= 1 << (value % 8)
        elif op == "set":
            buf[pos] = value % 256
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = bytes([value % 256]) * (1 + value % 97)
        elif op == "delete":
            del buf[pos : pos + 1 + value % 97]
        elif op == "digit":  # corrupt header numbers (FITS cards, CSV values)
            if chr(buf[pos]).isdigit():
                buf[pos] = ord("0") + value % 10
    return bytes(buf)


operations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "truncate", "insert", "delete", "digit"]),
        st.floats(0.0, 1.0),
        st.integers(0, 10_000),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(sorted(CORPUS)), ops=operations)
def test_mutated_files_give_valid_spectra_or_spectrum_error(key, ops):
    read_or_clean_error(mutate(CORPUS[key], ops), key.rsplit(":", 1)[-1])


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=0, max_size=4096), prefix=st.sampled_from(
    [b"", b"SIMPLE  =                    T", b"\x89HDF\r\n\x1a\n", b"\x1f\x8b", b"PK\x03\x04",
     b"wave,flux\n", b"# %ECSV 1.0\n"]))
def test_random_bytes_never_escape(data, prefix):
    read_or_clean_error(prefix + data, "random.dat")
