"""Simulated sources: stars, galaxies and quasars as :class:`SimSource` records.

Real templates wherever they exist, physical models where they do not:

* :func:`stars_from_library` wraps real library spectra (MILES, STELIB,
  MaStar) as sources moving at a random radial velocity.
* :func:`apogee_star` is a physically motivated model of the H band
  (1.51-1.70 µm), where no stellar library is at hand.
* :func:`galaxy` mixes two real simple-stellar-population spectra (MaStar SSP
  by default) with dust, velocity dispersion and nebular emission lines.
* :func:`quasar` is a power law with broad and narrow lines at the strengths
  of the SDSS composite, plus a stochastic Lyman-α forest.

All wavelengths are vacuum Å (line positions come from :mod:`spectok_core.lines`).
Fluxes are f_λ in arbitrary units. A source's ``fwhm_rest`` is the blur the
template carries beyond the physics the model puts in, so an instrument adds
only what is missing (see :class:`~spectok_core.data.simulate.SimSource`).
Templates are read from the data cache (``spectok data fetch``), passed in as
``cache``; default :func:`spectok_core.data.fetch.cache_dir`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import lines as L
from .. import surveys
from ..spectrum import Spectrum, air_to_vacuum
from .simulate import SimSource

C_KMS = 299792.458
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
TEMPLATE_ROOT = ("sdss-mangadap", "mangadap", "data", "spectral_templates")


# -- shared numerics -------------------------------------------------------------


def log_grid(wave_min: float, wave_max: float, dlog10: float) -> np.ndarray:
    """A grid with constant Δlog10 λ from wave_min to at least wave_max."""
    n = int(np.ceil(np.log10(wave_max / wave_min) / dlog10)) + 1
    return wave_min * 10.0 ** (dlog10 * np.arange(n))


def _pixel_kms(dlog10: float) -> float:
    return C_KMS * np.log(10.0) * dlog10


def _broaden(flux: np.ndarray, sigma_pix: np.ndarray | float) -> np.ndarray:
    """Gaussian blur on a uniform log grid with a per-pixel width (pixels).

    Written as a gather (each output pixel averages its neighbours with its own
    width), which handles a width that changes across the spectrum.
    """
    sigma = np.broadcast_to(np.asarray(sigma_pix, dtype=np.float64), flux.shape)
    reach = int(np.ceil(4.0 * sigma.max()))
    if reach < 1:
        return flux.copy()
    sigma = np.maximum(sigma, 1e-3)
    padded = np.pad(flux, reach, mode="edge")
    total = np.zeros_like(flux)
    weight = np.zeros_like(flux)
    for k in range(-reach, reach + 1):
        w = np.exp(-0.5 * (k / sigma) ** 2)
        total += w * padded[reach + k: reach + k + flux.size]
        weight += w
    return total / weight


def _blur_fft(flux: np.ndarray, sigma_pix: float) -> np.ndarray:
    """Gaussian blur of one fixed width (pixels) on a uniform grid, by FFT."""
    if sigma_pix < 0.3:
        return flux.copy()
    pad = int(5 * sigma_pix) + 1
    padded = np.pad(flux, pad, mode="edge")
    freq = np.fft.rfftfreq(padded.size)
    kernel = np.exp(-2.0 * (np.pi * freq * sigma_pix) ** 2)
    return np.fft.irfft(np.fft.rfft(padded) * kernel, n=padded.size)[pad:-pad]


def _gauss(wave: np.ndarray, center: float, sigma: float) -> np.ndarray:
    """Unit-area Gaussian in wavelength (evaluated only within ±8σ, zero beyond)."""
    out = np.zeros_like(wave, dtype=np.float64)
    lo, hi = np.searchsorted(wave, (center - 8.0 * sigma, center + 8.0 * sigma))
    if hi > lo:
        x = (wave[lo:hi] - center) / sigma
        out[lo:hi] = np.exp(-0.5 * x * x) / (np.sqrt(2.0 * np.pi) * sigma)
    return out


def _pseudo_voigt(x: np.ndarray, sigma: float, gamma: float) -> np.ndarray:
    """Voigt profile with unit peak (Thompson, Cox & Hastings 1987 pseudo-Voigt).

    x, sigma (Gaussian) and gamma (Lorentzian HWHM) in the same units.
    """
    fg, fl = FWHM_PER_SIGMA * sigma, 2.0 * gamma
    f = (fg**5 + 2.69269 * fg**4 * fl + 2.42843 * fg**3 * fl**2 + 4.47163 * fg**2 * fl**3
         + 0.07842 * fg * fl**4 + fl**5) ** 0.2
    ratio = fl / f
    eta = 1.36603 * ratio - 0.47719 * ratio**2 + 0.11116 * ratio**3
    half = f / 2.0
    lorentz = 1.0 / (1.0 + (x / half) ** 2)
    gauss = np.exp(-np.log(2.0) * (x / half) ** 2)
    return eta * lorentz + (1.0 - eta) * gauss


def planck_lambda(wave: np.ndarray, temperature: float) -> np.ndarray:
    """B_λ(T) up to a constant (wave in Å)."""
    x = 1.438777e8 / (np.asarray(wave, dtype=np.float64) * temperature)
    return 1.0 / (wave**5 * np.expm1(np.minimum(x, 700.0)))


def calzetti_k(wave: np.ndarray) -> np.ndarray:
    """Calzetti et al. (2000) starburst attenuation curve k(λ), R_V = 4.05.

    Defined 0.12-2.2 µm; extended linearly in 1/λ outside (only the far UV of
    quasars and the H band would ever need it, and neither uses it).
    """
    micron = np.asarray(wave, dtype=np.float64) / 1e4
    inv = 1.0 / micron
    blue = 2.659 * (-2.156 + 1.509 * inv - 0.198 * inv**2 + 0.011 * inv**3) + 4.05
    red = 2.659 * (-1.857 + 1.040 * inv) + 4.05
    return np.maximum(np.where(micron < 0.63, blue, red), 0.0)


def _object_id(prefix: str, rng: np.random.Generator) -> str:
    return f"sim-{prefix}-{int(rng.integers(0, 10**12)):012d}"


# -- stars from real libraries ------------------------------------------------------

_STAR_LABELS = ("teff", "logg", "feh", "alpha_m", "teff_err", "logg_err", "feh_err",
                "alpha_m_err", "spectral_type", "ra", "dec", "subclass")


def stars_from_library(
    spectra: list[Spectrum],
    rng: np.random.Generator | None = None,
    rv_sigma_kms: float = 50.0,
) -> list[SimSource]:
    """Real library spectra (MILES, STELIB, MaStar, ...) as sources.

    The library wavelengths are already vacuum (the readers convert), and each
    star is put at a radial velocity drawn from N(0, ``rv_sigma_kms``), z = v/c.
    ``fwhm_rest`` is the library's own resolution from the survey registry.
    Masked pixels are filled by linear interpolation from their good
    neighbours (a source must be finite everywhere), leading/trailing bad
    pixels are cut and the few negative noise pixels of deep bands are set to
    0; the fraction filled is kept in ``meta['filled_fraction']``. Labels
    (Teff, log g, [Fe/H], spectral type, ...) are kept.
    """
    rng = np.random.default_rng() if rng is None else rng
    sources = []
    for index, spectrum in enumerate(spectra):
        library = surveys.get(spectrum.survey)
        if not np.isfinite(library.resolving_power):
            raise ValueError(
                f"spectrum {index} is from survey {spectrum.survey!r}, whose resolution the "
                "registry does not know; only library spectra with a known resolution can be sources"
            )
        good = ~spectrum.mask
        first, last = np.flatnonzero(good)[[0, -1]]
        wave = spectrum.wave[first:last + 1]
        keep = good[first:last + 1]
        flux = np.interp(wave, wave[keep], spectrum.flux[first:last + 1][keep].astype(np.float64))
        flux = np.maximum(flux, 0.0)
        fallback = f"{spectrum.meta.get('source_file', 'spectrum')}-{spectrum.meta.get('index_in_file', index)}"
        star_id = str(spectrum.meta.get("object_id") or fallback)
        rv = float(rng.normal(0.0, rv_sigma_kms))
        meta = {key: spectrum.meta[key] for key in _STAR_LABELS if key in spectrum.meta}
        meta.update(
            {
                "class": "STAR",
                "rv_kms": rv,
                "template": f"{library.name}: {star_id}",
                "template_survey": spectrum.survey,
                "filled_fraction": float(1.0 - keep.mean()),
            }
        )
        sources.append(
            SimSource(
                object_id=f"star-{spectrum.survey}-{re.sub(r'[^A-Za-z0-9+_.-]+', '_', star_id)}",
                wave_rest=wave,
                flux=flux,
                fwhm_rest=library.fwhm(wave),
                z=rv / C_KMS,
                meta=meta,
            )
        )
    return sources


# -- the H band (APOGEE) star model ---------------------------------------------------

#: Sampling of the H-band model: Δln λ = 1e-5 (R = 100,000 per pixel, 3 km/s).
HBAND_RANGE = (15050.0, 17050.0)
HBAND_DLOG10 = 1e-5 / np.log(10.0)
_TEFF_REF, _LOGG_REF = 4750.0, 2.5
_THETA_REF = 5040.0 / _TEFF_REF

# Per species: ionisation potential (eV), typical excitation of the H-band lines
# (eV), atomic mass, alpha element?, intrinsic central depth in the reference
# giant (Teff 4750 K, log g 2.5, solar), and damping (Lorentz HWHM, km/s, at log g 2.5).
_HBAND_SPECIES = {
    "Fe I": (7.90, 5.6, 55.8, False, 0.45, 0.8),
    "Mg I": (7.65, 5.9, 24.3, True, 0.55, 1.5),
    "Si I": (8.15, 6.5, 28.1, True, 0.45, 1.0),
    "Al I": (5.99, 4.1, 27.0, False, 0.55, 1.2),
    "K I": (4.34, 2.7, 39.1, False, 0.30, 0.5),
    "Ca I": (6.11, 4.5, 40.1, True, 0.30, 0.5),
    "Ti I": (6.83, 1.9, 47.9, True, 0.30, 0.3),
    "Cr I": (6.77, 4.7, 52.0, False, 0.20, 0.3),
    "Ni I": (7.64, 5.3, 58.7, False, 0.25, 0.5),
    "Na I": (5.14, 3.8, 23.0, False, 0.15, 0.5),
}
# The strongest lines of their species in giants (central depth overrides).
_HBAND_DEPTH = {"MgI_15745": 0.75, "MgI_15753": 0.75, "MgI_15770": 0.70, "AlI_16724": 0.70,
                "AlI_16755": 0.70, "SiI_16685": 0.60, "SiI_15964": 0.55, "FeI_15653": 0.50}
# Molecules: central depth of the strongest line (CO) or feature (OH, CN) in the reference giant.
_MOLECULE_DEPTH = {"CO": 0.35, "OH": 0.35, "CN": 0.25}


def _hminus_bump(wave: np.ndarray, teff: float) -> np.ndarray:
    height = 0.06 * np.clip((7000.0 - teff) / 3000.0, 0.0, 1.0)
    return 1.0 + height * np.exp(-0.5 * ((wave - 16400.0) / 2500.0) ** 2)


def apogee_continuum(wave: np.ndarray, teff: float) -> np.ndarray:
    """Continuum of :func:`apogee_star`: Planck at Teff times the H⁻ bump.

    Cool photospheres are most transparent at 1.6 µm, where the H⁻
    bound-free opacity has gone and the free-free has not yet risen, so deeper,
    hotter layers show and f_λ carries a broad bump there; a Gaussian in λ
    (centre 16,400 Å, σ 2,500 Å) whose height falls from 6 % at 4000 K to 0
    at 7000 K stands for it. Normalised to 1 at 16,000 Å.
    """
    wave = np.asarray(wave, dtype=np.float64)
    reference = np.array([16000.0])
    shape = planck_lambda(wave, teff) * _hminus_bump(wave, teff)
    return shape / (planck_lambda(reference, teff) * _hminus_bump(reference, teff))[0]


def _add_gaussian_profiles(tau, grid_ln, centers, tau0, sigma_kms, reach_kms):
    """Many Gaussian profiles of one width at once (the thousands of CO lines)."""
    if len(centers) == 0:
        return
    dln = grid_ln[1] - grid_ln[0]
    half = int(np.ceil(reach_kms / (C_KMS * dln)))
    ln_center = np.log(centers)
    i0 = np.rint((ln_center - grid_ln[0]) / dln).astype(np.int64)
    index = i0[:, None] + np.arange(-half, half + 1)[None, :]
    valid = (index >= 0) & (index < tau.size)
    index = np.clip(index, 0, tau.size - 1)
    v = (grid_ln[index] - ln_center[:, None]) * C_KMS
    np.add.at(tau, index[valid], (np.asarray(tau0)[:, None] * np.exp(-0.5 * (v / sigma_kms) ** 2))[valid])


def _add_profile(tau, grid_ln, center, tau0, sigma_kms, gamma_kms=0.0, reach_kms=None):
    """Add tau0 × unit-peak (pseudo-)Voigt at ``center`` (Å) to ``tau`` on a ln-λ grid."""
    dln = grid_ln[1] - grid_ln[0]
    reach_kms = reach_kms or (8.0 * sigma_kms + 200.0 * gamma_kms)
    i0 = int(round((np.log(center) - grid_ln[0]) / dln))
    half = int(np.ceil(reach_kms / (C_KMS * dln)))
    lo, hi = max(i0 - half, 0), min(i0 + half + 1, tau.size)
    if lo >= hi:
        return
    v = (grid_ln[lo:hi] - np.log(center)) * C_KMS
    if gamma_kms > 0:
        tau[lo:hi] += tau0 * _pseudo_voigt(v, sigma_kms, gamma_kms)
    else:
        tau[lo:hi] += tau0 * np.exp(-0.5 * (v / sigma_kms) ** 2)


def apogee_star(
    teff: float,
    logg: float,
    feh: float,
    alpha_m: float = 0.0,
    rng: np.random.Generator | None = None,
    *,
    rv_kms: float | None = None,
    vmacro_kms: float | None = None,
    object_id: str | None = None,
) -> SimSource:
    """A star's H-band spectrum (15,050-17,050 Å, vacuum) from a documented toy model.

    No stellar library covers APOGEE's window at its resolution here, so this
    is a physically motivated model, qualitative but monotone in the labels:

    * Continuum: :func:`apogee_continuum` (Planck at Teff with the H⁻ bump).
    * Lines at REAL positions (:mod:`spectok_core.lines`): Fe I, Mg I, Si I,
      Al I, K I, Ca I, Ti I, Cr I, Ni I, Na I (Smith et al. 2013), every R and P
      line of the 12CO and 13CO Δv = 3 bands from molecular constants, OH and
      CN feature groups (positions ±2 Å), and Brackett 11-21. The flux is
      continuum × exp(-Σ τ), so blends and saturation behave.
    * Atomic strengths follow the weak-line Saha-Boltzmann scaling for species
      that are mostly ionised (Gray, *The Observation and Analysis of Stellar
      Photospheres*, ch. 13): line/H⁻ opacity ∝ A(X) 10^{(χ_ion - χ_exc - 0.75) θ},
      θ = 5040/Teff, independent of gravity. So metal lines deepen with
      [Fe/H] (and with [α/M] for Mg, Si, Ca, Ti, O) and with falling Teff.
      Damping grows with pressure (Lorentz width ∝ g^0.3), giving dwarfs
      their broad Mg I and Al I wings.
    * Molecules: CO holds nearly all carbon below ~4500 K and dissociates
      above, f_CO = 1/(1 + exp((Teff - 4600 K)/350 K)); its lines scale as
      [C/H] - ½[M/H] - (log g - 2.5)/3, the last two from the electron
      pressure that sets the H⁻ continuum (P_e ∝ g^{1/3} A_M^{1/2}), so CO is
      stronger in giants. Band shapes come from Boltzmann populations at
      0.75 Teff (the cool layers CO forms in). OH and CN fall steeply with
      Teff (4 and 3 dex per unit θ) and are a little stronger in giants.
      12C/13C is 20 for giants (log g < 3.5, after the first dredge-up) and
      89 (solar) for dwarfs.
    * Brackett lines: strength peaks near 9,500 K (Boltzmann population of n = 4
      against ionisation) as a Gaussian in θ; strength ∝ g^0.15 and
      Stark (Lorentz) width ∝ g^0.5 × (n/11)², so they are strongest and
      widest in hot dwarfs; oscillator strengths scale as n^-3.
    * Widths: thermal + microturbulence (ξ = 2.478 - 0.325 log g km/s, the
      APOGEE DR12 relation of Holtzman et al. 2015) + macroturbulence
      (``vmacro_kms``, default 6 km/s for giants, 3 for dwarfs), as one Gaussian.

    Limits: line strengths are calibrated by eye to the look of APOGEE spectra
    of K giants, not fitted; only ~50 atomic lines of the thousands in the
    band; no H2O, FeH, TiO (M dwarfs), no rotation, no isotopic or
    hyperfine structure, no NLTE; OH and CN are a few placeholder groups rather
    than their hundreds of lines; the continuum is not a model atmosphere.
    Useful for learning what moves with Teff, log g and abundances on the
    APOGEE grid, not for abundance work. The same star's optical spectrum is
    NOT modelled here (pair it with a library star of similar labels if
    needed). ``fwhm_rest`` is one pixel (the model is intrinsically sharp).
    """
    rng = np.random.default_rng() if rng is None else rng
    if not 2500.0 <= teff <= 30000.0:
        raise ValueError(f"teff {teff} K is outside the model's 2,500-30,000 K")
    rv = float(rng.normal(0.0, 50.0)) if rv_kms is None else float(rv_kms)
    giant = logg < 3.5
    vmacro = (6.0 if giant else 3.0) if vmacro_kms is None else float(vmacro_kms)
    vmicro = max(2.478 - 0.325 * logg, 0.5)
    theta = 5040.0 / teff
    alpha_h, metal_h = feh + alpha_m, feh

    wave = log_grid(HBAND_RANGE[0], HBAND_RANGE[1], HBAND_DLOG10)
    grid_ln = np.log(wave)
    tau = np.zeros_like(wave)

    def width(mass_amu, temperature=teff):
        thermal2 = 2.0 * 1.380649e-23 * temperature / (mass_amu * 1.66054e-27) / 1e6  # (km/s)^2
        return np.sqrt(thermal2 + vmicro**2 + vmacro**2) / np.sqrt(2.0)  # Gaussian σ

    # Atomic lines.
    pressure = 10.0 ** (0.3 * (logg - _LOGG_REF))
    for line in L.select(objects="star", wave_min=HBAND_RANGE[0], wave_max=HBAND_RANGE[1]):
        if line.species not in _HBAND_SPECIES:
            continue
        chi_ion, chi_exc, mass, is_alpha, depth, damping = _HBAND_SPECIES[line.species]
        depth = _HBAND_DEPTH.get(line.name, depth)
        log_tau = (
            np.log10(-np.log(1.0 - depth))
            + (alpha_h if is_alpha else metal_h)
            + max(chi_ion - chi_exc - 0.75, 0.3) * (theta - _THETA_REF)
        )
        _add_profile(tau, grid_ln, line.wave_vac, 10.0**log_tau, width(mass), damping * pressure)

    # 12CO and 13CO: carbon scaled-solar, so [C/H] = [M/H].
    f_co = 1.0 / (1.0 + np.exp((teff - 4600.0) / 350.0))
    f_co_ref = 1.0 / (1.0 + np.exp((_TEFF_REF - 4600.0) / 350.0))
    co_scale = 10.0 ** (metal_h - 0.5 * metal_h - (logg - _LOGG_REF) / 3.0) * f_co / f_co_ref
    c12_c13 = 20.0 if giant else 89.0
    for isotope, share in (("12CO", 1.0), ("13CO", 1.0 / c12_c13)):
        co_wave, strength = L.co_band_lines(isotope, temperature=0.75 * teff)
        inside = (co_wave > wave[0]) & (co_wave < wave[-1]) & (strength > 1e-4)
        tau0 = -np.log(1.0 - _MOLECULE_DEPTH["CO"]) * co_scale * share
        sigma = width(28.0 if isotope == "12CO" else 29.0, 0.75 * teff)
        _add_gaussian_profiles(tau, grid_ln, co_wave[inside], tau0 * strength[inside], sigma, 6 * sigma)

    # OH ([O/H] = [α/H]) and CN ([C/H] + [N/H], both scaled-solar) feature groups.
    mol = {
        "OH": alpha_h - 0.5 * metal_h + 4.0 * (theta - _THETA_REF) - 0.15 * (logg - _LOGG_REF),
        "CN": 2.0 * metal_h - 0.5 * metal_h + 3.0 * (theta - _THETA_REF) - (logg - _LOGG_REF) / 3.0,
    }
    for line in L.select(objects="star", wave_min=HBAND_RANGE[0], wave_max=HBAND_RANGE[1]):
        if line.species in mol:
            tau0 = -np.log(1.0 - _MOLECULE_DEPTH[line.species]) * 10.0 ** mol[line.species]
            _add_profile(tau, grid_ln, line.wave_vac, tau0, width(17.0 if line.species == "OH" else 26.0))

    # Brackett series.
    strength = np.exp(-0.5 * ((theta - 5040.0 / 9500.0) / 0.18) ** 2)
    for n in range(11, 22):
        line = L.get(f"Br{n}")
        tau0 = 1.5 * strength * (11.0 / n) ** 3 * 10.0 ** (0.15 * (logg - 4.0))
        stark = 40.0 * (n / 11.0) ** 2 * 10.0 ** (0.5 * (logg - 4.0)) * strength
        _add_profile(tau, grid_ln, line.wave_vac, tau0, width(1.008), stark,
                     reach_kms=8 * width(1.008) + 60 * stark)

    flux = apogee_continuum(wave, teff) * np.exp(-tau)
    return SimSource(
        object_id=object_id or _object_id("apogee", rng),
        wave_rest=wave,
        flux=flux,
        fwhm_rest=wave * np.log(10.0) * HBAND_DLOG10,
        z=rv / C_KMS,
        meta={
            "class": "STAR",
            "teff": float(teff),
            "logg": float(logg),
            "feh": float(feh),
            "alpha_m": float(alpha_m),
            "rv_kms": rv,
            "vmicro_kms": float(vmicro),
            "vmacro_kms": float(vmacro),
            "c12_c13": float(c12_c13),
            "template": "spectok H-band model (apogee_star)",
        },
    )


# -- galaxies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SSPLibrary:
    """Where one SSP grid lives in the cache and how to read it."""

    key: str
    folder: str  # under TEMPLATE_ROOT
    pattern: str  # glob
    parse: str  # regex with named groups "age" (Gyr) and "z"
    z_is_mass_fraction: bool  # metallicity given as Z (0.02 solar) rather than [Z/H]
    log_sampling: bool  # CRVAL1/CDELT1 in log10 Å
    air: bool
    fwhm: float | None  # constant FWHM in Å, or None to read the SRES extension (R per pixel)
    reference: str


SSP_LIBRARIES = {
    lib.key: lib
    for lib in (
        SSPLibrary(
            "mastar", "mastar_ssp_v1.0", "MaStar-SSP-*.fits*",
            r"A(?P<age>\d+\.\d+)-Z(?P<z>[+-]\d+\.\d+)", False, True, False, None,
            "MaStar SSP v1.0 (Maraston et al. 2020, MNRAS 496, 2962): empirical MaStar stars, "
            "Salpeter IMF, 3622-10351 Å vacuum, R 1400-2400 per pixel (SRES)",
        ),
        SSPLibrary(
            "miuscat", "miuscat", "Iun1.30Z*.fits",
            r"Z(?P<z>[mp]\d+\.\d+)T(?P<age>\d+\.\d+)", False, False, True, 2.51,
            "MIUSCAT (Vazdekis et al. 2012): MILES+CaT+Indo-US stars, 3465-9469 Å air, 2.51 Å FWHM",
        ),
        SSPLibrary(
            "bc03", "bc03_mpajhu", "BC03_z*.fits",
            r"BC03_z(?P<z>\d+\.\d+)_a(?P<age>\d+\.\d+)", True, False, True, 2.3,
            "Bruzual & Charlot 2003 as used by MPA-JHU: STELIB-based, 3326-9294 Å air, ~2.3 Å FWHM",
        ),
    )
}


@dataclass(frozen=True)
class SSPGrid:
    """A loaded SSP grid: all spectra on one vacuum wavelength grid."""

    library: SSPLibrary
    wave: np.ndarray  # vacuum Å
    flux: np.ndarray  # (n_ssp, n_pix), each normalised to its median over 5400-5600 Å
    fwhm: np.ndarray  # Å per pixel
    age: np.ndarray  # Gyr
    metallicity: np.ndarray  # [Z/H] dex
    files: tuple[str, ...]  # relative to the cache


def _fits_wave(header, n: int, log_sampling: bool) -> np.ndarray:
    step = header.get("CDELT1", header.get("CD1_1"))
    coord = header["CRVAL1"] + step * (np.arange(n) + 1 - header.get("CRPIX1", 1))
    return 10.0**coord if log_sampling else coord


@functools.lru_cache(maxsize=8)
def _load_ssp_grid(root: str, key: str) -> SSPGrid:
    from astropy.io import fits

    library = SSP_LIBRARIES[key]
    folder = Path(root).joinpath(*TEMPLATE_ROOT, library.folder)
    paths = sorted(folder.glob(library.pattern))
    if not paths:
        from .fetch import DataError

        raise DataError(
            f"no {key} SSP templates in {folder}; run `spectok data fetch sdss-mangadap` "
            "(or pass the cache folder that holds them)"
        )
    wave, fluxes, fwhm, ages, metals = None, [], None, [], []
    for path in paths:
        match = re.search(library.parse, path.name)
        if match is None:
            continue
        with fits.open(path) as hdul:
            flux = np.asarray(hdul[0].data, dtype=np.float64)
            this_wave = _fits_wave(hdul[0].header, flux.size, library.log_sampling)
            if library.fwhm is None:
                this_fwhm = this_wave / np.asarray(hdul["SRES"].data, dtype=np.float64)
            else:
                this_fwhm = np.full(flux.size, library.fwhm)
        if library.air:
            # Converting the grid converts the line positions; the FWHM scales by the same ~1.0003.
            this_wave = air_to_vacuum(this_wave)
        if wave is None:
            wave, fwhm = this_wave, this_fwhm
        elif this_wave.size != wave.size or not np.allclose(this_wave, wave, rtol=1e-9):
            raise ValueError(f"{path} is not on the grid of the other {key} templates")
        band = (wave > 5400.0) & (wave < 5600.0)
        fluxes.append(flux / np.median(flux[band]))
        ages.append(float(match["age"]))
        z = match["z"].replace("p", "+").replace("m", "-")
        metals.append(float(np.log10(float(z) / 0.02)) if library.z_is_mass_fraction else float(z))
    return SSPGrid(
        library=library,
        wave=wave,
        flux=np.array(fluxes),
        fwhm=fwhm,
        age=np.array(ages),
        metallicity=np.array(metals),
        files=tuple(str(p.relative_to(root)) for p in paths),
    )


def load_ssp_grid(cache: Path | str | None = None, library: str = "mastar") -> SSPGrid:
    """The SSP grid ``library`` (``mastar``, ``miuscat`` or ``bc03``) from the data cache.

    MaStar SSP is the default: of the grids in the MaNGA DAP wheel it reaches
    furthest to the red (3622-10351 Å) with young and old ages (3 Myr-14 Gyr)
    and six metallicities, is vacuum and empirical, and states its resolution
    per pixel. MIUSCAT (3465-9469 Å, 2.51 Å) and BC03 (3326-9294 Å, ~2.3 Å)
    reach further blue, which helps galaxies at higher redshift; both come in
    air and are converted to vacuum here. Loaded grids are kept in memory.
    """
    from .fetch import cache_dir

    if library not in SSP_LIBRARIES:
        raise KeyError(f"unknown SSP library {library!r}; known: {sorted(SSP_LIBRARIES)}")
    root = Path(cache) if cache is not None else cache_dir()
    return _load_ssp_grid(str(root.expanduser().resolve()), library)


def rest_coverage_needed(survey_key: str, z: float) -> tuple[float, float]:
    """Rest-frame range (Å) a source at redshift z must cover to fill an instrument."""
    survey = surveys.get(survey_key)
    return survey.wave_min / (1.0 + z), survey.wave_max / (1.0 + z)


def coverage_fraction(source: SimSource, survey_key: str) -> float:
    """Fraction of an instrument's coverage that ``source`` (at its own z) fills."""
    lo, hi = rest_coverage_needed(survey_key, source.z)
    overlap = min(hi, source.wave_rest[-1]) - max(lo, source.wave_rest[0])
    return float(max(overlap, 0.0) / (hi - lo))


