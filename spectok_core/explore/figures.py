"""Spectrum plots: one spectrum with its lines, neighbours stacked or overlaid, instrument coverage,
reconstruction and rendering. Plotly is imported inside each function, so importing stays cheap."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from .. import lines as line_table
from .. import surveys
from ..spectrum import Spectrum, SpectrumError
from .common import _SURVEY_COLOURS, CLASS_OBJECTS, STRONG_LINES, _cycle, as_float, spectrum_label

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


def smooth(flux: np.ndarray, ivar: np.ndarray, good: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance-weighted boxcar over ``width`` pixels (bad pixels carry no weight).

    Returns (flux, ivar) on the same pixels: the weighted mean and the summed inverse
    variance of each window; pixels whose window holds no usable pixel are NaN / 0.
    Smoothing is for the eye only: the model and the search always read the raw pixels.
    """
    flux = np.asarray(flux, np.float64)
    width = int(width)
    weight = np.where(good, np.asarray(ivar, np.float64), 0.0)
    if width <= 1:
        return np.where(good, flux, np.nan), weight
    kernel = np.ones(width)
    num = np.convolve(np.where(good, flux, 0.0) * weight, kernel, mode="same")
    den = np.convolve(weight, kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / den, np.nan)
    return out, den


def noise_sigma(ivar: np.ndarray, good: np.ndarray) -> np.ndarray:
    """σ per pixel from the inverse variance; NaN where a pixel is bad or has no variance."""
    ivar = np.asarray(ivar, np.float64)
    with np.errstate(divide="ignore"):
        return np.where(good & (ivar > 0), 1.0 / np.sqrt(np.maximum(ivar, 1e-300)), np.nan)


def break_gaps(wave: np.ndarray, *values: np.ndarray, factor: float = 10.0):
    """NaN inserted where the wavelength step jumps (between arms or chips), so lines break.

    A step larger than ``factor`` × the median step is a gap without pixels (LAMOST MRS
    between its blue and red arms, APOGEE between chips): plotly would otherwise join
    the last blue pixel to the first red one with a straight line.
    Returns (wave, *values) with one NaN after each gap.
    """
    wave = np.asarray(wave, np.float64)
    if wave.size < 3:
        return (wave, *[np.asarray(v, np.float64) for v in values])
    step = np.diff(wave)
    typical = np.median(step[step > 0]) if (step > 0).any() else 0.0
    gaps = np.flatnonzero(step > factor * typical) + 1 if typical > 0 else np.array([], int)
    if gaps.size == 0:
        return (wave, *[np.asarray(v, np.float64) for v in values])
    middle = 0.5 * (wave[gaps - 1] + wave[gaps])
    out = [np.insert(wave, gaps, middle)]
    out += [np.insert(np.asarray(v, np.float64), gaps, np.nan) for v in values]
    return tuple(out)


#: Unit names as written in survey headers -> how they are shown, and their order on an axis
#: label (energy first, then time, area, and the spectral unit: erg s⁻¹ cm⁻² Å⁻¹).
_UNIT_NAMES = {
    "erg": ("erg", 0), "ergs": ("erg", 0), "j": ("J", 0), "w": ("W", 0), "photon": ("photon", 0),
    "photons": ("photon", 0), "jy": ("Jy", 0), "mjy": ("mJy", 0), "s": ("s", 1), "cm": ("cm", 2),
    "m": ("m", 2), "sr": ("sr", 3), "angstrom": ("Å", 4), "angstroms": ("Å", 4), "a": ("Å", 4),
    "aa": ("Å", 4), "å": ("Å", 4), "nm": ("nm", 4), "um": ("µm", 4), "µm": ("µm", 4),
    "micron": ("µm", 4), "hz": ("Hz", 4), "spaxel": ("spaxel", 5),
}
_UNIT_TOKEN = re.compile(
    r"\s*(?P<div>/)?\s*(?P<name>ergs|erg|photons|photon|mJy|Jy|Angstroms|Angstrom|angstroms|angstrom|"
    r"AA|Å|A|nm|um|µm|micron|cm|m|sr|spaxel|s|Hz|W|J)(?:\*\*|\^)?\(?(?P<power>[-+]?\d+)?\)?",
)
_SCALE = re.compile(r"^\s*(?:(?P<mant>\d+(?:\.\d*)?)[eE](?P<exp>[-+]?\d+)|10\s*(?:\*\*|\^)\s*\(?(?P<exp2>[-+]?\d+)\)?)\s*")
_SUPERSCRIPT = str.maketrans("-+0123456789", "⁻⁺⁰¹²³⁴⁵⁶⁷⁸⁹")


