"""The How-it-works figures: patches, one patch's pixels, the wavelength code, tokens, embedding."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..spectrum import Spectrum
from .figures import _y_range, flux_unit_label

if TYPE_CHECKING:  # heavy imports only for type checkers
    from ..model.tokenizer import TokenSet


# -- teaching: from pixels to neighbours ------------------------------------------------------


def patches_figure(spectrum: Spectrum, config, max_patches: int = 400):
    """The spectrum cut into patches: alternating bands, excluded patches in red."""
    import plotly.graph_objects as go

    from ..model.batch import prepare

    item = prepare(spectrum, config)
    p = config.patch_size
    flux = np.where(spectrum.good, spectrum.flux.astype(np.float64), np.nan)
    y0, y1 = _y_range(flux, spectrum.ivar)
    fig = go.Figure()
    xs_even: list[float | None] = []
    xs_bad: list[float | None] = []
    for k in range(min(item.valid.size, max_patches)):
        a, b = k * p, min((k + 1) * p, len(spectrum)) - 1
        box = [spectrum.wave[a], spectrum.wave[b], spectrum.wave[b], spectrum.wave[a],
               spectrum.wave[a], None]
        if not item.valid[k]:
            xs_bad += box
        elif k % 2 == 0:
            xs_even += box
    ys = [y0, y0, y1, y1, y0, None]
    for xs, colour, name in ((xs_even, "rgba(31,119,180,0.12)", "patch (alternate bands)"),
                             (xs_bad, "rgba(214,39,40,0.25)", "excluded patch (mostly bad pixels)")):
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys * (len(xs) // 6), fill="toself", mode="none",
                                     fillcolor=colour, name=name, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=spectrum.wave, y=flux, mode="lines", name="flux",
                             line=dict(color="black", width=1)))
    fig.update_layout(height=340, margin=dict(l=60, r=20, t=30, b=45),
                      xaxis_title="observed wavelength [Å, vacuum]",
                      yaxis_title=flux_unit_label(spectrum.meta.get("flux_unit")),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1.0, xanchor="right"))
    return fig, item


def patch_pixels_figure(item, patch: int):
    """One patch's inputs: normalised flux, log σ and the good flag per pixel."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    patch = int(np.clip(patch, 0, item.valid.size - 1))
    fig = make_subplots(rows=1, cols=3, subplot_titles=("flux / median", "log10 σ (normalised)",
                                                        "good pixel (1) or bad (0)"))
    wave = item.wave[patch]
    for col in range(3):
        fig.add_trace(go.Scatter(x=wave, y=item.pixels[patch, :, col], mode="lines+markers",
                                 marker=dict(size=4), showlegend=False), row=1, col=col + 1)
    fig.update_layout(height=250, margin=dict(l=40, r=10, t=40, b=30))
    return fig


def encoding_figure(spectrum: Spectrum, config, max_pixels: int = 600):
    """The sinusoidal wavelength code of each pixel: rows = frequencies, columns = pixels."""
    import plotly.graph_objects as go
    import torch

    from ..model.network import encode_wavelength, wavelength_frequencies

    step = max(1, len(spectrum) // max_pixels)
    wave = spectrum.wave[::step]
    freqs = wavelength_frequencies(config)
    code = encode_wavelength(torch.from_numpy(wave), freqs).numpy()  # (n, 2F)
    periods = 2.0 * np.pi / freqs.numpy()
    n_freq = periods.size
    names = [f"sin, period {pp:,.0f} Å" for pp in periods] + [f"cos, period {pp:,.0f} Å" for pp in periods]
    fig = go.Figure(go.Heatmap(z=code.T, x=wave, y=list(range(2 * n_freq)), colorscale="RdBu",
                               zmin=-1, zmax=1, customdata=np.array(names)[:, None].repeat(wave.size, 1),
                               hovertemplate="λ=%{x:.1f} Å<br>%{customdata}<br>value %{z:.2f}<extra></extra>"))
    fig.update_layout(height=360, margin=dict(l=60, r=20, t=30, b=45),
                      xaxis_title="wavelength [Å, vacuum]",
                      yaxis_title="code component (short periods at the bottom)")
    return fig


def tokens_figure(tokens: TokenSet):
    """Token vectors as a heat map: one column per patch, at its wavelength span."""
    import plotly.graph_objects as go

    centre = 0.5 * (tokens.wave_min + tokens.wave_max)
    values = np.where(tokens.valid[:, None], tokens.tokens, np.nan)
    fig = go.Figure(go.Heatmap(z=values.T, x=centre, colorscale="RdBu_r", zmid=0.0,
                               hovertemplate="patch at %{x:.0f} Å<br>dim %{y}<br>%{z:.2f}<extra></extra>"))
    fig.update_layout(height=320, margin=dict(l=60, r=20, t=30, b=45),
                      xaxis_title="patch centre [Å, vacuum]", yaxis_title="token dimension")
    return fig


def embedding_figure(vector: np.ndarray):
    """The embedding as bars: one number per dimension, unit length overall."""
    import plotly.graph_objects as go

    vector = np.asarray(vector, np.float64).ravel()
    fig = go.Figure(go.Bar(x=np.arange(vector.size), y=vector, marker_color="#1f77b4"))
    fig.update_layout(height=260, margin=dict(l=50, r=20, t=30, b=40),
                      xaxis_title="embedding dimension", yaxis_title="value")
    return fig