def max_redshift(survey_key: str, wave_rest: tuple[float, float], min_fraction: float = 0.9,
                 z_max: float = 6.0) -> float:
    """Largest z up to which a rest range covers ≥ ``min_fraction`` of an instrument.

    E.g. ``max_redshift("boss", (grid.wave[0], grid.wave[-1]), 0.9)``; returns
    -1 when even z = 0 falls short.
    """
    best = -1.0
    for z in np.arange(0.0, z_max + 1e-9, 0.001):
        lo, hi = rest_coverage_needed(survey_key, z)
        overlap = min(hi, wave_rest[1]) - max(lo, wave_rest[0])
        if max(overlap, 0.0) / (hi - lo) < min_fraction:
            break
        best = float(z)
    return best


# Case B recombination (T = 10^4 K, n_e = 100 cm^-3; Storey & Hummer 1995), relative to Hβ.
_BALMER_CASE_B = {"Halpha": 2.86, "Hgamma": 0.468, "Hdelta": 0.259, "Heps": 0.159, "H8": 0.105}
GALAXY_KINDS = ("starforming", "quiescent", "seyfert", "liner")


def _kauffmann03(n2):
    return 0.61 / (n2 - 0.05) + 1.3


def _kewley01(n2):
    return 0.61 / (n2 - 0.47) + 1.19