def flux_unit_label(unit: object) -> str:
    """A flux unit as an axis label: '1e-17 erg/s/cm2/Angstrom' -> '10⁻¹⁷ erg s⁻¹ cm⁻² Å⁻¹'.

    Reads the spellings survey files use (``erg cm**(-2)``, ``ergss-1cm-2A-1``, ``W m-2 um-1``,
    ``/angstroms``); a note in parentheses is kept; text it cannot read is shown as it is.
    """
    text = str(unit or "").strip()
    if not text:
        return "flux"
    if len(text) > 120:  # a header is not an essay: show the start, parse nothing
        return text[:117] + "…"
    note = ""
    if "(" in text and text.endswith(")") and not re.search(r"\*\*\(|\^\(", text[text.index("("):]):
        cut = text.index("(")
        text, note = text[:cut].strip(), " " + text[cut:]
    prefix = ""
    scale = _SCALE.match(text)
    if scale:
        exp = int(scale.group("exp") if scale.group("exp") is not None else scale.group("exp2"))
        mant = scale.group("mant")
        prefix = ("" if mant in (None, "1", "1.", "1.0") else f"{float(mant):g}×") + \
            f"10{str(exp).translate(_SUPERSCRIPT)}"
        text = text[scale.end():]
    parts: list[tuple[int, str, int]] = []
    pos, divide = 0, False
    while pos < len(text):
        match = _UNIT_TOKEN.match(text, pos)
        if not match or match.end() == pos:
            return (prefix + " " + text + note).strip() if text.strip() else (prefix + note).strip()
        divide = divide or bool(match.group("div"))
        name, rank = _UNIT_NAMES[match.group("name").lower()]
        power = int(match.group("power") or 1) * (-1 if match.group("div") else 1)
        parts.append((rank, name, power))
        pos = match.end()
    shown = " ".join(name + ("" if p == 1 else str(p).translate(_SUPERSCRIPT))
                     for _, name, p in sorted(parts, key=lambda part: part[0]))
    return (" ".join(filter(None, [prefix, shown])) + note).strip() or "flux"


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of consecutive True values."""
    if not mask.any():
        return []
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2]))


def _y_range(values: np.ndarray, ivar: np.ndarray | None = None) -> tuple[float, float]:
    """A y range for flux: its 1–99 % range, padded, ignoring the noisiest pixels.

    With ``ivar``, pixels whose σ exceeds 3× the median σ (a detector edge, a dichroic)
    do not set the range, as long as most pixels remain: one noisy edge no longer
    squeezes the spectrum into a flat line.
    """
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    if ivar is not None:
        ivar = np.asarray(ivar, np.float64)
        usable = finite & (ivar > 0)
        if usable.sum() >= 10:
            sigma = 1.0 / np.sqrt(ivar[usable])
            quiet = np.zeros_like(finite)
            quiet[usable] = sigma <= 3.0 * np.median(sigma)
            if quiet.sum() >= 0.5 * usable.sum():
                finite = quiet
    picked = values[finite]
    if picked.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(picked, [1, 99])
    pad = 0.1 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
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


def label_rows(positions: Sequence[float], texts: Sequence[str], span: float, rows: int = 3,
               plot_px: float = 900.0, char_px: float = 5.6) -> list[int | None]:
    """A text row for each line label, so that labels in one row do not overlap.

    Each label's width is estimated from its length (``char_px`` per character at the
    9-point font, on a plot ~``plot_px`` wide); a label goes to the lowest row where it
    clears the previous label, and is left to the hover text (None) when no row has room.
    """
    ends = [-math.inf] * rows
    out: list[int | None] = []
    scale = span / plot_px if span > 0 else 0.0
    for x, text in zip(positions, texts):
        half = 0.5 * (len(text) * char_px + 6.0) * scale
        for row in range(rows):
            if x - half > ends[row]:
                ends[row] = x + half
                out.append(row)
                break
        else:
            out.append(None)
    return out


def _line_traces(found: list[line_table.Line], z: float, shift: float, y0: float, y1: float,
                 span: float):
    """Marked lines: dotted verticals with hover text, plus labels in up to three rows above."""
    import plotly.graph_objects as go

    xs: list[float | None] = []
    ys: list[float | None] = []
    text: list[str | None] = []
    positions = [line.wave_vac * (1.0 + z) / shift for line in found]
    for line, x in zip(found, positions):
        label = f"{line.label} ({line.kind}, rest {line.wave_vac:.2f} Å)"
        xs += [x, x, None]
        ys += [y0, y1, None]
        text += [label, label, None]
    markers = go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(90,90,90,0.45)", width=1,
                         dash="dot"), name=f"lines at z = {z:.4f}", hovertext=text, hoverinfo="text")
    names = [line.label for line in found]
    rows = label_rows(positions, names, span)
    height = y1 - y0
    shown = [(x, name, row) for x, name, row in zip(positions, names, rows) if row is not None]
    labels = go.Scatter(
        x=[x for x, _, _ in shown], y=[y1 + (0.04 + 0.07 * row) * height for _, _, row in shown],
        mode="text", text=[name for _, name, _ in shown], textposition="middle center",
        textfont=dict(size=9, color="#555"), showlegend=False, hoverinfo="skip",
    )
    return markers, labels


def spectrum_figure(spectrum: Spectrum, z: float | None = None, rest: bool = False,
                    show_lines: bool = True, object_class: str | None = None,
                    title: str | None = None, height: int = 380, smoothing: int = 0,
                    show_noise: bool = False):
    """The interactive spectrum plot: flux, masked pixels shaded, lines marked.

    ``z``: the redshift of the line markers and of the rest frame (``rest``). With
    ``z=None`` lines are marked only for a star (at rest); a galaxy or quasar of
    unknown redshift gets none, rather than rest-frame lines on observed wavelengths.
    ``smoothing``: an inverse-variance-weighted boxcar over that many pixels (for the
    eye only). ``show_noise``: the 1σ noise per pixel as a grey trace.
    """
    import plotly.graph_objects as go

    z_known = z is not None and math.isfinite(float(z))
    z_used = float(z) if z_known else 0.0
    rest = rest and z_known
    shift = 1.0 + z_used if rest else 1.0
    wave = rest_frame(spectrum.wave, z_used) if rest else spectrum.wave
    good = spectrum.good
    flux, ivar = smooth(spectrum.flux, spectrum.ivar, good, smoothing)
    y0, y1 = _y_range(flux, ivar)
    fig = go.Figure()
    if spectrum.mask.any():
        fig.add_trace(_mask_trace(wave, spectrum.mask, y0, y1))
    w, f, s = break_gaps(wave, flux, noise_sigma(ivar, np.isfinite(flux)))
    name = "flux" if smoothing <= 1 else f"flux, smoothed over {int(smoothing)} px"
    fig.add_trace(go.Scatter(x=w, y=f, mode="lines", line=dict(color="black", width=1),
                             name=name, connectgaps=False))
    if show_noise:
        fig.add_trace(go.Scatter(x=w, y=s, mode="lines", name="noise (1σ)", connectgaps=False,
                                 line=dict(color="rgba(120,120,120,0.8)", width=1)))
    object_class = object_class or spectrum.meta.get("class")
    is_star = str(object_class or "").upper() == "STAR"
    found = line_markers(spectrum.wave[0], spectrum.wave[-1], z_used, object_class) \
        if show_lines and (z_known or is_star) else []
    for trace in _line_traces(found, z_used, shift, y0, y1, wave[-1] - wave[0]) if found else ():
        fig.add_trace(trace)
    frame = f"rest-frame wavelength (z = {z_used:.4f}) [Å, vacuum]" if rest else \
        "observed wavelength [Å, vacuum]"
    fig.update_layout(
        title=title or spectrum_label(spectrum), height=height, margin=dict(l=60, r=20, t=50, b=45),
        xaxis_title=frame, yaxis_title=flux_unit_label(spectrum.meta.get("flux_unit")),
        yaxis_range=[y0, y1 + (0.26 if found else 0.02) * (y1 - y0)],  # room for line labels
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1.0, xanchor="right"),
        hovermode="closest",
    )
    return fig


def redshift_slider_range(z: float | None, object_class: str | None = None) -> tuple[float, float]:
    """(low, high) for the line-marker redshift slider.

    A star: ±0.005 (radial velocities up to 1,500 km/s); a quasar, or an object of unknown
    class without z: 0–7; a galaxy: 0 to twice its z, at least 0–1.5.
    """
    cls = str(object_class or "").upper()
    if cls == "STAR":
        return -0.005, 0.005
    if cls == "QSO" or z is None:
        return 0.0, 7.0
    return 0.0, float(min(7.0, max(1.5, round(2.0 * max(z, 0.0), 1))))


def _unit_span(values: np.ndarray) -> np.ndarray:
    """Values scaled so their 1st–99th percentiles span 0–1 (extremes clipped a little beyond)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return values
    lo, hi = np.percentile(finite, [1, 99])
    scale = hi - lo if hi > lo else 1.0
    return np.clip((values - lo) / scale, -0.25, 1.35)


