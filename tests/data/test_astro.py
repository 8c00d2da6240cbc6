"""Simulated sources and the line table: vacuum positions, redshifts, label trends.

Galaxies are built from tiny fake templates (tests/data/fake_templates.py) so
these tests need no data cache; one test reads the real MaStar SSP grid when
the cache (``$SPECTOK_DATA``) holds it and skips otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from spectok_core import lines as L
from spectok_core import surveys
from spectok_core.data import astro as A
from spectok_core.data.fetch import cache_dir
from spectok_core.data.simulate import SimSource
from spectok_core.spectrum import Spectrum, air_to_vacuum

from .fake_templates import write_bc03, write_mastar_ssp


def assert_valid(source: SimSource) -> None:
    assert np.all(np.isfinite(source.flux)) and np.all(source.flux >= 0)
    assert np.all(np.diff(source.wave_rest) > 0)
    fwhm = np.broadcast_to(source.fwhm_rest, source.wave_rest.shape)
    assert np.all(np.isfinite(fwhm)) and np.all(fwhm >= 0)
    for key, value in source.meta.items():
        assert type(value) in (str, int, float, bool), f"meta[{key!r}] is {type(value)}"


def line_depth(source: SimSource, continuum: np.ndarray, center: float, half_width: float) -> float:
    window = np.abs(source.wave_rest - center) < half_width
    return float(1.0 - np.min(source.flux[window] / continuum[window]))


# -- line table ---------------------------------------------------------------------


def test_line_wavelengths_are_vacuum():
    assert L.get("Halpha").wave_vac == pytest.approx(6564.61, abs=0.02)
    assert L.get("Hbeta").wave_vac == pytest.approx(4862.68, abs=0.02)
    assert L.get("OIII_5008").wave_vac == pytest.approx(5008.24, abs=0.02)
    assert L.get("NII_6585").wave_vac == pytest.approx(6585.27, abs=0.02)
    assert L.get("CaII_K").wave_vac == pytest.approx(3934.78, abs=0.02)
    assert L.get("NaI_D2").wave_vac == pytest.approx(5891.58, abs=0.02)
    assert L.get("CaII_8544").wave_vac == pytest.approx(8544.44, abs=0.02)
    # The classic SDSS vacuum values agree with NIST air values converted (Morton 2000).
    for name, air in (("Halpha", 6562.80), ("Hbeta", 4861.33), ("OIII_5008", 5006.84),
                      ("SII_6718", 6716.44), ("NeIII_3870", 3868.76)):
        assert L.get(name).wave_vac == pytest.approx(air_to_vacuum(np.array([air]))[0], abs=0.03)


def test_hydrogen_series_follow_rydberg():
    rydberg_h = 109677.5834  # cm^-1, hydrogen (reduced mass)
    for n in range(11, 22):
        expected = 1e8 / (rydberg_h * (1 / 16 - 1 / n**2))
        # Fine structure puts the real lines ~0.06 Å blueward of the Bohr value.
        assert L.get(f"Br{n}").wave_vac == pytest.approx(expected - 0.06, abs=0.05)
    assert L.get("Lya").wave_vac == pytest.approx(1e8 / (rydberg_h * 0.75), abs=0.03)


def test_co_bandheads():
    heads = {f"{u}-{lo}": w for u, lo, w in L.co_band_lines("12CO", heads_only=True)}
    # Air values quoted in the literature: 15,578 / 15,775 / 15,978 / 16,185 Å.
    for band, air in (("3-0", 15577.4), ("4-1", 15775.2), ("5-2", 15977.7), ("6-3", 16184.8)):
        assert heads[band] == pytest.approx(air_to_vacuum(np.array([air]))[0], abs=0.5)
    wave, strength = L.co_band_lines("12CO", temperature=3500.0)
    assert wave.shape == strength.shape and strength.max() == 1.0
    assert heads["3-0"] == pytest.approx(wave[(wave > 15500) & (wave < 15700)].min(), abs=0.01)


def test_line_table_is_consistent():
    names = [line.name for line in L.LINES]
    assert len(names) == len(set(names))
    assert [line.wave_vac for line in L.LINES] == sorted(line.wave_vac for line in L.LINES)
    for line in L.LINES:
        assert line.kind in L.KINDS and line.objects and set(line.objects) <= set(L.OBJECTS)
    hband = L.select(objects="star", kind="absorption", wave_min=15100, wave_max=17000)
    species = {line.species for line in hband}
    assert {"Fe I", "Mg I", "Si I", "Al I", "K I", "Ca I", "Ti I", "OH", "CN", "12CO", "H I"} <= species
    at_z = L.select(objects="qso", kind="emission", wave_min=3600, wave_max=10400, z=2.5)
    assert {"Lya", "CIV_1549", "CIII]_1909", "MgII_2799"} <= {line.name for line in at_z}
    assert "Halpha" not in {line.name for line in at_z}
    with pytest.raises(KeyError, match="unknown line"):
        L.get("Hzeta")


# -- stars from a library ------------------------------------------------------------


def test_stars_from_library_keeps_labels():
    wave = 3540.0 + 0.9 * np.arange(4300)
    flux = 1.0 + 0.1 * np.sin(wave / 30.0)
    mask = np.zeros(wave.size, dtype=bool)
    mask[:5] = True  # leading bad pixels are cut
    mask[2000:2010] = True  # interior ones are filled
    meta = {"object_id": "HD 12345", "teff": 5750.0, "logg": 4.4, "feh": -0.2,
            "spectral_type": "G2V", "class": "STAR", "source_file": "x.fits"}
    spectrum = Spectrum(wave, flux, np.ones(wave.size), mask, survey="miles", meta=meta)
    (source,) = A.stars_from_library([spectrum], np.random.default_rng(1))
    assert_valid(source)
    assert source.object_id == "star-miles-HD_12345"
    assert source.meta["teff"] == 5750.0 and source.meta["logg"] == 4.4 and source.meta["feh"] == -0.2
    assert source.meta["spectral_type"] == "G2V" and source.meta["class"] == "STAR"
    assert "source_file" not in source.meta
    assert source.wave_rest[0] == wave[5] and source.wave_rest.size == wave.size - 5
    assert source.flux[2000 - 5] == pytest.approx(np.interp(wave[2000], wave, flux), rel=0.02)
    assert abs(source.z * A.C_KMS) < 300 and source.meta["rv_kms"] == pytest.approx(source.z * A.C_KMS)
    assert np.allclose(source.fwhm_rest, surveys.get("miles").fwhm(wave[5:]))  # the registry's
    unknown = Spectrum(wave, flux, np.ones(wave.size), survey="unknown", meta=meta)
    with pytest.raises(ValueError, match="resolution"):
        A.stars_from_library([unknown])


# -- the H-band star model -----------------------------------------------------------


def test_apogee_star_is_valid_and_covers_the_band():
    for name in A._HBAND_DEPTH:  # per-line strengths must name real lines
        assert L.get(name).species in A._HBAND_SPECIES
    star = A.apogee_star(4600.0, 2.4, -0.1, 0.1, np.random.default_rng(2))
    assert_valid(star)
    assert star.wave_observed[0] < 15100 and star.wave_observed[-1] > 17000
    assert np.median(star.wave_rest[1:] / np.diff(star.wave_rest)) == pytest.approx(1e5, rel=0.01)
    assert star.meta["teff"] == 4600.0 and star.meta["class"] == "STAR"


def test_apogee_co_bandhead_deepens_as_teff_drops():
    head = L.get("12CO_3-0").wave_vac
    depths = []
    for teff in (5200.0, 4600.0, 4000.0, 3600.0):
        star = A.apogee_star(teff, 1.5, 0.0, 0.0, rv_kms=0.0)
        depths.append(line_depth(star, A.apogee_continuum(star.wave_rest, teff), head + 1.0, 2.0))
    assert np.all(np.diff(depths) > 0), depths
    giant = A.apogee_star(4300.0, 1.5, 0.0, 0.0, rv_kms=0.0)
    dwarf = A.apogee_star(4300.0, 4.6, 0.0, 0.0, rv_kms=0.0)
    cont = A.apogee_continuum(giant.wave_rest, 4300.0)
    assert line_depth(giant, cont, head + 1.0, 2.0) > line_depth(dwarf, cont, head + 1.0, 2.0)


def test_apogee_metal_lines_deepen_with_metallicity():
    lines = [L.get(name).wave_vac for name in ("FeI_15199", "FeI_15495", "SiI_16064", "AlI_16768")]
    previous = None
    for feh in (-1.5, -0.5, 0.0, 0.4):
        star = A.apogee_star(4800.0, 2.5, feh, 0.0, rv_kms=0.0)
        cont = A.apogee_continuum(star.wave_rest, 4800.0)
        depths = np.array([line_depth(star, cont, w, 0.3) for w in lines])
        if previous is not None:
            assert np.all(depths > previous), (feh, depths, previous)
        previous = depths
    # [α/M] deepens Mg but not Fe.
    plain = A.apogee_star(4800.0, 2.5, -0.5, 0.0, rv_kms=0.0)
    alpha = A.apogee_star(4800.0, 2.5, -0.5, 0.3, rv_kms=0.0)
    cont = A.apogee_continuum(plain.wave_rest, 4800.0)
    mg, fe = L.get("MgI_15770").wave_vac, L.get("FeI_15495").wave_vac
    assert line_depth(alpha, cont, mg, 0.3) > line_depth(plain, cont, mg, 0.3)
    assert line_depth(alpha, cont, fe, 0.3) == pytest.approx(line_depth(plain, cont, fe, 0.3), abs=1e-6)


def test_apogee_brackett_strongest_in_hot_dwarfs():
    br11 = L.get("Br11").wave_vac
    depth = {}
    for label, (teff, logg) in {"A dwarf": (9000.0, 4.2), "G dwarf": (5800.0, 4.4),
                                "K giant": (4500.0, 2.0)}.items():
        star = A.apogee_star(teff, logg, 0.0, 0.0, rv_kms=0.0)
        depth[label] = line_depth(star, A.apogee_continuum(star.wave_rest, teff), br11, 1.0)
    assert depth["A dwarf"] > depth["G dwarf"] > depth["K giant"]


# -- galaxies ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_grid(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    write_mastar_ssp(cache)
    return A.load_ssp_grid(cache, "mastar")


def test_load_fake_mastar_grid(fake_grid):
    assert fake_grid.flux.shape == (6, 4562)
    assert fake_grid.wave[0] == pytest.approx(3621.6, abs=0.1)
    assert fake_grid.wave[-1] == pytest.approx(10351.4, abs=0.1)
    assert sorted(set(fake_grid.age)) == [0.01, 1.0, 9.0]
    assert sorted(set(fake_grid.metallicity)) == [-0.33, 0.0]
    resolution = np.interp(fake_grid.wave, [3600, 6000, 10400], [1400, 1900, 2400])
    assert np.allclose(fake_grid.wave / fake_grid.fwhm, resolution)


def test_air_templates_are_converted_to_vacuum(tmp_path):
    write_bc03(tmp_path)
    grid = A.load_ssp_grid(tmp_path, "bc03")
    assert grid.metallicity.tolist() == [0.0, 0.0]
    near = np.abs(grid.wave - 6564.61) < 8.0
    absorbed = 1.0 - grid.flux[0, near] / np.max(grid.flux[0, near])
    centroid = np.sum(grid.wave[near] * absorbed) / np.sum(absorbed)
    assert centroid == pytest.approx(6564.61, abs=0.15)  # the air position would be 6562.80
    with pytest.raises(Exception, match="spectok data fetch"):
        A.load_ssp_grid(tmp_path, "miuscat")


@pytest.mark.parametrize("z", [0.0, 0.12, 0.45])
def test_galaxy_halpha_peaks_at_redshifted_vacuum_wavelength(fake_grid, z):
    gal = A.galaxy(np.random.default_rng(3), z, grid=fake_grid, kind="starforming", ew_halpha=100.0)
    assert_valid(gal)
    expected = 6564.61 * (1 + z)
    window = np.abs(gal.wave_observed - expected) < 12.0 * (1 + z)
    peak = gal.wave_observed[window][np.argmax(gal.flux[window])]
    assert peak == pytest.approx(expected, abs=0.4 * (1 + z))
    assert gal.meta["z"] == z and gal.meta["class"] == "GALAXY"


@pytest.mark.parametrize("kind", A.GALAXY_KINDS)
def test_galaxy_classes_and_bpt_ratios(fake_grid, kind):
    rng = np.random.default_rng(7)
    for _ in range(3):
        gal = A.galaxy(rng, 0.05, grid=fake_grid, kind=kind)
        assert_valid(gal)
        m = gal.meta
        n2 = np.log10(m["line_flux_NII_6585"] / m["line_flux_Halpha"])
        # Dust changes these close-pair ratios by < 0.02 dex.
        o3 = np.log10(m["line_flux_OIII_5008"] / m["line_flux_Hbeta"])
        if kind == "starforming":
            assert m["subclass"] in ("STARFORMING", "STARBURST")
            assert o3 < 0.61 / (n2 - 0.05) + 1.3 + 0.02  # below Kauffmann et al. 2003
        elif kind == "seyfert":
            assert m["subclass"] == "AGN" and o3 > 1.05 * n2 + 0.45
        elif kind == "liner":
            assert m["subclass"] == "LINER" and o3 < 1.05 * n2 + 0.45
        else:
            assert m["subclass"] == "QUIESCENT" and m["ew_halpha"] <= 1.0
            assert m["young_light_fraction"] <= 0.05
        # The observed Balmer decrement carries the gas extinction.
        decrement = m["line_flux_Halpha"] / m["line_flux_Hbeta"]
        k_hbeta, k_halpha = A.calzetti_k(np.array([4862.68, 6564.61]))
        intrinsic = 2.86 if kind == "starforming" else 3.1
        assert decrement >= 2.85
        assert decrement == pytest.approx(intrinsic * 10 ** (0.4 * m["ebv"] * (k_hbeta - k_halpha)), rel=1e-6)


def test_galaxy_velocity_dispersion_broadens_absorption(fake_grid):
    depths = []
    for sigma in (120.0, 300.0):
        gal = A.galaxy(np.random.default_rng(11), 0.0, grid=fake_grid, kind="quiescent",
                       sigma_v=sigma, ebv=0.0, ew_halpha=0.0)
        near = np.abs(gal.wave_rest - 5891.58) < 40.0
        depths.append(1.0 - gal.flux[near].min() / np.median(gal.flux[near]))
    assert depths[0] > depths[1] > 0


def test_galaxy_keeps_template_excess_blur(fake_grid):
    # σ_v below the template's own resolution: the excess stays in fwhm_rest.
    narrow = A.galaxy(np.random.default_rng(5), 0.0, grid=fake_grid, kind="starforming", sigma_v=40.0)
    broad = A.galaxy(np.random.default_rng(5), 0.0, grid=fake_grid, kind="starforming", sigma_v=250.0)
    assert np.median(narrow.fwhm_rest) > 1.0  # Å: the template's ~70-90 km/s is not removable
    assert np.median(broad.fwhm_rest) < 0.5  # only the pixel remains


def test_coverage_helpers(fake_grid):
    assert A.rest_coverage_needed("boss", 1.0) == pytest.approx((1800.0, 5200.0))
    gal = A.galaxy(np.random.default_rng(1), 0.5, grid=fake_grid, kind="quiescent")
    fraction = A.coverage_fraction(gal, "boss")
    assert fraction == pytest.approx((6933.3 - 3621.6) / (6933.3 - 2400.0), abs=0.01)
    z_max = A.max_redshift("boss", (fake_grid.wave[0], fake_grid.wave[-1]), 0.9)
    assert 0.1 < z_max < 0.25
    assert A.max_redshift("apogee", (fake_grid.wave[0], fake_grid.wave[-1])) == -1.0


def test_real_mastar_grid():
    cache = cache_dir()
    if not (cache.joinpath(*A.TEMPLATE_ROOT, "mastar_ssp_v1.0")).is_dir():
        pytest.skip(f"MaStar SSP templates not in the data cache {cache} (spectok data fetch)")
    grid = A.load_ssp_grid(cache, "mastar")
    assert grid.flux.shape == (54, 4562)
    assert (grid.wave[0], grid.wave[-1]) == pytest.approx((3621.6, 10351.4), abs=0.1)
    assert 1300 < (grid.wave / grid.fwhm).min() < (grid.wave / grid.fwhm).max() < 2500
    # Vacuum: the Hα absorption of a 1 Gyr population is centred on 6564.6, not 6562.8.
    one_gyr = int(np.flatnonzero((grid.age == 1.0) & (grid.metallicity == 0.0))[0])
    near = np.abs(grid.wave - 6564.61) < 15.0
    absorbed = np.clip(1.0 - grid.flux[one_gyr, near] / np.max(grid.flux[one_gyr, near]), 0, None)
    assert np.sum(grid.wave[near] * absorbed) / np.sum(absorbed) == pytest.approx(6564.61, abs=0.8)


# -- quasars ------------------------------------------------------------------------


def test_quasar_is_valid_and_covers_every_instrument():
    qso = A.quasar(np.random.default_rng(4), 2.5)
    assert_valid(qso)
    assert qso.wave_rest[0] <= 650.0 and qso.wave_rest[-1] >= 12000.0
    for z in (0.1, 4.0):
        for key in ("sdss", "boss", "desi", "lamost_lrs", "gaia_xp"):
            lo, hi = A.rest_coverage_needed(key, z)
            assert qso.wave_rest[0] <= lo and qso.wave_rest[-1] >= hi
    assert qso.meta["class"] == "QSO" and qso.meta["z"] == 2.5


def test_quasar_broad_lines_at_rest_positions():
    qso = A.quasar(np.random.default_rng(9), 1.0, forest=False, alpha_nu=-0.5, fwhm_broad=3000.0)
    for name in ("MgII_2799", "Hbeta", "Halpha"):
        center = L.get(name).wave_vac
        window = np.abs(qso.wave_rest - center) < 30.0
        peak = qso.wave_rest[window][np.argmax(qso.flux[window])]
        assert peak == pytest.approx(center, abs=3.0), name


def test_quasar_forest_deepens_with_redshift():
    transmission = {}
    for z in (2.2, 3.5):
        with_forest = A.quasar(np.random.default_rng(12), z)
        without = A.quasar(np.random.default_rng(12), z, forest=False)
        assert np.array_equal(with_forest.wave_rest, without.wave_rest)
        blue = (with_forest.wave_rest > 1070.0) & (with_forest.wave_rest < 1170.0)
        red = (with_forest.wave_rest > 1250.0) & (with_forest.wave_rest < 1500.0)
        assert np.allclose(with_forest.flux[red], without.flux[red])  # nothing redward of Lyα
        transmission[z] = with_forest.flux[blue].mean() / without.flux[blue].mean()
        expected = np.exp(-A.tau_eff_lya(z - 0.07 * (1 + z)))  # mid-window absorber redshift
        assert transmission[z] == pytest.approx(expected, abs=0.06)
    assert transmission[3.5] < transmission[2.2] - 0.15