def _nebular_ratios(kind: str, rng: np.random.Generator, metallicity: float) -> dict[str, float]:
    """Intrinsic (dust-free) line fluxes relative to Hβ for one BPT class.

    Star-forming: [N II]/Hα from the gas metallicity through the N2 calibration
    of Pettini & Pagel (2004), 12 + log(O/H) = 8.90 + 0.57 N2, with the gas at
    8.69 + 0.5 [Z/H]_stars; [O III]/Hβ 0.05-0.35 dex below the Kauffmann et
    al. (2003) line. Seyfert: above the Kewley et al. (2001) maximum-starburst
    line and the Schawinski et al. (2007) Seyfert/LINER line; LINER: above
    Kewley, below Schawinski, with strong [O II], [S II], [O I]. Doublet ratios
    fixed by atomic physics ([O III] 2.98, [N II] 2.94) or density ([O II],
    [S II] at n_e ~ 100 cm^-3).
    """
    balmer = dict(_BALMER_CASE_B)
    if kind == "starforming":
        oh = 8.69 + 0.5 * metallicity + rng.normal(0.0, 0.1)
        n2 = float(np.clip((oh - 8.90) / 0.57, -2.0, -0.35))
        o3 = _kauffmann03(n2) - rng.uniform(0.05, 0.35)
        s2 = rng.normal(-0.5, 0.1)
        o1 = rng.normal(-1.6, 0.15)
        o2 = rng.normal(0.35, 0.15)
        ne3_o3, he1 = 0.08, 0.11
    else:
        balmer["Halpha"] = 3.1  # collisional excitation in AGN narrow-line regions
        n2 = rng.uniform(-0.2, 0.3) if kind == "seyfert" else rng.uniform(0.0, 0.35)
        seyfert_line = 1.05 * n2 + 0.45
        floor = _kewley01(n2) if n2 < 0.42 else -1.0
        if kind == "seyfert":
            o3 = max(seyfert_line, floor) + rng.uniform(0.1, 0.5)
            s2, o1, o2 = rng.uniform(-0.4, 0.0), rng.uniform(-1.1, -0.6), rng.uniform(0.3, 0.6)
        else:  # LINER, also the faint emission of quiescent galaxies
            o3 = rng.uniform(max(floor, -0.5) + 0.05, seyfert_line - 0.05)
            s2, o1, o2 = rng.uniform(-0.3, 0.1), rng.uniform(-1.0, -0.5), rng.uniform(0.5, 0.8)
        ne3_o3, he1 = 0.1, 0.1
    halpha = balmer["Halpha"]
    o3_5008 = 10.0**o3
    n2_6585 = halpha * 10.0**n2
    s2_total = halpha * 10.0**s2
    s2_ratio = rng.uniform(1.1, 1.45)  # 6718/6733
    o2_total = 10.0**o2
    o2_ratio = rng.uniform(1.2, 1.5)  # 3730/3727
    ratios = {"Hbeta": 1.0, **balmer,
              "OIII_5008": o3_5008, "OIII_4960": o3_5008 / 2.98,
              "NII_6585": n2_6585, "NII_6550": n2_6585 / 2.94,
              "SII_6718": s2_total * s2_ratio / (1 + s2_ratio), "SII_6733": s2_total / (1 + s2_ratio),
              "OII_3730": o2_total * o2_ratio / (1 + o2_ratio), "OII_3727": o2_total / (1 + o2_ratio),
              "OI_6302": halpha * 10.0**o1, "OI_6366": halpha * 10.0**o1 / 3.0,
              "NeIII_3870": ne3_o3 * o3_5008, "HeI_5877": he1,
              "ArIII_7138": 0.03 * halpha, "SIII_9071": 0.07 * halpha, "SIII_9533": 0.07 * halpha * 2.47}
    if kind == "seyfert":
        ratios["HeII_4687"] = rng.uniform(0.15, 0.35)
        ratios["NeV_3427"] = 0.1 * o3_5008
    return ratios