def frame_redshift(spectrum: Spectrum) -> float | None:
    """The z that puts a spectrum in its rest frame: its own z, 0 for a star, else None."""
    z = as_float(spectrum.meta.get("z"))
    if z is not None and z > -1.0:
        return z
    return 0.0 if str(spectrum.meta.get("class") or "").upper() == "STAR" else None


def _framed(spectra: Sequence[Spectrum], labels: Sequence[str], rest: bool,
            query: Spectrum | None, query_z: float | None, max_points: int):
    """(wave, normalised flux, label, drawn) of each spectrum, cut to the query's range.

    In the rest frame each spectrum is divided by its own 1 + z; one without a
    redshift stays observed and says so. Neighbours are cut to the query's range
    (a 0.65–2.5 µm SpeX neighbour must not stretch an optical query's axis to 25,000 Å);
    one that shares no wavelengths with it says that instead.
    """
    x_range = None
    if query is not None:
        z_q = query_z if query_z is not None else frame_redshift(query)
        lo, hi = query.wave_range
        if rest and z_q is not None:
            lo, hi = lo / (1 + z_q), hi / (1 + z_q)
        pad = 0.01 * (hi - lo)
        x_range = (lo - pad, hi + pad)
    out = []
    for index, (spectrum, label) in enumerate(zip(spectra, labels)):
        is_query = query is not None and index == 0
        z = (query_z if query_z is not None else frame_redshift(spectrum)) if is_query \
            else frame_redshift(spectrum)
        wave = spectrum.wave
        if rest:
            if z is None:
                label = f"{label} (no z: observed frame)"
            else:
                wave = wave / (1.0 + z)
        flux = median_normalised(spectrum)
        if x_range is not None:
            inside = (wave >= x_range[0]) & (wave <= x_range[1])
            if not inside.any():
                out.append((np.array([]), np.array([]), f"{label} — no wavelengths in common", False))
                continue
            wave, flux = wave[inside], flux[inside]
        w, f = _thin(wave, flux, max_points)
        w, f = break_gaps(w, f)
        out.append((w, f, label, True))
    return out, x_range


