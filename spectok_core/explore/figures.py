"""Spectrum plots: one spectrum with its lines, neighbours stacked or overlaid, instrument coverage,
reconstruction and rendering. Plotly is imported inside each function, so importing stays cheap."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .. import lines as line_table
from .. import surveys
from ..spectrum import Spectrum, SpectrumError
from .common import _SURVEY_COLOURS, CLASS_OBJECTS, STRONG_LINES, _cycle, spectrum_label

# -- wavelengths and lines --------------------------------------------------------------------


def rest_frame(wave: np.ndarray, z: float) -> np.ndarray:
    """Rest-frame wavelengths λ / (1 + z); z must be > -1."""
    z = float(z)
    if not z > -1.0:
        raise SpectrumError(f"redshift z={z} is not > -1; there is no rest frame for it")
    return np.asarray(wave, np.float64) / (1.0 + z)


def line_markers(wave_min: float, wave_max: float, z: float = 0.0, object_class: str | None = None,
                 max_lines: int = 40) -> list[line_table.Line]:
    """Lines to mark on an OBSERVED range at redshift z, for a class (None: every class).

    When more than ``max_lines`` fall in range (the H band is dense), strong
    features and hydrogen lines are kept first, then the rest in wavelength order.
    """
    objects = CLASS_OBJECTS.get(str(object_class).upper()) if object_class else None
    # Quasars show emission lines, stars absorption; galaxies (and the unknown) both.
    kind = {"qso": "emission", "star": "absorption"}.get(objects or "")
    found = line_table.select(objects=objects, kind=kind, wave_min=wave_min, wave_max=wave_max,
                              z=z or 0.0)
    if len(found) <= max_lines:
        return found

    def priority(line: line_table.Line) -> tuple[int, float]:
        if line.name in STRONG_LINES:
            return (0, line.wave_vac)
        if line.species == "H I":
            return (1, line.wave_vac)
        return (2, line.wave_vac)

    kept = sorted(found, key=priority)[:max_lines]
    return sorted(kept, key=lambda line: line.wave_vac)


def median_normalised(spectrum: Spectrum) -> np.ndarray:
    """Flux divided by the median of its usable pixels (bad pixels NaN), for overlays."""
    good = spectrum.good
    level = float(np.median(spectrum.flux[good])) if good.any() else 1.0
    if not level > 0:
        level = float(np.median(np.abs(spectrum.flux[good]))) or 1.0
    return np.where(good, spectrum.flux / level, np.nan)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of consecutive True values."""
    if not mask.any():
        return []
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2]))


def _y_range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
    return float(lo - pad), float(hi + pad)