def galaxy(
    rng: np.random.Generator,
    z: float,
    *,
    grid: SSPGrid | None = None,
    cache: Path | str | None = None,
    kind: str | None = None,
    sigma_v: float | None = None,
    ebv: float | None = None,
    ew_halpha: float | None = None,
    object_id: str | None = None,
) -> SimSource:
    """A galaxy at redshift ``z``: two real SSPs, dust, dispersion and emission lines.

    * Stars: a young (≤ 1 Gyr) and an old (≥ 2.5 Gyr) SSP of one metallicity
      from ``grid`` (default :func:`load_ssp_grid` of ``cache``), mixed by their
      light at 5500 Å. Star-forming galaxies take 10-95 % young light, rising
      with EW(Hα) (a proxy for specific star-formation rate); quiescent ones
      0-5 %; AGN hosts 5-30 %.
    * Kinematics: Gaussian line-of-sight dispersion ``sigma_v`` (default 50-150
      km/s star-forming, 150-300 quiescent, 100-250 AGN). Where the template's
      own resolution is already broader than ``sigma_v`` the difference stays as
      ``fwhm_rest`` (the instrument adds only what is missing), and the emission
      lines carry the same excess so the whole source is consistent.
    * Dust: Calzetti et al. (2000) curve; the gas sees E(B-V) = ``ebv``, the
      stars 0.44 of it.
    * Emission: [O II], [Ne III], Balmer (Case B), He I, [O III], [O I],
      [N II], [S II], [Ar III], [S III] with the BPT-class ratios of
      :func:`_nebular_ratios`, attenuated, and scaled to the drawn EW(Hα)
      (the star-formation tracer: 5-300 Å star-forming, 0-1 Å quiescent,
      3-30 Å Seyfert, 0.5-3 Å LINER). Gas dispersion is 0.5-0.9 σ_v (star
      forming) or 0.9-1.4 σ_v (AGN narrow-line region).

    The rest frame covers only the template's range (3622-10351 Å for MaStar):
    check :func:`coverage_fraction` or :func:`max_redshift` for an instrument
    and mask what lies outside. ``meta``: class GALAXY, subclass STARFORMING /
    STARBURST (EW(Hα) > 50 Å, the SDSS rule) / QUIESCENT / AGN (Seyfert) /
    LINER, the ages, light fraction, [Z/H], σ_v, E(B-V), EW(Hα) and line fluxes
    (``line_flux_<name>``, source units × Å).
    """
    grid = load_ssp_grid(cache) if grid is None else grid
    if kind is None:
        kind = str(rng.choice(GALAXY_KINDS, p=[0.5, 0.3, 0.1, 0.1]))
    if kind not in GALAXY_KINDS:
        raise ValueError(f"kind must be one of {GALAXY_KINDS}, got {kind!r}")

    # Populations and their light mix.
    # Massive (quiescent, AGN-host) galaxies are metal-rich; star-forming ones span the grid.
    metallicities = np.unique(grid.metallicity)
    if kind != "starforming" and np.any(metallicities >= -0.4):
        metallicities = metallicities[metallicities >= -0.4]
    metallicity = float(rng.choice(metallicities))
    same_z = grid.metallicity == metallicity
    young_ages = np.unique(grid.age[same_z & (grid.age <= 1.0)])
    old_ages = np.unique(grid.age[same_z & (grid.age >= 2.5)])
    if ew_halpha is None:
        ew_halpha = {
            "starforming": lambda: 10.0 ** rng.uniform(np.log10(5.0), np.log10(300.0)),
            "quiescent": lambda: rng.uniform(0.0, 1.0),
            "seyfert": lambda: 10.0 ** rng.uniform(np.log10(3.0), np.log10(30.0)),
            "liner": lambda: rng.uniform(0.5, 3.0),
        }[kind]()
    if kind == "starforming":
        young_fraction = float(np.clip(0.15 + 0.3 * np.log10(max(ew_halpha, 1.0) / 5.0), 0.1, 0.95))
        age_young = float(young_ages[min(int(rng.integers(0, 3)), young_ages.size - 1)])
    elif kind == "quiescent":
        young_fraction = float(rng.uniform(0.0, 0.05))
        age_young = float(young_ages.max())
    else:
        young_fraction = float(rng.uniform(0.05, 0.3))
        age_young = float(rng.choice(young_ages[young_ages >= 0.1]))
    age_old = float(rng.choice(old_ages))
    young = grid.flux[np.flatnonzero(same_z & (grid.age == age_young))[0]]
    old = grid.flux[np.flatnonzero(same_z & (grid.age == age_old))[0]]
    stars_native = young_fraction * young + (1.0 - young_fraction) * old

    if sigma_v is None:
        sigma_v = {"starforming": (50.0, 150.0), "quiescent": (150.0, 300.0)}.get(kind, (100.0, 250.0))
        sigma_v = float(rng.uniform(*sigma_v))
    if ebv is None:
        ebv = float({"starforming": rng.uniform(0.0, 0.6), "quiescent": rng.uniform(0.0, 0.1)}.get(
            kind, rng.uniform(0.0, 0.5)))

    # Fine log grid (Δlog10 λ = 2e-5: 13.8 km/s pixels, R = 21,700 per pixel).
    dlog10 = 2e-5
    wave = log_grid(grid.wave[0], grid.wave[-1] * (1 - 1e-9), dlog10)
    wave = wave[wave <= grid.wave[-1]]
    sigma_template = C_KMS * np.interp(wave, grid.wave, grid.fwhm) / wave / FWHM_PER_SIGMA
    sigma_excess = np.sqrt(np.maximum(sigma_template**2 - sigma_v**2, 0.0))
    # Broaden on the template's own grid (5x coarser, so ~25x cheaper), then
    # interpolate: the template resolution already exceeds that grid's pixels.
    native_sigma = C_KMS * grid.fwhm / grid.wave / FWHM_PER_SIGMA
    native_add = np.sqrt(np.maximum(sigma_v**2 - native_sigma**2, 0.0))
    native_pix_kms = C_KMS * np.gradient(np.log(grid.wave))
    stars_native = _broaden(stars_native, native_add / native_pix_kms)
    stars = np.interp(wave, grid.wave, stars_native)
    stars *= 10.0 ** (-0.4 * calzetti_k(wave) * 0.44 * ebv)

    # Emission lines, scaled to EW(Hα) on the attenuated stellar continuum.
    ratios = _nebular_ratios("liner" if kind == "quiescent" else kind, rng, metallicity)
    sigma_gas = sigma_v * (rng.uniform(0.5, 0.9) if kind == "starforming" else rng.uniform(0.9, 1.4))
    halpha = L.get("Halpha").wave_vac
    side = ((wave > halpha - 85) & (wave < halpha - 35)) | ((wave > halpha + 35) & (wave < halpha + 75))
    continuum_halpha = float(np.mean(stars[side]))
    dust = {name: 10.0 ** (-0.4 * calzetti_k(np.array([L.get(name).wave_vac]))[0] * ebv) for name in ratios}
    scale = ew_halpha * continuum_halpha / (ratios["Halpha"] * dust["Halpha"])
    emission = np.zeros_like(wave)
    fluxes = {}
    for name, ratio in ratios.items():
        center = L.get(name).wave_vac
        if not wave[0] < center < wave[-1]:
            continue
        flux = scale * ratio * dust[name]
        excess = float(np.interp(center, wave, sigma_excess))
        width = center * np.sqrt(sigma_gas**2 + excess**2) / C_KMS
        emission += flux * _gauss(wave, center, width)
        fluxes[f"line_flux_{name}"] = float(flux)

    pixel_fwhm = wave * np.log(10.0) * dlog10
    fwhm_rest = np.sqrt((FWHM_PER_SIGMA * sigma_excess * wave / C_KMS) ** 2 + pixel_fwhm**2)
    subclass = {"starforming": "STARBURST" if ew_halpha > 50.0 else "STARFORMING",
                "quiescent": "QUIESCENT", "seyfert": "AGN", "liner": "LINER"}[kind]
    light_age = 10.0 ** (young_fraction * np.log10(age_young) + (1 - young_fraction) * np.log10(age_old))
    return SimSource(
        object_id=object_id or _object_id("gal", rng),
        wave_rest=wave,
        flux=stars + emission,
        fwhm_rest=fwhm_rest,
        z=float(z),
        meta={
            "class": "GALAXY",
            "subclass": subclass,
            "bpt_class": kind.upper(),
            "age_young_gyr": age_young,
            "age_old_gyr": age_old,
            "young_light_fraction": young_fraction,
            "age_gyr": float(light_age),  # light-weighted (5500 Å), geometric mean
            "metallicity": metallicity,
            "sigma_v_kms": float(sigma_v),
            "sigma_gas_kms": float(sigma_gas),
            "ebv": float(ebv),
            "ebv_stars": float(0.44 * ebv),
            "ew_halpha": float(ew_halpha),
            "template": f"{grid.library.key} SSP",
            **fluxes,
        },
    )