def neighbours_figure(query: Spectrum | None, spectra: Sequence[Spectrum], labels: Sequence[str],
                      max_points: int = 700, step: float = 1.3, rest: bool = False,
                      query_z: float | None = None):
    """The query on top and each neighbour below it, stacked on one wavelength axis.

    Each spectrum is scaled to its own 1–99 % flux range (shapes compare, not
    fluxes) and shifted down by ``step``; one plot, so it draws fast. The axis
    spans the query's range; ``rest`` puts each spectrum in its own rest frame
    (the query at ``query_z`` when given).
    """
    import plotly.graph_objects as go

    rows = ([query] if query is not None else []) + list(spectra)
    names = (["your spectrum"] if query is not None else []) + list(labels)
    framed, x_range = _framed(rows, names, rest, query, query_z, max_points)
    fig = go.Figure()
    label_y, label_text = [], []
    for i, (w, f, label, drawn) in enumerate(framed):
        offset = -i * step
        colour = "black" if query is not None and i == 0 else "#1f77b4"
        if drawn:
            fig.add_trace(go.Scatter(x=w, y=_unit_span(f) + offset, mode="lines", name=label,
                                     line=dict(color=colour, width=1), showlegend=False,
                                     connectgaps=False,
                                     hovertemplate=f"{label}<br>%{{x:.1f}} Å<extra></extra>"))
        label_y.append(offset + 1.1)
        label_text.append(label)
    if x_range is None:
        drawn_w = [w for w, _, _, ok in framed if ok and w.size]
        x_range = (min(float(w[0]) for w in drawn_w), max(float(w[-1]) for w in drawn_w)) \
            if drawn_w else (0.0, 1.0)
    fig.add_trace(go.Scatter(x=[x_range[0]] * len(label_y), y=label_y, mode="text",
                             text=label_text, textposition="middle right", textfont=dict(size=11),
                             showlegend=False, hoverinfo="skip"))
    axis = "rest-frame wavelength [Å, vacuum]" if rest else "observed wavelength [Å, vacuum]"
    fig.update_layout(height=80 + 95 * len(framed),
                      margin=dict(l=20, r=20, t=20, b=45),
                      xaxis=dict(title=axis, range=list(x_range)),
                      yaxis=dict(showticklabels=False, zeroline=False, showgrid=False,
                                 title="flux, each scaled to its own range"))
    return fig


