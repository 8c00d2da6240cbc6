"""The plots an astronomer looks at (issue 13, "Plots"): each bug seen, as a check on the figure."""

from __future__ import annotations

import numpy as np
import pytest

from spectok_core import Spectrum, explore


def galaxy(z=None, cls="GALAXY", wave=None, flux_unit=None, survey="sdss"):
    wave = np.geomspace(3800.0, 9200.0, 3000) if wave is None else wave
    flux = 1.0 + 0.2 * np.exp(-0.5 * ((wave - 6563.0 * (1 + (z or 0.1))) / 4.0) ** 2)
    meta = {"object_id": "g", "class": cls}
    if z is not None:
        meta["z"] = z
    if flux_unit:
        meta["flux_unit"] = flux_unit
    return Spectrum(wave, flux, np.full(wave.size, 400.0), None, survey, meta)


def trace(fig, prefix):
    return next(t for t in fig.data if str(t.name).startswith(prefix))


def line_xs(fig):
    markers = trace(fig, "lines at z")
    return np.array([x for x in markers.x if x is not None], float)


def test_no_line_markers_for_a_galaxy_of_unknown_redshift():
    # The old figure marked rest-frame lines (z = 0) on the observed spectrum of a galaxy
    # whose z nobody knew: Halpha at 6565 A on a galaxy whose Halpha sits at 7200 A.
    fig = explore.spectrum_figure(galaxy(z=None), z=None)
    assert not any(str(t.name).startswith("lines") for t in fig.data)
    star = explore.spectrum_figure(galaxy(z=None, cls="STAR"), z=None)  # a star: lines at rest
    assert trace(star, "lines at z = 0.0000")


def test_the_redshift_moves_the_line_markers():
    spectrum = galaxy(z=None)
    at_01 = line_xs(explore.spectrum_figure(spectrum, z=0.1))
    at_02 = line_xs(explore.spectrum_figure(spectrum, z=0.2))
    halpha = 6564.6
    assert np.min(np.abs(at_01 - halpha * 1.1)) < 1.0
    assert np.min(np.abs(at_02 - halpha * 1.2)) < 1.0
    assert np.min(np.abs(at_02 - halpha * 1.1)) > 50.0  # it moved


def test_line_labels_do_not_overlap():
    span = 1000.0
    xs = np.linspace(4000.0, 4100.0, 12)  # twelve labels packed into 10 % of the axis
    texts = [f"Line {i}" for i in range(12)]
    rows = explore.label_rows(xs, texts, span, plot_px=900.0, char_px=5.6)
    assert len({r for r in rows if r is not None}) == 3  # stacked into three rows...
    assert None in rows  # ...and the ones that fit nowhere are left to the hover text
    per_px = span / 900.0
    for row in range(3):
        shown = [(x, t) for x, t, r in zip(xs, texts, rows) if r == row]
        for (x0, t0), (x1, t1) in zip(shown, shown[1:]):
            gap = (x1 - x0) / per_px
            assert gap >= 0.5 * 5.6 * (len(t0) + len(t1)), (row, x0, x1)
    # the figure draws the labels in at most three rows above the spectrum
    fig = explore.spectrum_figure(galaxy(z=0.05, cls="STAR", wave=np.linspace(3700, 4400, 2000)),
                                  z=0.0)
    labels = [t for t in fig.data if t.mode == "text"][0]
    assert 1 <= len(set(np.round(labels.y, 6))) <= 3


def test_neighbours_stay_on_the_query_range():
    query = galaxy(z=0.1)
    spex = Spectrum(np.linspace(6500.0, 25000.0, 400), np.ones(400), np.full(400, 100.0), None,
                    "spex", {"object_id": "dwarf", "class": "STAR"})
    optical = galaxy(z=0.12)
    for fig in (explore.neighbours_figure(query, [spex, optical], ["spex", "opt"]),
                explore.overlay_figure(query, [spex, optical], ["spex", "opt"])):
        lo, hi = fig.layout.xaxis.range
        assert lo < 3800 * 1.0 and 9200 <= hi < 9400  # the query's range, not 25,000 A
        drawn = [t for t in fig.data if t.mode == "lines"]
        assert max(np.nanmax(np.array(t.x, float)) for t in drawn) <= hi
    far = Spectrum(np.linspace(15000.0, 25000.0, 400), np.ones(400), np.full(400, 100.0), None,
                   "spex", {"object_id": "far", "class": "STAR"})
    fig = explore.neighbours_figure(query, [far], ["far"])
    assert any("no wavelengths in common" in str(text) for text in fig.data[-1].text)