# -- quasars ------------------------------------------------------------------------------

#: Rest frame of :func:`quasar`: 650-12,000 Å, so that every optical instrument
#: (down to 3360 Å) is filled for 0.1 ≤ z ≤ 4, at Δlog10 λ = 1e-5 (6.9 km/s
#: pixels), fine enough to resolve Lyα forest lines (b ≈ 20-40 km/s).
QSO_RANGE = (650.0, 12000.0)
QSO_DLOG10 = 2e-5  # 14 km/s pixels: R ~ 22,000, well above every optical instrument

# Rest equivalent widths (Å) of the broad lines. Lyα, Si IV, C IV, C III], Mg II
# and Hβ are the SDSS composite's (Vanden Berk et al. 2001, Table 2); N V is
# raised above that table's deblended 1 Å to ~1/6 of Lyα as seen in individual
# spectra; weak UV lines, Hγ, Hδ and He I are typical values; Hα (250, between
# the SDSS composite's 195 and the 309 of the near-IR composite) and O I 8446,
# Paδ, He I 10830 + Paγ, Paβ come from the Glikman et al. (2006) composite as
# shipped with splat, measured against a local linear continuum.
# "high" marks high-ionisation lines, blueshifted and broader.
_QSO_BROAD = {
    # name: (EW Å, high ionisation)
    "OVI_1034": (10.0, True), "Lya": (93.0, False), "NV_1240": (15.0, True),
    "OI_1305": (2.0, False), "CII_1335": (0.7, False), "SiIV_1400": (8.1, True),
    "CIV_1549": (23.8, True), "HeII_1640": (1.0, True), "CIII]_1909": (21.2, False),
    "CII]_2326": (2.0, False), "MgII_2799": (32.3, False), "Hdelta": (6.0, False),
    "Hgamma": (14.0, False), "Hbeta": (46.2, False), "HeI_5877": (6.0, False),
    "Halpha": (250.0, False), "OI_8449": (12.0, False), "Padelta": (30.0, False),
    "HeI_10833": (60.0, False), "Pagamma": (40.0, False), "Pabeta": (58.0, False),
}
# Narrow lines: typical rest EWs in SDSS quasars (Å).
_QSO_NARROW = {"NeV_3427": 1.2, "OII_3727": 0.7, "OII_3730": 0.9, "NeIII_3870": 1.4,
               "OIII_4960": 13.0 / 2.98, "OIII_5008": 13.0}

