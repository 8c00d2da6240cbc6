import numpy as np
import pytest

from spectok_core import surveys

REQUIRED = ["sdss", "boss", "desi", "lamost_lrs", "lamost_mrs", "apogee", "gaia_xp",
            "miles", "stelib", "spex", "unknown"]


@pytest.mark.parametrize("key", REQUIRED)
def test_registry_has_required_instruments(key):
    s = surveys.get(key)
    assert s.key == key
    assert s.sampling in {"log", "linear", "irregular"}
    assert s.wave_min < s.wave_max
    assert isinstance(s.air_wavelengths, bool)


def test_apogee_grid_matches_apstar_wcs():
    grid = surveys.get("apogee").native_grid()
    # apStar: 8575 px from log10 λ = 4.179 in steps of 6e-6 dex.
    ref = 10 ** (4.179 + 6e-6 * np.arange(8575))
    assert grid[0] == pytest.approx(ref[0], rel=1e-3)
    assert np.allclose(np.diff(np.log10(grid)), 6e-6)


def test_gaia_xp_grid_is_343_samples():
    grid = surveys.get("gaia_xp").native_grid()
    assert grid.size == 343 and grid[0] == 3360.0 and grid[-1] == 10200.0


def test_desi_arms_overlap_and_cover_range():
    desi = surveys.get("desi")
    arms = desi.arms
    assert arms[0].wave_min == desi.wave_min and arms[-1].wave_max == desi.wave_max
    for a, b in zip(arms, arms[1:]):
        assert b.wave_min < a.wave_max  # neighbouring arms overlap
    assert np.allclose(np.diff(desi.native_grid("b")), 0.8)


def test_only_stellar_libraries_give_air_wavelengths():
    air = {k for k, s in surveys.SURVEYS.items() if s.air_wavelengths}
    assert air == {"miles", "stelib"}


def test_unknown_key_message():
    with pytest.raises(KeyError, match="known:"):
        surveys.get("hst")


def test_guess_from_wavelengths():
    assert surveys.guess_from_wavelengths(surveys.get("apogee").native_grid()) == "apogee"
    assert surveys.guess_from_wavelengths(np.linspace(100, 200, 50)) == "unknown"
