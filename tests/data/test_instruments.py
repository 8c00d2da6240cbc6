"""The simulator's instruments: grids, line-spread functions, noise, masks, flux scale.

Every number here comes from simulated spectra (no real files are read).
"""

import math

import numpy as np
import pytest

from spectok_core import Spectrum, surveys
from spectok_core.data import instruments as ins
from spectok_core.data.simulate import SimSource
from spectok_core.spectrum import SpectrumError, air_to_vacuum

SIMULATED = ("sdss", "boss", "desi", "lamost_lrs", "lamost_mrs", "apogee", "gaia_xp", "spex")
# Observed wavelength of the test line for each instrument: inside an arm, away from edges.
LINE_AT = {"sdss": 6500.0, "boss": 7000.0, "desi": 6800.3, "lamost_lrs": 5000.0,
           "lamost_mrs": 6600.0, "apogee": 15500.0, "gaia_xp": 8000.0, "spex": 12000.0}
PLAIN = (str, int, float, bool, type(None))


def line_source(key: str, observed: float, z: float, width: float = 0.5,
                amplitude: float = 50.0) -> tuple[SimSource, float]:
    """Flat continuum plus a Gaussian line that IS the template: its FWHM is ``fwhm_rest``.

    width: the template's FWHM everywhere, and so the line's, as a fraction of the instrument's.
    """
    fwhm_inst = float(ins.lsf_fwhm(key, observed))
    line_fwhm_rest = width * fwhm_inst / (1.0 + z)
    lo, hi = ins.native_wave(key)[[0, -1]]
    wave = np.arange(0.97 * lo / (1 + z), 1.03 * hi / (1 + z), line_fwhm_rest / 8.0)
    fwhm_rest = width * ins.lsf_fwhm(key, wave * (1.0 + z)) / (1.0 + z)
    centre = observed / (1.0 + z)
    flux = 1.0 + amplitude * np.exp(-0.5 * ((wave - centre) / (line_fwhm_rest / 2.3548)) ** 2)
    return SimSource("line", wave, flux, fwhm_rest, z=z, meta={"class": "GALAXY"}), fwhm_inst


def line_moments(wave: np.ndarray, model: np.ndarray, centre: float, fwhm: float):
    """Centroid, pixel-corrected FWHM and local pixel width of the continuum-subtracted line."""
    edges = ins._edges(wave)
    width = np.diff(edges)
    sel = np.abs(wave - centre) < 4.0 * fwhm
    assert np.sum(sel) >= 5
    continuum = np.median(model[~sel & (np.abs(wave - centre) < 12 * fwhm)])
    line = (model[sel] - continuum) * width[sel]
    mean = np.sum(wave[sel] * line) / np.sum(line)
    var = np.sum((wave[sel] - mean) ** 2 * line) / np.sum(line) - np.mean(width[sel] ** 2) / 12.0
    return mean, 2.3548 * np.sqrt(var), float(np.median(width[sel]))


def flat_source(lo: float = 2500.0, hi: float = 27000.0, step: float = 2.0) -> SimSource:
    wave = np.arange(lo, hi, step)
    meta = {"class": "STAR", "teff": 5800.0}
    return SimSource("flat", wave, np.ones_like(wave), 0.1, meta=meta)


def test_every_required_survey_is_simulated():
    assert set(SIMULATED) <= set(ins.SIMULATED_SURVEYS)
    for key in ins.SIMULATED_SURVEYS:
        assert surveys.get(key).sim is not None