def _thin(wave: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ~max_points points for small plots: min and max of each bin, so lines survive.

    Bins holding only NaN (masked pixels) keep one NaN, so gaps stay gaps.
    """
    n = wave.size
    if n <= max_points:
        return wave, values
    bins = max(1, max_points // 2)
    width = -(-n // bins)
    padded = np.full(bins * width, np.nan)
    padded[:n] = values
    blocks = padded.reshape(bins, width)
    empty = np.all(np.isnan(blocks), axis=1)
    filled = np.where(np.isnan(blocks), 0.0, blocks)
    low = np.where(np.isnan(blocks), np.inf, filled).argmin(axis=1)
    high = np.where(np.isnan(blocks), -np.inf, filled).argmax(axis=1)
    first, second = np.minimum(low, high), np.maximum(low, high)
    base = np.arange(bins) * width
    index = np.stack([base + first, base + second], axis=1)
    index[empty] = base[empty, None]
    index = np.minimum(index, n - 1).ravel()
    out_v = values[index].astype(np.float64)
    out_v[np.repeat(empty, 2)] = np.nan
    return wave[index], out_v


def _mask_trace(wave: np.ndarray, mask: np.ndarray, y0: float, y1: float):
    """Shaded bands over masked pixels, as ONE filled trace (cheap with thousands of runs)."""
    import plotly.graph_objects as go

    xs: list[float | None] = []
    ys: list[float | None] = []
    for a, b in _runs(mask):
        left = wave[a] - 0.5 * (wave[a + 1] - wave[a]) if a + 1 < wave.size else wave[a]
        right = wave[b - 1] + 0.5 * (wave[b - 1] - wave[b - 2]) if b >= 2 else wave[b - 1]
        xs += [left, right, right, left, left, None]
        ys += [y0, y0, y1, y1, y0, None]
    return go.Scatter(x=xs, y=ys, fill="toself", mode="none", fillcolor="rgba(214,39,40,0.15)",
                      name="masked pixels", hoverinfo="skip")


def _line_traces(found: list[line_table.Line], z: float, shift: float, y0: float, y1: float,
                 span: float):
    """Marked lines: dashed verticals with hover text, plus their labels along the top."""
    import plotly.graph_objects as go

    xs: list[float | None] = []
    ys: list[float | None] = []
    text: list[str | None] = []
    for line in found:
        x = line.wave_vac * (1.0 + z) / shift
        label = f"{line.label} ({line.kind}, rest {line.wave_vac:.2f} Å)"
        xs += [x, x, None]
        ys += [y0, y1, None]
        text += [label, label, None]
    markers = go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(90,90,90,0.45)", width=1,
                         dash="dot"), name="lines", hovertext=text, hoverinfo="text")
    # Labels closer than ~2 % of the range to the last one shown are left to the hover text.
    label_x, label_text = [], []
    for line in found:
        x = line.wave_vac * (1.0 + z) / shift
        if label_x and x - label_x[-1] < 0.02 * span:
            continue
        label_x.append(x)
        label_text.append(line.label)
    labels = go.Scatter(
        x=label_x, y=[y1] * len(label_x),
        mode="text", text=label_text, textposition="top center",
        textfont=dict(size=9, color="#555"), showlegend=False, hoverinfo="skip",
    )
    return markers, labels


def spectrum_figure(spectrum: Spectrum, z: float | None = None, rest: bool = False,
                    show_lines: bool = True, object_class: str | None = None,
                    title: str | None = None, height: int = 380):
    """The interactive spectrum plot: flux, masked pixels shaded, lines marked.

    ``rest`` plots rest-frame wavelengths (needs ``z``); lines are marked at
    their wavelengths redshifted by ``z`` (0 when unknown).
    """
    import plotly.graph_objects as go

    z_used = float(z) if z is not None and math.isfinite(float(z)) else 0.0
    shift = 1.0 + z_used if rest else 1.0
    wave = rest_frame(spectrum.wave, z_used) if rest else spectrum.wave
    flux = np.where(spectrum.good, spectrum.flux.astype(np.float64), np.nan)
    y0, y1 = _y_range(flux)
    fig = go.Figure()
    if spectrum.mask.any():
        fig.add_trace(_mask_trace(wave, spectrum.mask, y0, y1))
    fig.add_trace(go.Scatter(x=wave, y=flux, mode="lines", line=dict(color="black", width=1),
                             name="flux", connectgaps=False))
    if show_lines:
        found = line_markers(spectrum.wave[0], spectrum.wave[-1], z_used,
                             object_class or spectrum.meta.get("class"))
        if found:
            for trace in _line_traces(found, z_used, shift, y0, y1, wave[-1] - wave[0]):
                fig.add_trace(trace)
    unit = spectrum.meta.get("flux_unit") or "flux"
    frame = f"rest-frame wavelength (z = {z_used:.4f}) [Å, vacuum]" if rest else \
        "observed wavelength [Å, vacuum]"
    fig.update_layout(
        title=title or spectrum_label(spectrum), height=height, margin=dict(l=60, r=20, t=50, b=45),
        xaxis_title=frame, yaxis_title=str(unit), yaxis_range=[y0, y1 + 0.08 * (y1 - y0)],
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1.0, xanchor="right"),
        hovermode="closest",
    )
    return fig


def _unit_span(values: np.ndarray) -> np.ndarray:
    """Values scaled so their 1st–99th percentiles span 0–1 (extremes clipped a little beyond)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return values
    lo, hi = np.percentile(finite, [1, 99])
    scale = hi - lo if hi > lo else 1.0
    return np.clip((values - lo) / scale, -0.25, 1.35)


def neighbours_figure(query: Spectrum | None, spectra: Sequence[Spectrum], labels: Sequence[str],
                      max_points: int = 700, step: float = 1.3):
    """The query on top and each neighbour below it, stacked on one wavelength axis.

    Each spectrum is scaled to its own 1–99 % flux range (shapes compare, not
    fluxes) and shifted down by ``step``; one plot, so it draws fast.
    """
    import plotly.graph_objects as go

    rows: list[tuple[Spectrum, str, str]] = []
    if query is not None:
        rows.append((query, "your spectrum", "black"))
    rows += [(s, label, "#1f77b4") for s, label in zip(spectra, labels)]
    fig = go.Figure()
    label_x, label_y, label_text = [], [], []
    for i, (spectrum, label, colour) in enumerate(rows):
        offset = -i * step
        w, f = _thin(spectrum.wave, median_normalised(spectrum), max_points)
        fig.add_trace(go.Scatter(x=w, y=_unit_span(f) + offset, mode="lines", name=label,
                                 line=dict(color=colour, width=1), showlegend=False,
                                 hovertemplate=f"{label}<br>%{{x:.1f}} Å<extra></extra>"))
        label_x.append(float(spectrum.wave[0]))
        label_y.append(offset + 1.1)
        label_text.append(label)
    fig.add_trace(go.Scatter(x=label_x, y=label_y, mode="text", text=label_text,
                             textposition="middle right", textfont=dict(size=11),
                             showlegend=False, hoverinfo="skip"))
    fig.update_layout(height=80 + 95 * len(rows),
                      margin=dict(l=20, r=20, t=20, b=45),
                      xaxis_title="observed wavelength [Å, vacuum]",
                      yaxis=dict(showticklabels=False, zeroline=False, showgrid=False,
                                 title="flux, each scaled to its own range"))
    return fig


def overlay_figure(query: Spectrum | None, spectra: Sequence[Spectrum], labels: Sequence[str],
                   max_points: int = 1500):
    """Query and neighbours overlaid (median-normalised, observed wavelengths)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for spectrum, label, colour in zip(spectra, labels, _cycle(_SURVEY_COLOURS)):
        w, f = _thin(spectrum.wave, median_normalised(spectrum), max_points)
        fig.add_trace(go.Scatter(x=w, y=f, mode="lines", name=label, opacity=0.7,
                                   line=dict(width=1, color=colour)))
    if query is not None:
        w, f = _thin(query.wave, median_normalised(query), max_points)
        fig.add_trace(go.Scatter(x=w, y=f, mode="lines", name="query",
                                   line=dict(color="black", width=1.5)))
    fig.update_layout(height=420, margin=dict(l=50, r=10, t=30, b=40),
                      xaxis_title="observed wavelength [Å, vacuum]",
                      yaxis_title="flux / median")
    return fig


def coverage_figure(keys: Sequence[str] | None = None):
    """The instruments the model reads: each one's wavelength coverage, coloured by resolution."""
    import plotly.graph_objects as go

    chosen = [surveys.get(k) for k in keys] if keys else \
        [s for s in surveys.SURVEYS.values() if s.key != "unknown"]
    chosen = sorted(chosen, key=lambda s: (s.wave_min, s.wave_max), reverse=True)
    fig = go.Figure()
    for survey in chosen:
        r = survey.resolving_power
        fig.add_trace(go.Scatter(
            x=[survey.wave_min, survey.wave_max], y=[survey.name, survey.name], mode="lines",
            line=dict(width=12, color=_resolution_colour(r)), showlegend=False,
            hovertemplate=f"{survey.name}<br>{survey.wave_min:,.0f}–{survey.wave_max:,.0f} Å"
                          f"<br>R ≈ {r:,.0f}<extra></extra>"))
    fig.update_layout(
        height=40 + 26 * len(chosen), margin=dict(l=10, r=10, t=30, b=40),
        xaxis=dict(type="log", title="vacuum wavelength [Å] (colour: resolving power, darker = higher)"),
        yaxis=dict(automargin=True),
    )
    return fig


def _resolution_colour(r: float) -> str:
    """Darker blue for higher resolving power (R ~ 50 to 30,000, on a log scale)."""
    if not math.isfinite(r):
        return "rgb(150,150,150)"
    t = float(np.clip((math.log10(r) - 1.7) / (4.5 - 1.7), 0.0, 1.0))
    return f"rgb({int(200 - 180 * t)},{int(220 - 160 * t)},{int(255 - 90 * t)})"


def reconstruction_figure(spectrum: Spectrum, model: Spectrum, residuals: np.ndarray):
    """Input and reconstruction on top, residuals in σ below, sharing the wavelength axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32],
                        vertical_spacing=0.04)
    flux = np.where(spectrum.good, spectrum.flux, np.nan)
    y0, y1 = _y_range(flux.astype(np.float64))
    if spectrum.mask.any():
        fig.add_trace(_mask_trace(spectrum.wave, spectrum.mask, y0, y1), row=1, col=1)
    fig.add_trace(go.Scatter(x=spectrum.wave, y=flux, mode="lines", name="input",
                             line=dict(color="black", width=1)), row=1, col=1)
    fig.add_trace(go.Scatter(x=model.wave, y=model.flux, mode="lines", name="reconstruction",
                             line=dict(color="#d62728", width=1.2)), row=1, col=1)
    fig.add_trace(go.Scatter(x=spectrum.wave, y=residuals, mode="lines", name="residual / σ",
                             line=dict(color="#1f77b4", width=0.8)), row=2, col=1)
    for level in (-3, 3):
        fig.add_hline(y=level, line=dict(color="grey", dash="dot", width=1), row=2, col=1)
    r = residuals[np.isfinite(residuals)]
    limit = float(np.clip(np.percentile(np.abs(r), 99) * 1.2, 4.0, 50.0)) if r.size else 5.0
    fig.update_yaxes(range=[y0, y1], title_text=str(spectrum.meta.get("flux_unit") or "flux"),
                     row=1, col=1)
    fig.update_yaxes(range=[-limit, limit], title_text="(data − model) / σ", row=2, col=1)
    fig.update_xaxes(title_text="observed wavelength [Å, vacuum]", row=2, col=1)
    fig.update_layout(height=560, margin=dict(l=60, r=20, t=30, b=45),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1.0, xanchor="right"))
    return fig


def rendering_figure(spectrum: Spectrum, rendered: Spectrum, key: str):
    """The input (median-normalised) and its rendering on another grid, overlaid."""
    import plotly.graph_objects as go

    fig = go.Figure()
    level = np.nanmedian(np.where(spectrum.good, spectrum.flux, np.nan))
    level = level if np.isfinite(level) and level != 0 else 1.0
    fig.add_trace(go.Scatter(x=spectrum.wave, y=np.where(spectrum.good, spectrum.flux / level, np.nan),
                             mode="lines", name=f"input ({spectrum.survey}, {len(spectrum)} px)",
                             line=dict(color="rgba(0,0,0,0.55)", width=1)))
    fig.add_trace(go.Scatter(x=rendered.wave, y=rendered.flux / level, mode="lines+markers"
                             if len(rendered) < 600 else "lines",
                             marker=dict(size=4), name=f"as {key} would see it ({len(rendered)} px)",
                             line=dict(color="#d62728", width=1.5)))
    fig.update_layout(height=420, margin=dict(l=60, r=20, t=30, b=45),
                      xaxis_title="observed wavelength [Å, vacuum]", yaxis_title="flux / input median",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1.0, xanchor="right"))
    return fig