# Lyman series: rest wavelength (Å), oscillator strength, damping constant (s^-1).
_LYMAN = [(1215.670, 0.4164, 6.265e8), (1025.722, 0.07912, 1.897e8),
          (972.537, 0.02901, 8.127e7), (949.743, 0.01394, 4.204e7)]
_LYMAN_LIMIT = 911.753
_SIGMA_LL = 6.304e-18  # cm^2, H I photoionisation cross-section at the Lyman limit


def tau_eff_lya(z: np.ndarray | float) -> np.ndarray:
    """Mean Lyα forest optical depth, Faucher-Giguère et al. (2008): 0.0018 (1+z)^3.92.

    Measured for 2 ≤ z ≤ 4.2; used as is outside that range.
    """
    return 0.0018 * (1.0 + np.asarray(z, dtype=np.float64)) ** 3.92


def _voigt_h(a: float, x: np.ndarray) -> np.ndarray:
    """Voigt-Hjerting function H(a, x), Tepper-García (2006) approximation (a ≪ 1)."""
    x2 = np.maximum(x * x, 1e-8)
    h0 = np.exp(-x2)
    wing = h0 - a / np.sqrt(np.pi) / x2 * (h0 * h0 * (4 * x2 * x2 + 7 * x2 + 4 + 1.5 / x2) - 1.5 / x2 - 1)
    return np.where(np.abs(x) < 1e-3, h0, wing)


