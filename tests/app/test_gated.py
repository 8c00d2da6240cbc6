"""Gated neighbour estimates: a value only when enough close neighbours agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spectok_core import Spectrum, explore

COLUMNS = ["rank", "similarity", "survey", "class", "z", "teff", "logg", "feh"]


def hits(rows):
    return pd.DataFrame(rows, columns=COLUMNS)


def spectrum(snr: float) -> Spectrum:
    wave = np.linspace(3600.0, 9800.0, 3000)
    flux = np.ones(wave.size)
    return Spectrum(wave, flux, np.full(wave.size, snr**2), np.zeros(wave.size, bool), "desi", {})


def test_confident_galaxy_gets_class_and_z_with_spread():
    table = hits([(i + 1, 0.95 - 0.01 * i, "sdss", "GALAXY", z, None, None, None)
                  for i, z in enumerate([0.100, 0.102, 0.098, 0.105, 0.30])])
    est = explore.gated_estimates(table, spectrum(20.0))
    assert est["class"].reliable and est["class"].value == "GALAXY"
    assert est["z"].reliable and est["z"].n == 4  # the z = 0.30 neighbour does not agree
    assert est["z"].value == pytest.approx(0.101)
    shown = explore.estimates_table(est).set_index("quantity")
    assert shown.loc["redshift z", "spread"].startswith("± ")


def test_galaxy_with_distant_quasar_neighbours_gets_no_estimate():
    """The DESI galaxy at z = 0.37 that got 'QSO 90 %, z = 2.29' from dissimilar neighbours."""
    table = hits([(i + 1, 0.62 - 0.01 * i, "desi", "QSO", 2.29 + 0.1 * i, None, None, None)
                  for i in range(9)] + [(10, 0.5, "desi", "GALAXY", 0.37, None, None, None)])
    est = explore.gated_estimates(table, spectrum(8.0))
    assert not est["class"].reliable and "dissimilar" not in est["class"].reason
    assert "z" not in est or not est["z"].reliable
    shown = explore.estimates_table(est)
    assert (shown["neighbour estimate"] == explore.NO_ESTIMATE).all()
    warnings = explore.estimate_warnings(spectrum(8.0), table, ["desi"])
    assert any("outside what the model was trained on" in w for w in warnings)


def test_stellar_labels_from_one_neighbour_are_withheld():
    table = hits([(1, 0.95, "apogee", "STAR", 0.0, 4800.0, 2.5, -0.3)]
                 + [(i + 2, 0.93, "lamost_lrs", "STAR", 0.0, 5000.0 + 30 * i, None, None)
                    for i in range(4)])
    est = explore.gated_estimates(table, spectrum(50.0))
    assert est["class"].reliable and est["teff"].reliable
    assert not est["logg"].reliable and "only 1" in est["logg"].reason
    assert not est["feh"].reliable


def test_noise_only_fibre_gets_no_estimate_and_a_warning():
    table = hits([(i + 1, 0.97, "sdss", "STAR", 0.0, 5000.0, 4.5, 0.0) for i in range(8)])
    noise = spectrum(0.7)
    est = explore.gated_estimates(table, noise)
    assert est and not any(e.reliable for e in est.values())
    assert all("S/N 0.7" in e.reason for e in est.values())
    warnings = explore.estimate_warnings(noise, table, ["sdss"])
    assert any("low signal-to-noise" in w for w in warnings)
    assert any("no desi spectra are in the index" in w for w in warnings)
    assert explore.estimate_warnings(spectrum(20.0), table, ["desi"]) == []


def test_split_vote_is_not_a_class():
    table = hits([(1, 0.9, "sdss", "GALAXY", 0.1, None, None, None),
                  (2, 0.9, "sdss", "GALAXY", 0.1, None, None, None),
                  (3, 0.9, "sdss", "GALAXY", 0.1, None, None, None),
                  (4, 0.9, "sdss", "QSO", 0.1, None, None, None),
                  (5, 0.9, "sdss", "STAR", 0.0, 5000.0, 4.0, 0.0)])
    est = explore.gated_estimates(table, spectrum(20.0))
    assert not est["class"].reliable and "disagree" in est["class"].reason
    assert not est["z"].reliable and est["z"].reason == "the class is not reliable"


def test_the_files_own_values_stand_beside_the_estimates_and_veto_disagreements():
    """The real SDSS quasar spec-0332 at z = 0.10: host-dominated, its neighbours vote GALAXY."""
    table = hits([(i + 1, 0.93 - 0.01 * i, "sdss", "GALAXY", z, None, None, None)
                  for i, z in enumerate([0.038, 0.040, 0.036, 0.041, 0.039])])
    quasar = spectrum(20.0)
    quasar.meta.update({"class": "qso", "z": 0.1006})
    gated = explore.gated_estimates(table, quasar)
    assert gated["class"].reliable and gated["z"].reliable  # the gates alone let both through
    est = explore.against_file(gated, quasar)
    assert not est["class"].reliable and est["class"].file_value == "QSO"
    assert est["class"].reason == "the neighbours say GALAXY, the file says QSO"
    assert not est["z"].reliable and "the file says 0.1006" in est["z"].reason
    shown = explore.estimates_table(est).set_index("quantity")
    assert shown.loc["class (vote)", "in the file"] == "QSO"
    assert shown.loc["redshift z", "in the file"] == "0.1006"
    assert (shown["neighbour estimate"] == explore.NO_ESTIMATE).all()
    assert gated["class"].reliable  # the gated estimates themselves are left as they were
    # A file that agrees keeps the estimate, with the file's value beside it.
    galaxy = spectrum(20.0)
    galaxy.meta.update({"class": "GALAXY", "z": 0.045})
    kept = explore.against_file(explore.gated_estimates(table, galaxy), galaxy)
    assert kept["class"].reliable and kept["z"].reliable and kept["z"].file_value == 0.045
    # A star's Teff 15 % off the file's (the APOGEE dwarf: 6,030 K against 5,226 K) is withheld.
    stars = hits([(i + 1, 0.92, "apogee", "STAR", 0.0, t, 4.3, 0.0)
                  for i, t in enumerate([6000.0, 6030.0, 6050.0, 6010.0])])
    dwarf = spectrum(50.0)
    dwarf.meta.update({"teff": 5226.0, "logg": 4.4})
    est = explore.against_file(explore.gated_estimates(stars, dwarf), dwarf)
    assert not est["teff"].reliable and "5226" in est["teff"].reason
    assert est["logg"].reliable and est["logg"].file_value == 4.4
    # The real SDSS galaxy spec-0403 (z = 0.137) has star-like neighbours that agree on a
    # Teff: a galaxy has none, so the file's class withholds every stellar label.
    galaxy_with_star_neighbours = spectrum(15.0)
    galaxy_with_star_neighbours.meta.update({"class": "GALAXY", "z": 0.137})
    gated = explore.gated_estimates(stars, galaxy_with_star_neighbours)
    assert gated["teff"].reliable and gated["logg"].reliable
    est = explore.against_file(gated, galaxy_with_star_neighbours)
    for key in ("teff", "logg", "feh"):
        assert not est[key].reliable, key
        assert est[key].reason == "the file says GALAXY: stellar labels do not apply"
    assert not est["class"].reliable  # STAR against the file's GALAXY, as before
    # The same neighbours for a file that says STAR keep their labels.
    star_file = spectrum(15.0)
    star_file.meta.update({"class": "STAR"})
    assert explore.against_file(explore.gated_estimates(stars, star_file), star_file)["logg"].reliable
    # No file values: nothing changes, and the table has no "in the file" column.
    plain = explore.gated_estimates(table, spectrum(20.0))
    assert explore.against_file(plain, spectrum(20.0)) == plain
    assert "in the file" not in explore.estimates_table(plain).columns


def test_estimates_as_text_say_what_the_table_says():
    """`spectok search` prints these lines: the value, its spread and voters, or why not."""
    table = hits([(i + 1, 0.95 - 0.01 * i, "sdss", "GALAXY", z, None, None, None)
                  for i, z in enumerate([0.100, 0.102, 0.098, 0.105, 0.30])])
    galaxy = spectrum(20.0)
    galaxy.meta["z"] = 0.1005
    lines = explore.estimates_lines(explore.against_file(explore.gated_estimates(table, galaxy), galaxy))
    assert lines[0] == "class (vote): GALAXY, 100% agree (5 neighbours)"
    assert lines[1].startswith("redshift z: 0.1010, ± ") and lines[1].endswith(
        "(4 neighbours); the file says 0.1005")
    noisy = explore.estimates_lines(explore.gated_estimates(table, spectrum(1.0)))
    assert noisy[0] == f"class (vote): {explore.NO_ESTIMATE} (S/N 1.0 is below 3)"