@pytest.mark.parametrize("key", SIMULATED)
@pytest.mark.parametrize("z", [0.2, 0.2371])
def test_unresolved_line_lands_at_redshifted_wavelength_with_instrument_width(key, z):
    observed = LINE_AT[key]
    source, fwhm_inst = line_source(key, observed, z)
    obs = ins.simulate(source, key, np.random.default_rng(0), snr=50.0)
    spec = obs.spectrum
    centroid, fwhm, pixel = line_moments(spec.wave, obs.model_flux, observed, fwhm_inst)
    assert abs(centroid - observed) < 0.1 * pixel
    # template (0.5 FWHM) + instrument in quadrature = the instrument's FWHM
    assert fwhm == pytest.approx(fwhm_inst, rel=0.03)
    assert fwhm_inst == pytest.approx(observed / ins.resolving_power(key, observed), rel=1e-9)
    assert "lsf_limited_by_template" not in spec.meta


@pytest.mark.parametrize("key", ["sdss", "apogee", "gaia_xp"])
def test_template_broader_than_instrument_is_not_sharpened(key):
    observed = LINE_AT[key]
    source, fwhm_inst = line_source(key, observed, 0.1, width=1.6)
    obs = ins.simulate(source, key, np.random.default_rng(1), snr=50.0)
    _, fwhm, _ = line_moments(obs.spectrum.wave, obs.model_flux, observed, 1.6 * fwhm_inst)
    assert fwhm == pytest.approx(1.6 * fwhm_inst, rel=0.05)
    assert obs.spectrum.meta["lsf_limited_by_template"] is True


def test_resolution_follows_registry_anchors():
    # SDSS R rises with λ (WDISP of the real files); Gaia XP is strongly λ-dependent.
    assert ins.resolving_power("sdss", 4000.0) < ins.resolving_power("sdss", 9000.0)
    gaia = ins.resolving_power("gaia_xp", np.array([3400.0, 6000.0, 8000.0]))
    assert 20 <= gaia.min() and gaia.max() <= 100 and gaia[0] > 2 * gaia[1]


@pytest.mark.parametrize("key", SIMULATED)
def test_noise_matches_stated_ivar(key):
    source = flat_source()
    rng = np.random.default_rng(7)
    pulls, snrs = [], []
    for _ in range(25):
        obs = ins.simulate(source, key, rng, snr=10.0)
        spec = obs.spectrum
        pulls.append(((spec.flux - obs.model_flux) * np.sqrt(spec.ivar))[spec.good])
        snrs.append(spec.median_snr)
    pulls = np.concatenate(pulls)
    assert pulls.size > 5000
    assert np.std(pulls) == pytest.approx(1.0, abs=0.03)
    assert abs(np.mean(pulls)) < 0.03
    assert np.median(snrs) == pytest.approx(10.0, rel=0.1)


def test_snr_is_drawn_from_the_registry_range():
    rng = np.random.default_rng(2)
    draws = np.array([ins.draw_snr("boss", rng) for _ in range(4000)])
    lo, hi = surveys.get("boss").snr_range
    assert np.percentile(draws, 5) == pytest.approx(lo, rel=0.15)
    assert np.percentile(draws, 95) == pytest.approx(hi, rel=0.15)
    spec = ins.observe(flat_source(), "boss", np.random.default_rng(3))
    assert lo / 3 <= spec.meta["snr_target"] <= 3 * hi


def test_pixels_beyond_source_coverage_are_masked_not_extrapolated():
    wave = np.arange(5000.0, 7000.0, 0.5)
    source = SimSource("short", wave, 1.0 + 0.1 * np.sin(wave / 20.0), 0.5)
    spec = ins.observe(source, "sdss", np.random.default_rng(4), snr=20.0)
    outside = (spec.wave < 5000.0) | (spec.wave > 7000.0)
    assert np.all(spec.mask[outside]) and np.all(spec.ivar[outside] == 0)
    assert np.all(spec.flux[outside] == 0)
    inside = (spec.wave > 5020.0) & (spec.wave < 6980.0)
    assert np.mean(spec.good[inside]) > 0.95
    # the edge pixels within 2σ of the LSF are bad too
    sigma = ins.lsf_fwhm("sdss", 5000.0) / 2.3548
    assert np.all(spec.mask[(spec.wave > 5000.0) & (spec.wave < 5000.0 + 1.5 * sigma)])