def test_a_noisy_edge_does_not_set_the_y_range():
    wave = np.linspace(4000.0, 9000.0, 2000)
    rng = np.random.default_rng(0)
    ivar = np.full(wave.size, 1e4)
    ivar[-100:] = 1e-2  # the last 5 % of pixels: sigma 10 instead of 0.01
    flux = 1.0 + rng.normal(0, 1, wave.size) / np.sqrt(ivar)
    spectrum = Spectrum(wave, flux, ivar, None, "sdss", {"object_id": "edge"})
    lo, hi = explore.spectrum_figure(spectrum, show_lines=False).layout.yaxis.range
    assert 0.85 < lo < 1.0 and 1.0 < hi < 1.2
    blind_lo, blind_hi = explore.figures._y_range(flux)  # without the noise, the edge wins
    assert blind_hi - blind_lo > 10


@pytest.mark.parametrize("unit, shown", [
    ("1e-17 erg/s/cm2/Angstrom", "10⁻¹⁷ erg s⁻¹ cm⁻² Å⁻¹"),
    ("erg cm**(-2) s**(-1) Angstrom**(-1)", "erg s⁻¹ cm⁻² Å⁻¹"),
    ("1e-16 ergss-1cm-2A-1", "10⁻¹⁶ erg s⁻¹ cm⁻² Å⁻¹"),
    ("1e-11 erg /s /cm2 /angstroms", "10⁻¹¹ erg s⁻¹ cm⁻² Å⁻¹"),
    ("1e-15 Wm-2um-1", "10⁻¹⁵ W m⁻² µm⁻¹"),
    ("1e-17 erg/s/cm2/Angstrom (relative; not flux-calibrated)",
     "10⁻¹⁷ erg s⁻¹ cm⁻² Å⁻¹ (relative; not flux-calibrated)"),
    ("relative (MILES flux-calibrated, arbitrary scale)", "relative (MILES flux-calibrated, arbitrary scale)"),
    (None, "flux"),
    ("erg/s " * 100, ("erg/s " * 100)[:117] + "…"),  # a runaway header is cut, not parsed
])
def test_flux_units_are_shown_as_an_astronomer_writes_them(unit, shown):
    assert explore.flux_unit_label(unit) == shown


def test_the_flux_axis_never_shows_raw_unit_syntax():
    fig = explore.spectrum_figure(galaxy(z=0.1, flux_unit="erg cm**(-2) s**(-1) Angstrom**(-1)"))
    assert fig.layout.yaxis.title.text == "erg s⁻¹ cm⁻² Å⁻¹"
    assert "**" not in fig.layout.yaxis.title.text


def test_overlay_and_stack_follow_the_rest_frame_toggle():
    query = galaxy(z=0.1)
    other = galaxy(z=0.3)
    no_z = galaxy(z=None)
    labels = ["z 0.3", "unknown"]
    for make in (explore.overlay_figure, explore.neighbours_figure):
        fig = make(query, [other, no_z], labels, rest=True, query_z=0.1)
        assert "rest-frame" in fig.layout.xaxis.title.text
        mine = trace(fig, "your spectrum")
        assert np.nanmin(np.array(mine.x, float)) == pytest.approx(3800.0 / 1.1, rel=1e-6)
        shifted = trace(fig, "z 0.3")
        # its own 1 + z (its blue end is cut at the query's rest range)
        assert np.nanmax(np.array(shifted.x, float)) == pytest.approx(9200.0 / 1.3, rel=1e-3)
        assert trace(fig, "unknown (no z: observed frame)")
        observed = make(query, [other], ["z 0.3"], rest=False)
        assert np.nanmin(np.array(trace(observed, "z 0.3").x, float)) == pytest.approx(3800.0, rel=1e-3)


