"""Finding an indexed spectrum by object id or sky position (astropy), and the random picks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spectok_core import SpectrumError, explore


@pytest.mark.parametrize("text", [
    "150.1 2.2", "150.1, +2.2", "150.1;2.2", "10:00:24.0 +02:12:00", "10h00m24s +2d12m00s",
    "10 00 24 +02 12 00", "10:00:24, 2:12:00",
])
def test_positions_in_degrees_and_sexagesimal(text):
    position = explore.parse_position(text)
    assert position.ra.deg == pytest.approx(150.1, abs=1e-6)
    assert position.dec.deg == pytest.approx(2.2, abs=1e-6)


def test_negative_declination_and_what_is_not_a_position():
    assert explore.parse_position("10:00:24 -02:12:00").dec.deg == pytest.approx(-2.2)
    assert explore.parse_position("150.1 -2.2").dec.deg == pytest.approx(-2.2)
    for text in ("", "M31", "sdss-galaxy-3", "2M17335483-2753043", "x" * 200):
        assert explore.parse_position(text) is None, text
    with pytest.raises(SpectrumError, match="RA must be in 0–360"):
        explore.parse_position("400 2")
    with pytest.raises(SpectrumError, match="could not be read"):
        explore.parse_position("25:00:00 +95:00:00")


def metadata():
    return pd.DataFrame({
        "object_id": ["a", "b", "c", "150.1 2.2", "sim"],
        "survey": ["sdss", "desi", "boss", "sdss", "sdss"],
        "ra": [150.1, 150.1 + 3 / 3600, 200.0, 10.0, np.nan],
        "dec": [2.2, 2.2, -30.0, 10.0, np.nan],
        "snr": [5.0, 50.0, 8.0, 2.0, 100.0],
    })


def test_lookup_by_position_nearest_first_within_the_radius():
    found = explore.lookup(metadata(), "10:00:24.0 +02:12:00")
    assert found.kind == "position" and found.rows == [0, 1]
    assert found.separations_arcsec[0] < 0.01 and found.separations_arcsec[1] == pytest.approx(3.0, rel=1e-3)
    assert "2 indexed spectra within 5″" in found.message
    assert explore.lookup(metadata(), "150.1 2.2", radius_arcsec=1.0).rows == [3]  # an id wins


def test_lookup_says_what_is_nearest_when_nothing_is_close():
    found = explore.lookup(metadata(), "200.0 -29.9")
    assert found.rows == [] and "Nothing within 5″" in found.message
    assert "the nearest indexed spectrum is c (boss), 6.0′ away" in found.message
    unknown = explore.lookup(metadata(), "b-galaxy")
    assert unknown.rows == [] and "not a position" in unknown.message
    nothing = explore.lookup(metadata().assign(ra=np.nan), "150 2")
    assert "No indexed spectrum has a sky position" in nothing.message
    assert explore.lookup(metadata(), "  ").rows == []


def test_random_and_random_bright():
    meta = metadata()
    rng = np.random.default_rng(0)
    drawn = {explore.random_row(meta, rng) for _ in range(200)}
    assert drawn == set(range(len(meta)))
    bright = {explore.random_row(meta, rng, bright=True) for _ in range(50)}
    assert bright == {4}  # the top 10 % by S/N of five spectra: the brightest one
    with pytest.raises(SpectrumError, match="empty"):
        explore.random_row(meta.iloc[:0])