def test_source_that_misses_the_instrument_raises():
    with pytest.raises(SpectrumError, match="covers"):
        ins.observe(flat_source(3000.0, 6000.0), "apogee", np.random.default_rng(0))


@pytest.mark.parametrize("key", SIMULATED)
def test_every_survey_gives_a_valid_spectrum(key):
    wave = np.exp(np.arange(np.log(2000.0), np.log(27000.0), 2e-5))
    flux = (wave / 5000.0) ** -1.5 * (1.0 + 0.2 * np.sin(wave / 37.0))
    source = SimSource("gal-1", wave, flux, 0.3, z=0.05,
                       meta={"class": "GALAXY", "subclass": "STARFORMING", "logg": np.float32(4.5)})
    rng = np.random.default_rng(11)
    spec = ins.observe(source, key, rng, object_meta={"ra": np.float64(150.1), "pair_id": "p-7",
                                                      "junk": np.arange(3)})
    assert isinstance(spec, Spectrum) and spec.survey == key
    assert spec.wave.size == ins.native_wave(key).size and np.all(np.diff(spec.wave) > 0)
    assert spec.flux.dtype == np.float32 and spec.ivar.dtype == np.float32
    assert np.all(np.isfinite(spec.flux)) and np.all(spec.ivar >= 0)
    assert np.sum(spec.good) > 0.5 * spec.wave.size
    meta = spec.meta
    assert meta["origin"] == "simulated" and meta["survey"] == key
    assert meta["object_id"] == "gal-1" and meta["class"] == "GALAXY" and meta["z"] == 0.05
    assert meta["snr_target"] > 0 and meta["flux_unit"] == surveys.get(key).sim.flux_unit
    assert meta["ra"] == 150.1 and meta["pair_id"] == "p-7" and "junk" not in meta
    assert all(isinstance(v, PLAIN) for v in meta.values()), meta
    assert type(meta["logg"]) is float


def test_same_seed_same_spectrum():
    source = flat_source()
    a = ins.observe(source, "desi", np.random.default_rng(5))
    b = ins.observe(source, "desi", np.random.default_rng(5))
    assert np.array_equal(a.flux, b.flux) and np.array_equal(a.mask, b.mask)


def test_grids_follow_the_survey_files():
    desi = ins.native_wave("desi")
    assert desi[0] == 3600.0 and desi[-1] == pytest.approx(9824.0)
    assert np.allclose(np.diff(desi), 0.8)
    apogee = ins.native_wave("apogee")
    assert apogee.size == 8575 and np.allclose(np.log10(apogee), 4.179 + 6e-6 * np.arange(8575))
    sdss = np.log10(ins.native_wave("sdss"))
    assert np.allclose(sdss * 1e4, np.round(sdss * 1e4))  # the SDSS 1e-4 dex lattice
    gaia = ins.native_wave("gaia_xp")
    assert gaia.size == 343 and gaia[0] == 3360.0 and gaia[-1] == 10200.0
    mrs = ins.native_wave("lamost_mrs")
    assert np.max(np.diff(mrs)) > 500.0  # two windows, the gap absent
    spex = ins.native_wave("spex")
    width = np.diff(spex)
    assert 540 <= spex.size <= 580 and width.min() > 20.0 and width.max() < 45.0
    assert width[np.searchsorted(spex, 13000.0)] > 1.5 * width[0]  # prism: widths vary


def test_apogee_chip_gaps_are_bad_and_zero():
    spec = ins.observe(flat_source(), "apogee", np.random.default_rng(6), snr=100.0)
    arms = surveys.get("apogee").arms
    for left, right in zip(arms, arms[1:]):
        gap = (spec.wave > left.wave_max) & (spec.wave < right.wave_min)
        assert gap.sum() > 10 and np.all(spec.mask[gap]) and np.all(spec.flux[gap] == 0)