def test_no_line_across_the_gap_between_two_arms():
    blue = np.linspace(4950.0, 5350.0, 4000)
    red = np.linspace(6300.0, 6800.0, 5000)  # LAMOST MRS: nothing in between
    wave = np.concatenate([blue, red])
    spectrum = Spectrum(wave, np.ones(wave.size), np.full(wave.size, 100.0), None, "lamost_mrs",
                        {"object_id": "mrs", "class": "STAR"})
    for fig in (explore.spectrum_figure(spectrum),
                explore.neighbours_figure(spectrum, [spectrum], ["same"]),
                explore.overlay_figure(spectrum, [spectrum], ["same"])):
        for line in (t for t in fig.data if t.mode == "lines" and t.name and "flux" in t.name
                     or t.name in ("your spectrum", "same")):
            x, y = np.array(line.x, float), np.array(line.y, float)
            between = (x > 5350.0) & (x < 6300.0)
            assert np.isnan(y[between]).all() and between.any(), line.name
    w, f = explore.break_gaps(wave, np.ones(wave.size))
    assert w.size == wave.size + 1 and np.isnan(f).sum() == 1


def test_the_colour_bar_and_the_legend_do_not_overlap():
    import pandas as pd

    meta = pd.DataFrame({"object_id": list("abcd"), "survey": ["sdss"] * 4,
                         "class": ["QSO", "GALAXY", "STAR", "QSO"], "z": [1.0, 0.1, None, 2.0]})
    frame = explore.map_frame(meta, np.arange(8, dtype=float).reshape(4, 2))
    fig = explore.map_figure(frame, "z", query_xy=(1.0, 1.0), highlight_row=0)
    bar = next(t for t in fig.data if t.marker.showscale)
    assert bar.marker.colorbar.x >= 1.0  # the bar on the right, outside the plot
    legend = fig.layout.legend
    assert legend.orientation == "h" and legend.y >= 1.0 and legend.yanchor == "bottom"  # above
    # the ring and the star carry no row: a click on them selects nothing new
    assert all(t.hoverinfo == "skip" for t in fig.data if t.name in ("selected", "your spectrum"))
    assert explore.selected_row({"selection": {"points": [{"x": 1}, {"customdata": 3}]}}) == 3


def test_smoothing_and_the_noise_trace():
    wave = np.linspace(4000.0, 6000.0, 1000)
    rng = np.random.default_rng(1)
    ivar = np.full(wave.size, 100.0)
    ivar[500] = 0.0  # a bad pixel carries no weight
    flux = 1.0 + rng.normal(0, 0.1, wave.size)
    flux[500] = 1e6
    spectrum = Spectrum(wave, flux, ivar, None, "sdss", {"object_id": "n"})
    fig = explore.spectrum_figure(spectrum, smoothing=9, show_noise=True, show_lines=False)
    smoothed = np.array(trace(fig, "flux, smoothed over 9 px").y, float)
    assert np.nanstd(smoothed) < 0.5 * np.nanstd(flux[flux < 10])  # ~1/3 of the noise
    assert np.nanmax(smoothed) < 1.5  # the bad pixel's 1e6 did not leak in
    noise = np.array(trace(fig, "noise (1σ)").y, float)
    assert np.nanmedian(noise) == pytest.approx(0.1 / 3.0, rel=0.05)  # σ / sqrt(9)
    raw = explore.spectrum_figure(spectrum, show_noise=True, show_lines=False)
    assert np.nanmedian(np.array(trace(raw, "noise (1σ)").y, float)) == pytest.approx(0.1)


def test_redshift_slider_ranges():
    assert explore.redshift_slider_range(None, "STAR") == (-0.005, 0.005)
    assert explore.redshift_slider_range(2.3, "QSO") == (0.0, 7.0)
    assert explore.redshift_slider_range(0.1, "GALAXY") == (0.0, 1.5)
    low, high = explore.redshift_slider_range(1.2, "GALAXY")
    assert low == 0.0 and high >= 2.4