def _draw_absorbers(rng, z_lo, z_hi):
    """Intervening H I: the forest plus Lyman-limit systems (LLS).

    Forest: line density ∝ (1+z)^2.47 (Kim et al. 2002), about 17 (1+z)^2.47
    per unit z above log N = 13.64, extended down to log N = 12.5 with the
    column-density distribution f(N) ∝ N^-1.5, so dN/dz = 64.7 (1+z)^2.47 for
    12.5 ≤ log N ≤ 17; Doppler b ~ N(28, 8) km/s (10-60). Only the texture
    depends on these numbers: :func:`quasar` rescales the columns to τ_eff.
    LLS: dN/dz = 1.5 ((1+z)/4.5)^1.9 (rough fit to published incidences,
    ≈ 1.5 at z = 3.5) with log N uniform in 17.2-19.
    """
    gamma = 2.47
    def powerlaw_z(count, exponent):
        u = rng.uniform(size=count)
        a, b = (1 + z_lo) ** (exponent + 1), (1 + z_hi) ** (exponent + 1)
        return (a + u * (b - a)) ** (1.0 / (exponent + 1)) - 1.0

    mean = 64.7 / (gamma + 1) * ((1 + z_hi) ** (gamma + 1) - (1 + z_lo) ** (gamma + 1))
    n_forest = int(rng.poisson(max(mean, 0.0)))
    z_forest = powerlaw_z(n_forest, gamma)
    lo, hi = 10.0**12.5, 10.0**17.0
    u = rng.uniform(size=n_forest)
    column = (lo**-0.5 + u * (hi**-0.5 - lo**-0.5)) ** -2.0
    b = np.clip(rng.normal(28.0, 8.0, n_forest), 10.0, 60.0)

    mean_lls = 1.5 / 2.9 / 4.5**1.9 * ((1 + z_hi) ** 2.9 - (1 + z_lo) ** 2.9)
    n_lls = int(rng.poisson(max(mean_lls, 0.0)))
    z_lls = powerlaw_z(n_lls, 1.9)
    column_lls = 10.0 ** rng.uniform(17.2, 19.0, n_lls)
    b_lls = np.clip(rng.normal(28.0, 8.0, n_lls), 10.0, 60.0)
    return (z_forest, column, b), (z_lls, column_lls, b_lls)


def _add_gaussian_lines(tau, ln_wave, dln, ln_center, tau0, b):
    """Add Gaussian optical-depth profiles of many absorbers at once (vectorised).

    Each line reaches b·(3 + sqrt(ln max(τ0, 1) + 1)) km/s, as the per-line
    loop did; profiles are summed with ``np.add.at`` over one window per line.
    """
    if ln_center.size == 0:
        return
    reach = b * (3.0 + np.sqrt(np.log(np.maximum(tau0, 1.0)) + 1.0))
    half = int(np.ceil(reach.max() / (C_KMS * dln))) + 1
    i0 = ((ln_center - ln_wave[0]) / dln).astype(np.int64)
    index = i0[:, None] + np.arange(-half, half + 1)[None, :]
    valid = (index >= 0) & (index < ln_wave.size)
    index = np.clip(index, 0, ln_wave.size - 1)
    x = (ln_wave[index] - ln_center[:, None]) * C_KMS / b[:, None]
    inside = valid & (np.abs(x) * b[:, None] <= reach[:, None] + C_KMS * dln)
    np.add.at(tau, index[inside], (tau0[:, None] * np.exp(-x * x))[inside])


def _lyman_tau(wave, z_q, z_abs, column, b, series=4, voigt=False):
    """Optical depth of absorbers (Lyman series lines) on the quasar rest grid."""
    tau = np.zeros_like(wave)
    ln_wave = np.log(wave)
    dln = ln_wave[1] - ln_wave[0]
    for rest, f_osc, damping in _LYMAN[:series]:
        center = rest * (1 + z_abs) / (1 + z_q)
        tau0 = 1.497e-15 * column * f_osc * rest / b
        inside = (center > wave[0]) & (center < wave[-1])
        if not voigt:
            _add_gaussian_lines(tau, ln_wave, dln, np.log(center[inside]), tau0[inside], b[inside])
            continue
        for c, t0, bb in zip(center[inside], tau0[inside], b[inside]):
            if voigt:
                a = damping * rest * 1e-13 / (4 * np.pi * bb)  # Γλ/(4π b), λ in km
                reach = bb * max(6.0, np.sqrt(t0 * a / np.sqrt(np.pi) / 1e-3))
            else:
                a, reach = 0.0, bb * (3.0 + np.sqrt(np.log(max(t0, 1.0)) + 1.0))
            i0 = int((np.log(c) - ln_wave[0]) / dln)
            half = int(np.ceil(reach / (C_KMS * dln))) + 1
            lo, hi = max(i0 - half, 0), min(i0 + half + 1, wave.size)
            x = (ln_wave[lo:hi] - np.log(c)) * C_KMS / bb
            tau[lo:hi] += t0 * (_voigt_h(a, x) if voigt else np.exp(-x * x))
    return tau


def _lyman_limit_tau(wave, z_q, z_abs, column):
    """Photoelectric (Lyman-continuum) optical depth, σ ∝ (λ/912 Å)^3 blueward of each edge."""
    edge = _LYMAN_LIMIT * (1 + z_abs) / (1 + z_q)
    order = np.argsort(edge)
    edge, weight = edge[order], column[order] / edge[order] ** 3
    # Sum over absorbers whose edge lies redward of each pixel.
    above = np.concatenate([np.cumsum(weight[::-1])[::-1], [0.0]])
    return _SIGMA_LL * wave**3 * above[np.searchsorted(edge, wave, side="right")]