def test_desi_overlap_pixels_are_inverse_variance_combined():
    # Each arm tapers across the overlap; combined, the S/N there stays above either arm's.
    obs = ins.simulate(flat_source(), "desi", np.random.default_rng(8), snr=20.0)
    arms = surveys.get("desi").arms
    overlap = (obs.spectrum.wave > arms[1].wave_min) & (obs.spectrum.wave < arms[0].wave_max)
    snr = obs.model_flux * np.sqrt(obs.spectrum.ivar)
    good = obs.spectrum.good
    assert np.median(snr[overlap & good]) > 0.5 * np.median(snr[good])


def test_sky_lines_raise_the_noise_on_the_ground_only():
    source = flat_source(step=0.5)
    spec = ins.observe(source, "sdss", np.random.default_rng(9), snr=20.0)
    oxygen = air_to_vacuum(5577.339)  # [O I] night-sky line, vacuum 5578.89 Å
    at_line = spec.ivar[np.argmin(np.abs(spec.wave - oxygen))]
    nearby = np.median(spec.ivar[(spec.wave > 5450) & (spec.wave < 5530)])
    assert at_line < 0.2 * nearby
    gaia = ins.observe(source, "gaia_xp", np.random.default_rng(9), snr=20.0)
    ratio = gaia.ivar[1:-1] / np.maximum(gaia.ivar[:-2], gaia.ivar[2:])
    assert ratio.min() > 0.8  # smooth: no line-like noise spikes from space


def test_flux_units_and_scales():
    source = flat_source()
    obs = ins.simulate(source, "sdss", np.random.default_rng(10), snr=30.0)
    spec, sim = obs.spectrum, surveys.get("sdss").sim
    band = (spec.wave >= sim.mag_band[0]) & (spec.wave <= sim.mag_band[1])
    centre = np.mean(spec.wave[band])
    f_lambda = 3631e-23 * 10 ** (-0.4 * spec.meta["mag_ab"]) * 2.99792458e18 / centre**2
    assert np.mean(obs.model_flux[band]) * 1e-17 == pytest.approx(f_lambda, rel=0.01)
    assert sim.mag_range[0] <= spec.meta["mag_ab"] <= sim.mag_range[1]
    gaia = ins.simulate(source, "gaia_xp", np.random.default_rng(10), snr=30.0)
    assert np.median(gaia.model_flux) == pytest.approx(1.0, rel=1e-3)
    spex = ins.simulate(source, "spex", np.random.default_rng(10), snr=30.0)
    assert np.max(spex.model_flux) == pytest.approx(1.0, rel=1e-3)


def test_pixel_integration_conserves_flux_and_matches_a_gaussian():
    # A single narrow box of unit flux, blurred by σ = 2 Å onto 1 Å pixels.
    src_edges = np.array([0.0, 99.95, 100.05, 200.0])
    src_flux = np.array([0.0, 10.0, 0.0])
    out_edges = np.arange(80.0, 120.01, 1.0)
    out = ins.pixel_integrated_lsf(src_edges, src_flux, out_edges, np.full(out_edges.size, 2.0))
    assert np.sum(out) == pytest.approx(1.0, rel=1e-5)
    cdf = np.vectorize(lambda x: 0.5 * (1.0 + math.erf((x - 100.0) / (2.0 * math.sqrt(2.0)))))
    expected = np.diff(cdf(out_edges))  # a Gaussian integrated over each pixel
    assert np.max(np.abs(out - expected)) < 1e-3 * expected.max()
    # σ = 0 is plain rebinning
    sharp = ins.pixel_integrated_lsf(src_edges, src_flux, out_edges, np.zeros(out_edges.size))
    assert sharp[19] == pytest.approx(0.5) and sharp[20] == pytest.approx(0.5)
    assert np.sum(sharp) == pytest.approx(1.0)