def overlay_figure(query: Spectrum | None, spectra: Sequence[Spectrum], labels: Sequence[str],
                   max_points: int = 1500, rest: bool = False, query_z: float | None = None):
    """Query and neighbours overlaid (median-normalised), over the query's range.

    ``rest``: each spectrum in its own rest frame, as in :func:`neighbours_figure`.
    """
    import plotly.graph_objects as go

    rows = ([query] if query is not None else []) + list(spectra)
    names = (["your spectrum"] if query is not None else []) + list(labels)
    framed, x_range = _framed(rows, names, rest, query, query_z, max_points)
    fig = go.Figure()
    start = 1 if query is not None else 0
    for (w, f, label, drawn), colour in zip(framed[start:], _cycle(_SURVEY_COLOURS)):
        fig.add_trace(go.Scatter(x=w, y=f, mode="lines", name=label, opacity=0.7,
                                 connectgaps=False, line=dict(width=1, color=colour),
                                 visible=True if drawn else "legendonly"))
    if query is not None:
        w, f, label, _ = framed[0]
        fig.add_trace(go.Scatter(x=w, y=f, mode="lines", name=label, connectgaps=False,
                                 line=dict(color="black", width=1.5)))
    axis = "rest-frame wavelength [Å, vacuum]" if rest else "observed wavelength [Å, vacuum]"
    fig.update_layout(height=420, margin=dict(l=50, r=10, t=30, b=40),
                      xaxis=dict(title=axis, range=list(x_range) if x_range else None),
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
    flux = np.where(spectrum.good, spectrum.flux, np.nan).astype(np.float64)
    y0, y1 = _y_range(flux, spectrum.ivar)
    wave, flux, residuals_shown = break_gaps(spectrum.wave, flux, residuals)
    model_wave, model_flux = break_gaps(model.wave, model.flux)
    if spectrum.mask.any():
        fig.add_trace(_mask_trace(spectrum.wave, spectrum.mask, y0, y1), row=1, col=1)
    fig.add_trace(go.Scatter(x=wave, y=flux, mode="lines", name="input",
                             line=dict(color="black", width=1)), row=1, col=1)
    fig.add_trace(go.Scatter(x=model_wave, y=model_flux, mode="lines", name="reconstruction",
                             line=dict(color="#d62728", width=1.2)), row=1, col=1)
    fig.add_trace(go.Scatter(x=wave, y=residuals_shown, mode="lines", name="residual / σ",
                             line=dict(color="#1f77b4", width=0.8)), row=2, col=1)
    for level in (-3, 3):
        fig.add_hline(y=level, line=dict(color="grey", dash="dot", width=1), row=2, col=1)
    r = residuals[np.isfinite(residuals)]
    limit = float(np.clip(np.percentile(np.abs(r), 99) * 1.2, 4.0, 50.0)) if r.size else 5.0
    fig.update_yaxes(range=[y0, y1], title_text=flux_unit_label(spectrum.meta.get("flux_unit")),
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
    wave, flux = break_gaps(spectrum.wave, np.where(spectrum.good, spectrum.flux / level, np.nan))
    rendered_wave, rendered_flux = break_gaps(rendered.wave, rendered.flux / level)
    fig.add_trace(go.Scatter(x=wave, y=flux,
                             mode="lines", name=f"input ({spectrum.survey}, {len(spectrum)} px)",
                             line=dict(color="rgba(0,0,0,0.55)", width=1)))
    fig.add_trace(go.Scatter(x=rendered_wave, y=rendered_flux, mode="lines+markers"
                             if len(rendered) < 600 else "lines",
                             marker=dict(size=4), name=f"as {key} would see it ({len(rendered)} px)",
                             line=dict(color="#d62728", width=1.5)))
    fig.update_layout(height=420, margin=dict(l=60, r=20, t=30, b=45),
                      xaxis_title="observed wavelength [Å, vacuum]", yaxis_title="flux / input median",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1.0, xanchor="right"))
    return fig


