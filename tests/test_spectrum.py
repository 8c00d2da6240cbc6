import numpy as np
import pytest

from spectok_core import Spectrum, SpectrumError
from spectok_core.spectrum import air_to_vacuum, estimate_ivar, sigma_to_ivar, vacuum_to_air


def make(n=100, **overrides):
    wave = np.linspace(4000.0, 5000.0, n)
    rng = np.random.default_rng(0)
    kwargs = dict(wave=wave, flux=1.0 + 0.1 * rng.standard_normal(n), ivar=np.full(n, 100.0))
    kwargs.update(overrides)
    return Spectrum(**kwargs)


def test_valid_spectrum_dtypes_and_snr():
    s = make()
    assert s.wave.dtype == np.float64 and s.flux.dtype == np.float32
    assert s.ivar.dtype == np.float32 and s.mask.dtype == bool
    assert s.survey == "unknown" and not s.mask.any()
    assert s.median_snr == pytest.approx(10.0, rel=0.1)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (dict(flux=np.ones(99)), "length mismatch"),
        (dict(mask=np.zeros(98, bool)), "length mismatch"),
        (dict(wave=np.linspace(5000, 4000, 100)), "not strictly increasing"),
        (dict(wave=np.r_[np.linspace(4000, 5000, 99), np.nan]), "non-finite wavelengths"),
        (dict(ivar=np.r_[np.full(99, 1.0), -1.0]), "negative inverse variance"),
        (dict(ivar=np.zeros(100)), "every pixel is bad"),
        (dict(ivar=np.full(100, 1e-60)), "every pixel is bad"),  # all 0 once stored as float32
        (dict(flux=np.full(100, np.nan)), "every pixel is bad"),
        (dict(mask=np.ones(100, bool)), "every pixel is bad"),
        (dict(survey="hubble"), "unknown survey"),
        (dict(wave=np.zeros((10, 10))), "one-dimensional"),
    ],
)
def test_invalid_spectra_raise_named_problem(overrides, fragment):
    with pytest.raises(SpectrumError, match=fragment):
        make(**overrides)


def test_too_few_pixels():
    with pytest.raises(SpectrumError, match="too few pixels"):
        make(n=5)
    mask = np.ones(100, bool)
    mask[:5] = False
    with pytest.raises(SpectrumError, match="too few usable pixels"):
        make(mask=mask)


def test_bad_pixels_are_masked_and_zeroed():
    flux = np.ones(100)
    flux[3] = np.nan
    ivar = np.full(100, 4.0)
    ivar[7] = 0.0
    ivar[9] = np.inf
    s = make(flux=flux, ivar=ivar)
    assert s.mask[[3, 7, 9]].all() and s.mask.sum() == 3
    assert s.flux[3] == 0 and s.ivar[9] == 0
    assert np.all(np.isfinite(s.flux)) and np.all(np.isfinite(s.ivar))


def test_ivar_that_underflows_float32_is_masked_and_revalidates():
    # A value like 1e-60 passes "ivar > 0" in float64 but is 0 in the stored float32 array;
    # found by the fuzz test on a mutated SpeX file.
    ivar = np.full(100, 4.0)
    ivar[10:20] = 1e-60
    s = make(ivar=ivar)
    assert s.mask[10:20].all() and s.mask.sum() == 10
    assert np.all(s.ivar[10:20] == 0) and np.all(s.flux[10:20] == 0)
    again = Spectrum(s.wave, s.flux, s.ivar, s.mask, s.survey, s.meta)
    assert np.array_equal(again.mask, s.mask)


def test_air_vacuum_round_trip_and_known_line():
    # Hα: 6562.80 Å in air is 6564.61 Å in vacuum (Morton 2000).
    assert air_to_vacuum(6562.80) == pytest.approx(6564.61, abs=0.01)
    # [O III] 5006.84 air -> 5008.24 vacuum.
    assert air_to_vacuum(5006.84) == pytest.approx(5008.24, abs=0.01)
    wave = np.linspace(3000, 25000, 1000)
    assert np.allclose(vacuum_to_air(air_to_vacuum(wave)), wave, atol=2e-3)
    assert air_to_vacuum(1500.0) == 1500.0


def test_sigma_to_ivar_handles_zero_and_nan():
    ivar = sigma_to_ivar(np.array([0.5, 0.0, np.nan, -1.0, np.inf]))
    assert ivar.tolist() == [4.0, 0.0, 0.0, 0.0, 0.0]


def test_estimate_ivar_recovers_white_noise_level():
    rng = np.random.default_rng(1)
    wave = np.linspace(4000, 7000, 4000)
    continuum = 10.0 + 2.0 * np.sin(wave / 400.0)
    flux = continuum + 0.2 * rng.standard_normal(wave.size)  # S/N ~ 50
    ivar = estimate_ivar(flux)
    snr = np.median(flux * np.sqrt(ivar))
    assert 40 < snr < 60


def test_to_specutils_without_specutils_says_how_to_get_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "specutils", None)  # as if it were not installed
    wave = np.linspace(4000.0, 5000.0, 50)
    spectrum = Spectrum(wave, np.ones(50), np.ones(50), None, "unknown", {})
    with pytest.raises(SpectrumError, match=r"pip install 'spectok\[specutils\]'"):
        spectrum.to_specutils()