def quasar(
    rng: np.random.Generator,
    z: float,
    *,
    alpha_nu: float | None = None,
    fwhm_broad: float | None = None,
    forest: bool = True,
    object_id: str | None = None,
) -> SimSource:
    """A quasar at redshift ``z`` (0.1-4), rest frame 650-12,000 Å.

    * Continuum: f_ν ∝ ν^α with α ~ N(-0.5, 0.3) below 5000 Å (Vanden Berk et
      al. 2001 find -0.44), steepening by 0.5 redward (the near-IR composite of
      Glikman et al. 2006 has α ≈ -1.0 over 0.7-1.2 µm) and by 1.0 below 1000 Å
      (the far-UV softening of Telfer et al. 2002); plus a Balmer continuum
      (Grandi 1982: B_λ(15,000 K) (1 - e^{-(λ/3646)^3}) below the edge, 10-40 %
      of the power law there) blurred by the broad-line width.
    * Broad lines (:data:`_QSO_BROAD`): rest EWs of the SDSS composite, one
      common factor (0.15 dex, the Baldwin-effect scatter) and 0.1 dex per line;
      FWHM ``fwhm_broad`` (log-uniform 2000-8000 km/s), profile a core plus a
      25 % wing three times as wide; high-ionisation lines 20 % broader and
      blueshifted by 0-1500 km/s (C IV; half that for the others).
    * Narrow lines ([O III], [O II], [Ne III], [Ne V]): FWHM 250-900 km/s,
      [O III] EW log-normal around 13 Å (0.3 dex).
    * Lyα forest (``forest``): random absorbers (:func:`_draw_absorbers`)
      between the Lyman limit of the grid and the quasar, Lyα-Lyδ lines and the
      Lyman continuum; the forest columns are then rescaled in redshift slices of
      0.1 so that the mean Lyα transmission equals exp(-τ_eff(z)) of
      Faucher-Giguère et al. (2008). Lyman-limit systems (log N 17.2-19) get
      Voigt damping wings and are not rescaled.

    Limits: no Fe II pseudo-continuum (no template at hand) nor host galaxy
    light, no broad absorption lines or associated absorbers, no proximity
    effect, no dust reddening, no hot-dust rise beyond 1 µm; line shapes are
    simple. ``fwhm_rest`` is one pixel.
    """
    wave = log_grid(QSO_RANGE[0], QSO_RANGE[1], QSO_DLOG10)
    pix_kms = _pixel_kms(QSO_DLOG10)
    alpha = float(rng.normal(-0.5, 0.3)) if alpha_nu is None else float(alpha_nu)
    if fwhm_broad is None:
        fwhm_broad = 10.0 ** rng.uniform(np.log10(2000.0), np.log10(8000.0))
    fwhm = float(fwhm_broad)
    fwhm_narrow = float(10.0 ** rng.uniform(np.log10(250.0), np.log10(900.0)))
    civ_shift = float(rng.uniform(0.0, 1500.0))
    baldwin = 10.0 ** rng.normal(0.0, 0.15)
    bc_fraction = float(rng.uniform(0.1, 0.4))

    # Broken power law: f_λ ∝ λ^index between 1000 and 5000 Å, continuous at the breaks.
    index = -(2.0 + alpha)
    ln_wave = np.log(wave)
    log_f = index * ln_wave
    blue, red = wave < 1000.0, wave > 5000.0
    log_f[blue] = index * np.log(1000.0) + (index + 1.0) * (ln_wave[blue] - np.log(1000.0))
    log_f[red] = index * np.log(5000.0) + (index + 0.5) * (ln_wave[red] - np.log(5000.0))
    continuum = np.exp(log_f - log_f[np.searchsorted(wave, 3000.0)])
    edge = 3646.0
    balmer = np.where(wave < edge, planck_lambda(wave, 15000.0) * -np.expm1(-((wave / edge) ** 3)), 0.0)
    balmer *= bc_fraction * np.interp(edge, wave, continuum) / np.interp(edge - 1.0, wave, balmer)
    # The Balmer continuum lives below the edge: blur only that part of the grid.
    part = wave < 2.0 * edge
    continuum[part] += _blur_fft(balmer[part], fwhm / FWHM_PER_SIGMA / pix_kms)

    emission = np.zeros_like(wave)
    widths = {}
    for name, (ew, high) in _QSO_BROAD.items():
        center = L.get(name).wave_vac
        shift = -civ_shift * (1.0 if name == "CIV_1549" else 0.5) if high else 0.0
        center *= 1.0 + shift / C_KMS
        line_fwhm = fwhm * (1.2 if high else 1.0)
        sigma = center * line_fwhm / C_KMS / FWHM_PER_SIGMA
        flux = ew * baldwin * 10.0 ** rng.normal(0.0, 0.1) * np.interp(center, wave, continuum)
        emission += flux * (0.75 * _gauss(wave, center, sigma) + 0.25 * _gauss(wave, center, 3.0 * sigma))
        widths[name] = line_fwhm
    o3_scale = 10.0 ** rng.normal(0.0, 0.3)
    for name, ew in _QSO_NARROW.items():
        center = L.get(name).wave_vac
        sigma = center * fwhm_narrow / C_KMS / FWHM_PER_SIGMA
        boost = o3_scale if name.startswith("OIII") else 1.0
        emission += ew * boost * np.interp(center, wave, continuum) * _gauss(wave, center, sigma)
    flux = continuum + emission

    meta = {
        "class": "QSO",
        "subclass": "BROADLINE",
        "alpha_nu": alpha,
        "fwhm_broad_kms": fwhm,
        "fwhm_civ_kms": float(widths["CIV_1549"]),
        "fwhm_narrow_kms": fwhm_narrow,
        "civ_blueshift_kms": civ_shift,
        "balmer_continuum_fraction": bc_fraction,
        "ew_scale": float(baldwin),
        "template": "spectok quasar model (power law + lines + forest)",
    }
    if forest:
        z_lo = max(wave[0] * (1 + z) / _LYMAN[0][0] - 1.0, 0.0)
        (z_f, n_f, b_f), (z_l, n_l, b_l) = _draw_absorbers(rng, z_lo, z)
        # Calibrate the forest columns slice by slice on the Lyα-only optical depth.
        tau_lls_lya = _lyman_tau(wave, z, z_l, n_l, b_l, series=1, voigt=True)
        tau_forest_lya = np.zeros_like(wave)
        slices = np.arange(z_lo, z + 0.1, 0.1)
        z_pixel = wave * (1 + z) / _LYMAN[0][0] - 1.0
        for lo, hi in zip(slices[:-1], slices[1:]):
            members = (z_f >= lo) & (z_f < hi)
            pixels = (z_pixel >= lo) & (z_pixel < min(hi, z))
            if not members.any() or pixels.sum() < 10:
                continue
            tau_slice = _lyman_tau(wave[pixels], z, z_f[members], n_f[members], b_f[members], series=1)
            target = np.exp(-tau_eff_lya(0.5 * (lo + min(hi, z))))
            low, high = 0.0, 1.0
            while np.mean(np.exp(-tau_lls_lya[pixels] - high * tau_slice)) > target and high < 1e4:
                high *= 2.0
            for _ in range(30):
                mid = 0.5 * (low + high)
                if np.mean(np.exp(-tau_lls_lya[pixels] - mid * tau_slice)) > target:
                    low = mid
                else:
                    high = mid
            n_f[members] *= 0.5 * (low + high)
            tau_forest_lya[pixels] += 0.5 * (low + high) * tau_slice
        tau = (
            _lyman_tau(wave, z, z_f, n_f, b_f)
            + _lyman_tau(wave, z, z_l, n_l, b_l, voigt=True)
            + _lyman_limit_tau(wave, z, np.concatenate([z_f, z_l]), np.concatenate([n_f, n_l]))
        )
        flux = flux * np.exp(-np.minimum(tau, 700.0))
        meta.update({"n_forest_absorbers": int(z_f.size), "n_lls": int(z_l.size),
                     "tau_eff_lya_at_z": float(tau_eff_lya(z))})
    return SimSource(
        object_id=object_id or _object_id("qso", rng),
        wave_rest=wave,
        flux=flux,
        fwhm_rest=wave * np.log(10.0) * QSO_DLOG10,
        z=float(z),
        meta=meta,
    )
